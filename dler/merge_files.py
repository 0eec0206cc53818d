"""The model folders a merge reads and writes: safetensors checkpoints (sharded or not) and PEFT LoRA adapters,
read one tensor at a time, and safetensors shards written tensor by tensor, so no whole model is ever in memory.
"""

from __future__ import annotations

import json
import math
import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open

from dler.prompts import PROMPT_FILE

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


# What a model folder holds besides its weights: config, generation config, tokenizer files, chat template, the
# prompt it was trained with (`dler_prompt.json`, so that `dler eval` poses problems as in training), model card,
# license and remote code. A training run's bookkeeping (dler.lock, dler_run.json, metrics.jsonl, trainer_state.json,
# training_args.bin, plots, checkpoint-N/) is not the merged model's and is never copied.
MODEL_FILES = {
    INDEX,
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
    "chat_template.json",
    PROMPT_FILE,
    "README.md",
}
MODEL_FILE_PATTERNS = ("*.tiktoken", "LICENSE*", "NOTICE*", "configuration_*.py", "modeling_*.py", "tokenization_*.py")
MODEL_FOLDERS = {"additional_chat_templates"}  # transformers' named chat templates


class MergeError(ValueError):
    """Inputs that cannot be merged: raised before anything is written."""


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
    """A local model folder, or a hub id downloaded (weights, config and tokenizer only; from the cache when
    HF_HUB_OFFLINE=1). A missing folder, an unknown id or an unreachable hub fails here, in seconds."""
    from dler.eval.model_id import model_problem

    path = Path(path_or_id).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise MergeError(f"--{what} {path_or_id} is a file; give a model folder or a hub id")
    problem = model_problem(path_or_id, f"--{what}", adapters=True)
    if problem:
        raise MergeError(problem)
    from huggingface_hub import snapshot_download

    return Path(
        snapshot_download(path_or_id, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja"])
    )


def write_safetensors(path: Path, names: list[str], meta: dict[str, tuple], produce) -> None:
    """A safetensors file written tensor by tensor: the header first (shapes and offsets are known in advance),
    then each tensor's bytes as `produce(name)` returns it, so that no more than one tensor is held at a time."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name in names:
        shape, dtype = meta[name]
        size = math.prod(shape) * DTYPE_BYTES[dtype]
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


def model_files(folder: Path) -> list[Path]:
    """The files and folders of `folder` that a model folder needs besides its weights (MODEL_FILES): what a merge
    copies from the tuned model, so that a training run's bookkeeping never passes for the merged model's."""
    return sorted(
        item
        for item in folder.iterdir()
        if (item.is_dir() and item.name in MODEL_FOLDERS)
        or (item.is_file() and (item.name in MODEL_FILES or any(item.match(p) for p in MODEL_FILE_PATTERNS)))
    )


def copy_model_files(sources: list[Path], output: Path) -> None:
    """The model files of each source folder into `output`, in order (a later source's file replaces an earlier
    one's)."""
    for folder in sources:
        for item in model_files(folder):
            if item.is_dir():
                shutil.copytree(item, output / item.name, dirs_exist_ok=True)
            else:
                shutil.copy2(item, output / item.name)
