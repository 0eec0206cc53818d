"""Peak memory and time of `dler merge` against the checkpoint's size, on synthetic sharded bf16 checkpoints.

Each size runs in a process of its own: the base and a tuned copy (base + small noise) are written as shards of
`--shard-mb` MiB, then merged with the paper's settings (global top 25%, scale 0.7). Peak memory is the process's
peak resident set above what it held before the merge (imports, the interpreter): the streamed merge must stay
below 1.5 shards plus a constant, whatever the number of shards.

    python benchmarks/merge.py [--shard-mb 100] [--shards 1,2,4]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_SHARDS, CONSTANT_MB = 1.5, 200


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(shards: int, shard_mb: int, folder: Path, selection: str) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch
    from safetensors.torch import save_file

    from dler.merge import merge_checkpoints

    per_tensor = 4 * 1024 * 1024  # bf16 elements: 8 MiB per tensor
    tensors = max(1, shard_mb * 1024 * 1024 // (2 * per_tensor))
    for name, noise in (("base", 0.0), ("tuned", 0.01)):
        weight_map = {}
        for s in range(shards):
            file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
            g = torch.Generator().manual_seed(s)
            part = {}
            for i in range(tensors):
                t = torch.randn(per_tensor, generator=g, dtype=torch.float32)
                if noise:
                    t += noise * torch.randn(per_tensor, dtype=torch.float32)
                part[f"model.layers.{s}.t{i}.weight"] = t.to(torch.bfloat16).view(2048, -1)
            save_file(part, folder / name / file) if (folder / name).exists() else (
                (folder / name).mkdir(parents=True),
                save_file(part, folder / name / file),
            )
            weight_map.update(dict.fromkeys(part, file))
            del part
        (folder / name / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    before = peak_mb()
    start = time.perf_counter()
    report = merge_checkpoints(folder / "base", folder / "tuned", folder / "out", 0.25, 0.7, selection)
    return {
        "shards": shards,
        "model_mb": shards * shard_mb,
        "seconds": time.perf_counter() - start,
        "peak_above_start_mb": max(0.0, peak_mb() - before),
        "fraction_kept": report["fraction_kept"],
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shard-mb", type=int, default=100)
    parser.add_argument("--shards", default="1,2,4")
    parser.add_argument("--selection", default="global", choices=["global", "tensor"])
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.shard_mb, Path(args.folder), args.selection)))
        return
    print(f"{'model MB':>9} {'shards':>6} {'seconds':>8} {'peak above start MB':>20} {'/ shard':>8} {'kept':>6}")
    ok = True
    for shards in map(int, args.shards.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            cmd = [sys.executable, __file__, "--worker", str(shards), "--shard-mb", str(args.shard_mb),
                   "--folder", folder, "--selection", args.selection]  # fmt: skip
            out = subprocess.run(
                cmd, capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
        ratio = r["peak_above_start_mb"] / args.shard_mb
        ok &= r["peak_above_start_mb"] <= TARGET_SHARDS * args.shard_mb + CONSTANT_MB
        print(f"{r['model_mb']:9d} {shards:6d} {r['seconds']:8.1f} {r['peak_above_start_mb']:20.0f} {ratio:8.2f} "
              f"{r['fraction_kept']:6.3f}")  # fmt: skip
    print(f"target: peak <= {TARGET_SHARDS} shards + {CONSTANT_MB} MB at every size: {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
