"""Update-selective merging (DLER paper, Sec. 4.6): keep only the largest updates of a tuned model.

With `delta = theta_tuned - theta_base`, the parameters whose |delta| is among the largest `top_fraction` get
`theta_base + scale * delta`; every other parameter keeps the base's value. The paper keeps the top 25% and scales
by 0.7 (Table 2: Llama-3.1-Nemotron-Nano-8B, AIME-24 63.54 -> 66.66 while keeping most of the shortening); it does not
say whether the top fraction is taken over the whole model (`selection="global"`, its wording, the default) or per
tensor (`"tensor"`).

Checkpoints are streamed: safetensors shards are read (memory-mapped) and written one at a time. The global
threshold is found exactly without holding two models: |delta| is a non-negative float32, whose bit pattern sorts
like its value, so one pass counts the top 16 bits of every |delta| (65,536 buckets), a second pass counts the low
16 bits inside the bucket that holds the k-th largest value, and a third pass writes. Updates are computed in
float32 and stored back in each tensor's own dtype. Ties at the threshold are all kept (the report gives the exact
fraction kept). Tensors that are not floating point keep the base's value.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from pathlib import Path

import torch

from dler.merge_files import (
    DTYPE_BYTES,
    AdapterCheckpoint,
    Checkpoint,
    MergeError,
    copy_model_files,
    open_tuned,
    resolve,
    write_safetensors,
)

REPORT = "merge_report.json"
SELECTIONS = ("global", "tensor")
CHUNK = 1 << 24  # elements per slice when scanning a tensor (64 MiB of float32)


# ---------------------------------------------------------------- the rule, on tensors
def keep_mask(magnitude: torch.Tensor, threshold: float, ties: int) -> torch.Tensor:
    """Which updates to keep: every |delta| above `threshold`, and the first `ties` equal to it (in flat order), so
    that exactly the top k are kept even when low-precision weights make many updates equal."""
    equal = magnitude == threshold
    return (magnitude > threshold) | (equal & (torch.cumsum(equal.reshape(-1), 0) <= ties).view_as(equal))


def merged_tensor(base: torch.Tensor, tuned: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    """`base + scale * delta` where `keep`, else `base`; computed in float32, returned in base's dtype."""
    delta = tuned.float() - base.float()
    return torch.where(keep, base.float() + scale * delta, base.float()).to(base.dtype)


def kth_largest(values: torch.Tensor, k: int) -> float:
    """The k-th largest of `values` (1 <= k <= numel), in float32."""
    flat = values.float().flatten()
    return float(torch.kthvalue(flat, flat.numel() - k + 1).values)


def tensor_cut(magnitude: torch.Tensor, k: int) -> tuple[float, int]:
    """The threshold, and how many updates equal to it to keep, so that exactly the k largest are kept."""
    threshold = kth_largest(magnitude, k)
    return threshold, k - int((magnitude > threshold).sum())


def merge_streamed(base: torch.Tensor, tuned: torch.Tensor, threshold: float, ties: int, scale: float):
    """The merged tensor, slice by slice (float32 temporaries of CHUNK elements at most), and how many updates it
    kept."""
    out = torch.empty_like(base)
    flat_out, flat_b, flat_t = out.view(-1), base.reshape(-1), tuned.reshape(-1)
    kept = 0
    for start in range(0, flat_b.numel(), CHUNK):
        b, t = flat_b[start : start + CHUNK], flat_t[start : start + CHUNK]
        magnitude = (t.float() - b.float()).abs()
        keep = keep_mask(magnitude, threshold, ties)
        ties -= int((keep & (magnitude == threshold)).sum())
        kept += int(keep.sum())
        flat_out[start : start + CHUNK] = merged_tensor(b, t, keep, scale)
    return out, kept


def merge_state_dicts(
    base: dict[str, torch.Tensor],
    tuned: dict[str, torch.Tensor],
    top_fraction: float = 0.25,
    scale: float = 0.7,
    selection: str = "global",
) -> dict[str, torch.Tensor]:
    """The merge of two state dicts in memory (the reference the streamed merge is tested against). Exactly
    `ceil(top_fraction * count)` updates are kept; ties at the threshold go to tensors in name order, then flat
    index."""
    check_settings(top_fraction, scale, selection)
    check_tensors(
        {k: (tuple(v.shape), v.dtype) for k, v in base.items()},
        {k: (tuple(v.shape), v.dtype) for k, v in tuned.items()},
    )
    floats = sorted(name for name, t in base.items() if t.is_floating_point())
    magnitudes = {n: (tuned[n].float() - base[n].float()).abs() for n in floats}
    masks = {}
    if selection == "global":
        everything = torch.cat([magnitudes[n].flatten() for n in floats])
        threshold, ties = tensor_cut(everything, _k(top_fraction, everything.numel()))
        for n in floats:
            masks[n] = keep_mask(magnitudes[n], threshold, ties)
            ties -= int((masks[n] & (magnitudes[n] == threshold)).sum())
    else:
        for n in floats:
            masks[n] = keep_mask(magnitudes[n], *tensor_cut(magnitudes[n], _k(top_fraction, base[n].numel())))
    return {
        name: merged_tensor(t, tuned[name], masks[name], scale) if name in masks else t.clone()
        for name, t in base.items()
    }


