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
import logging
import math
import os
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

logger = logging.getLogger(__name__)

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
REPORT = "merge_report.json"
SELECTIONS = ("global", "tensor")
CHUNK = 1 << 24  # elements per slice when scanning a tensor (64 MiB of float32)


class MergeError(ValueError):
    """Inputs that cannot be merged: raised before anything is written."""


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


# ---------------------------------------------------------------- checkpoints on disk
@dataclass
class Checkpoint:
    """A safetensors checkpoint folder: which file holds each tensor, its shape and dtype."""

    path: Path
    files: dict[str, str]  # tensor name -> file name
    meta: dict[str, tuple]  # tensor name -> (shape, dtype)

    @staticmethod
    def open(path: str | Path) -> Checkpoint:
        path = Path(path)
        if (path / INDEX).exists():
            files = json.loads((path / INDEX).read_text())["weight_map"]
        elif (path / SINGLE).exists():
            with safe_open(path / SINGLE, "pt") as f:
                files = dict.fromkeys(f.keys(), SINGLE)
        else:
            raise MergeError(f"{path} has neither {INDEX} nor {SINGLE}: not a safetensors model folder")
        meta = {}
        for name in sorted(set(files.values())):
            with safe_open(path / name, "pt") as f:
                for key in f.keys():
                    if files.get(key) == name:
                        view = f.get_slice(key)
                        meta[key] = (tuple(view.get_shape()), view.get_dtype())
        return Checkpoint(path, files, meta)

    def architectures(self) -> list[str] | None:
        config = self.path / "config.json"
        return json.loads(config.read_text()).get("architectures") if config.exists() else None

    def tensor(self, name: str) -> torch.Tensor:
        """One tensor, copied out of its file; the file is unmapped again at once, so reading a model one tensor at
        a time never keeps more than that tensor resident."""
        with safe_open(self.path / self.files[name], "pt") as f:
            return f.get_tensor(name)

    def shards(self) -> dict[str, list[str]]:
        """File name -> the tensors it holds, in file order."""
        out = defaultdict(list)
        for name, file in self.files.items():
            out[file].append(name)
        return dict(out)


class AdapterCheckpoint(Checkpoint):
    """A PEFT LoRA adapter read as the tuned model: each targeted weight is `base + (B @ A) * alpha / r` (rsLoRA:
    `alpha / sqrt(r)`), computed one tensor at a time; every other tensor is the base's."""

    def __init__(self, path: Path, base: Checkpoint):
        config = json.loads((path / "adapter_config.json").read_text())
        if config.get("peft_type", "LORA") != "LORA" or config.get("use_dora"):
            raise MergeError(
                f"--tuned {path}: only plain LoRA adapters can be merged (got {config.get('peft_type')}, "
                f"use_dora={config.get('use_dora')}); merge it into a full model with PEFT first"
            )
        if config.get("fan_in_fan_out"):
            raise MergeError(
                f"--tuned {path}: fan_in_fan_out adapters (Conv1D layers) are not supported; merge it "
                "into a full model with PEFT first"
            )
        if config.get("rank_pattern") or config.get("alpha_pattern"):
            raise MergeError(
                f"--tuned {path}: per-module ranks (rank_pattern/alpha_pattern) are not supported; "
                "merge it into a full model with PEFT first"
            )
        r, alpha = config["r"], config.get("lora_alpha", config["r"])
        self.scaling = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        weights = path / "adapter_model.safetensors"
        if not weights.exists():
            raise MergeError(f"--tuned {path}: no adapter_model.safetensors")
        self.lora: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
        with safe_open(weights, "pt") as f:
            for key in f.keys():
                module, _, kind = key.removeprefix("base_model.model.").rpartition(".lora_")
                if kind not in ("A.weight", "B.weight"):
                    raise MergeError(
                        f"--tuned {path}: adapter tensor {key} is not a LoRA A/B matrix (modules_to_save "
                        "is not supported); merge it into a full model with PEFT first"
                    )
                self.lora[f"{module}.weight"][kind[0]] = f.get_tensor(key)
        unknown = sorted(set(self.lora) - set(base.meta))
        if unknown:
            raise MergeError(f"--tuned {path}: the adapter targets weights the base does not have: {unknown[:5]}")
        super().__init__(path, base.files, base.meta)
        self.base = base

    def architectures(self) -> list[str] | None:
        return self.base.architectures()

    def tensor(self, name: str) -> torch.Tensor:
        weight = self.base.tensor(name)
        if name not in self.lora:
            return weight
        update = (self.lora[name]["B"].float() @ self.lora[name]["A"].float()) * self.scaling
        return (weight.float() + update).to(weight.dtype)


def open_tuned(path: Path, base: Checkpoint) -> Checkpoint:
    return AdapterCheckpoint(path, base) if (path / "adapter_config.json").exists() else Checkpoint.open(path)


def resolve(path_or_id: str, what: str) -> Path:
    """A local model folder, or a hub id downloaded (weights, config and tokenizer only)."""
    path = Path(path_or_id)
    if path.is_dir():
        return path
    if path.exists():
        raise MergeError(f"--{what} {path_or_id} is a file; give a model folder or a hub id")
    if os.environ.get("HF_HUB_OFFLINE") == "1" or path_or_id.count("/") != 1:
        raise MergeError(f"--{what} {path_or_id}: no such folder (and not a hub id that can be downloaded here)")
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(path_or_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    )


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


def write_safetensors(path: Path, names: list[str], meta: dict[str, tuple], produce) -> None:
    """A safetensors file written tensor by tensor: the header first (shapes and offsets are known in advance),
    then each tensor's bytes as `produce(name)` returns it, so that no more than one tensor is held at a time."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in names:
        shape, dtype = meta[name]
        size = math.prod(shape) * _BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name in names:
            tensor = produce(name).contiguous()
            f.write(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())


_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


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
    unknown = sorted({dtype for _, dtype in tuned_ckpt.meta.values()} - set(_BYTES))
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
    # config, generation config, tokenizer, chat template and index: the tuned model's (an adapter's base's first)
    sources = [base_ckpt.path, tuned_ckpt.path] if isinstance(tuned_ckpt, AdapterCheckpoint) else [tuned_ckpt.path]
    for folder in sources:
        for item in folder.iterdir():
            if item.is_file() and not item.name.endswith(".safetensors") and not item.name.startswith("adapter_"):
                shutil.copy2(item, output / item.name)
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