def _k(top_fraction: float, count: int) -> int:
    return max(1, math.ceil(top_fraction * count)) if count else 0


def check_settings(top_fraction: float, scale: float, selection: str) -> None:
    if not 0.0 < top_fraction <= 1.0:
        raise MergeError(f"--top-fraction must be in (0, 1], got {top_fraction} (the paper keeps 0.25)")
    if not math.isfinite(scale):
        raise MergeError(f"--scale must be a finite number, got {scale} (the paper uses 0.7)")
    if selection not in SELECTIONS:
        raise MergeError(f"--selection must be one of {list(SELECTIONS)}, got {selection!r}")


def check_tensors(base: dict[str, tuple], tuned: dict[str, tuple]) -> None:
    """Both models hold the same tensors with the same shapes (name -> (shape, dtype))."""
    missing, extra = sorted(set(base) - set(tuned)), sorted(set(tuned) - set(base))
    if missing or extra:
        raise MergeError(
            "the models hold different tensors: "
            + "; ".join(
                part
                for part in (
                    f"missing from the tuned model: {missing[:5]}{' ...' if len(missing) > 5 else ''}"
                    if missing
                    else "",
                    f"only in the tuned model: {extra[:5]}{' ...' if len(extra) > 5 else ''}" if extra else "",
                )
                if part
            )
            + ". Merge a model with its own fine-tune."
        )
    shapes = [f"{n}: {base[n][0]} vs {tuned[n][0]}" for n in sorted(base) if base[n][0] != tuned[n][0]]
    if shapes:
        raise MergeError(f"tensor shapes differ ({'; '.join(shapes[:5])}). Merge a model with its own fine-tune.")


# ---------------------------------------------------------------- checkpoints, streamed
def _magnitudes(base: Checkpoint, tuned: Checkpoint, names: list[str]):
    """(name, |delta| in float32 for a slice of at most CHUNK elements) for every tensor of `names`, in name order
    (the order ties are broken in), one tensor in memory at a time."""
    for name in sorted(names):
        flat_b, flat_t = base.tensor(name).reshape(-1), tuned.tensor(name).reshape(-1)
        for start in range(0, flat_b.numel(), CHUNK):
            yield name, (flat_t[start : start + CHUNK].float() - flat_b[start : start + CHUNK].float()).abs()


def global_cut(base: Checkpoint, tuned: Checkpoint, names: list[str], k: int) -> tuple[float, dict[str, int]]:
    """The exact k-th largest |delta| over `names`, and how many updates equal to it each tensor keeps, so that
    exactly k are kept (ties go to tensors in name order, then flat index). Three streamed passes: the top 16 bits
    of every |delta|'s float32 bit pattern (which sorts like the value), the low 16 bits inside the bucket holding
    the k-th largest, then the ties per tensor."""
    high = torch.zeros(1 << 16, dtype=torch.int64)
    for _, magnitude in _magnitudes(base, tuned, names):
        high += torch.bincount((magnitude.view(torch.int32) >> 16).long(), minlength=1 << 16)
    above = torch.cumsum(high.flip(0), 0).flip(0)  # values in this bucket or a higher one
    bucket = int((above >= k).nonzero().max())
    need = k - (int(above[bucket + 1]) if bucket + 1 < len(above) else 0)
    low = torch.zeros(1 << 16, dtype=torch.int64)
    for _, magnitude in _magnitudes(base, tuned, names):
        bits = magnitude.view(torch.int32)
        low += torch.bincount((bits[(bits >> 16) == bucket] & 0xFFFF).long(), minlength=1 << 16)
    low_above = torch.cumsum(low.flip(0), 0).flip(0)
    position = int((low_above >= need).nonzero().max())
    threshold = float(torch.tensor([(bucket << 16) | position], dtype=torch.int32).view(torch.float32))
    ties = need - (int(low_above[position + 1]) if position + 1 < len(low_above) else 0)
    per_tensor: dict[str, int] = dict.fromkeys(names, 0)
    for name, magnitude in _magnitudes(base, tuned, names):
        take = min(ties, int((magnitude == threshold).sum()))
        per_tensor[name] += take
        ties -= take
    return threshold, per_tensor


def merge_checkpoints(
    base: str | Path,
    tuned: str | Path,
    output: str | Path,
    top_fraction: float = 0.25,
    scale: float = 0.7,
    selection: str = "global",
    overwrite: bool = False,
) -> dict:
    """Merge two safetensors checkpoints into `output`, one tensor at a time; returns the merge report (also
    written as `merge_report.json`)."""
    check_settings(top_fraction, scale, selection)
    output = Path(output)
    if output.exists() and not overwrite:
        raise MergeError(f"--output {output} exists; choose another folder or pass --overwrite")
    base_ckpt = Checkpoint.open(resolve(str(base), "base"))
    tuned_ckpt = open_tuned(resolve(str(tuned), "tuned"), base_ckpt)
    architectures = base_ckpt.architectures(), tuned_ckpt.architectures()
    if all(architectures) and architectures[0] != architectures[1]:
        raise MergeError(f"architectures differ: base {architectures[0]}, tuned {architectures[1]}")
    check_tensors(base_ckpt.meta, tuned_ckpt.meta)
    floats = [n for n, (_, dtype) in tuned_ckpt.meta.items() if dtype in ("F16", "BF16", "F32", "F64")]
    sizes = {n: math.prod(tuned_ckpt.meta[n][0]) for n in floats}
    unknown = sorted({dtype for _, dtype in tuned_ckpt.meta.values()} - set(DTYPE_BYTES))
    if unknown:
        raise MergeError(f"tensor dtypes {unknown} are not supported")
    threshold, ties = None, {}
    if selection == "global":
        threshold, ties = global_cut(base_ckpt, tuned_ckpt, floats, _k(top_fraction, sum(sizes.values())))
    if output.exists():
        shutil.rmtree(output)
    output.mkdir(parents=True)
    kept: dict[str, int] = {}

    def produce(name: str) -> torch.Tensor:
        b = base_ckpt.tensor(name)
        if name not in sizes:  # not floating point: the base's value
            return b
        t = tuned_ckpt.tensor(name)
        if selection == "global":
            cut = threshold, ties[name]
        else:
            cut = tensor_cut((t.float() - b.float()).abs(), _k(top_fraction, sizes[name]))
        merged, kept[name] = merge_streamed(b, t, *cut, scale)
        return merged

    for file, names in tuned_ckpt.shards().items():
        write_safetensors(output / file, names, base_ckpt.meta, produce)
    # config, generation config, tokenizer, chat template, prompt and index: the tuned model's (an adapter's base's
    # first); never the tuned run's bookkeeping
    sources = [base_ckpt.path, tuned_ckpt.path] if isinstance(tuned_ckpt, AdapterCheckpoint) else [tuned_ckpt.path]
    copy_model_files(sources, output)
    report = _report(kept, sizes, threshold, top_fraction, scale, selection, base, tuned)
    (output / REPORT).write_text(json.dumps(report, indent=2))
    return report


def cell_name(top_fraction: float, scale: float) -> str:
    return f"top{top_fraction:g}-scale{scale:g}"


def merge_sweep(base, tuned, output, top_fractions, scales, selection="global", overwrite=False) -> list[dict]:
    """One merged model per (top fraction, scale) cell, in `output/top{f}-scale{s}`: the grid the paper's
    accuracy-length argument is drawn from. Settings are checked for every cell before any is written."""
    for fraction in top_fractions:
        for scale in scales:
            check_settings(fraction, scale, selection)
            cell = Path(output) / cell_name(fraction, scale)
            if cell.exists() and not overwrite:
                raise MergeError(f"{cell} exists; choose another --output or pass --overwrite")
    return [
        merge_checkpoints(base, tuned, Path(output) / cell_name(f, s), f, s, selection, overwrite)
        for f in top_fractions
        for s in scales
    ]


def _layer(name: str) -> str:
    """`model.layers.12.mlp.up_proj.weight` -> `model.layers.12`; other tensors keep their name."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[: i + 1])
    return name


def _report(kept, sizes, threshold, top_fraction, scale, selection, base, tuned) -> dict:
    total, total_kept = sum(sizes.values()), sum(kept.values())
    layers: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for name, count in kept.items():
        layers[_layer(name)][0] += count
        layers[_layer(name)][1] += sizes[name]
    return {
        "base": str(base),
        "tuned": str(tuned),
        "top_fraction": top_fraction,
        "scale": scale,
        "selection": selection,
        "threshold": threshold,  # global selection; per tensor, each has its own
        "parameters": total,
        "kept": total_kept,
        "fraction_kept": total_kept / total if total else 0.0,
        "kept_share_by_layer": {layer: k / total_kept if total_kept else 0.0 for layer, (k, _) in layers.items()},
        "fraction_kept_by_layer": {layer: k / n for layer, (k, n) in layers.items()},
    }
