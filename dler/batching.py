"""Tensor plumbing for dynamic sampling: cut rows out of TRL's padded batch dicts and join them again.

TRL's `_generate_and_score_completions` returns per-sample tensors padded to the widest sample of that call:
prompts on the left, completions on the right. Rows from several generation rounds (and from other ranks) have
different widths, so joining them means trimming and re-padding each key on its own side.
"""

from __future__ import annotations

import torch

LEFT_PADDED = ("prompt_ids", "prompt_mask")
RIGHT_PADDED = (
    "completion_ids",
    "completion_mask",
    "old_per_token_logps",
    "ref_per_token_logps",
    "sampling_per_token_logps",
    "importance_sampling_ratio",
    "tool_mask",
)
RECOMPUTED = ("advantages", "num_items_in_batch")  # derived again on the final batch


def check_keys(batch: dict) -> None:
    """Dynamic sampling moves text batches only; anything else (images, ...) fails clearly."""
    unknown = sorted(set(batch) - set(LEFT_PADDED) - set(RIGHT_PADDED) - set(RECOMPUTED))
    if unknown:
        raise ValueError(
            f"dynamic_sampling cannot re-batch the keys {unknown} (multimodal inputs are not supported). "
            "Set dynamic_sampling=False for this dataset."
        )


def pad_values(pad_token_id: int) -> dict[str, float]:
    return {"prompt_ids": pad_token_id, "completion_ids": pad_token_id, "tool_mask": 1}


def take_rows(batch: dict, rows: slice) -> dict[str, torch.Tensor]:
    """The per-sample tensors of `rows`, trimmed to the widest prompt and completion among them."""
    prompt_width = int(batch["prompt_mask"][rows].sum(dim=1).max())
    completion_width = int(batch["completion_mask"][rows].sum(dim=1).max())
    out = {}
    for key in LEFT_PADDED + RIGHT_PADDED:
        tensor = batch.get(key)
        if tensor is None:
            continue
        tensor = tensor[rows]
        if key in LEFT_PADDED:
            tensor = tensor[:, tensor.size(1) - prompt_width :]
        elif tensor.size(1) > 1 or key != "importance_sampling_ratio":  # sequence-level ratios are (B, 1)
            tensor = tensor[:, :completion_width]
        out[key] = tensor
    return out


def _pad_width(width: int, multiple: int | None) -> int:
    return width if not multiple else -(-width // multiple) * multiple


def concat_rows(parts: list[dict[str, torch.Tensor]], pad_token_id: int, pad_to_multiple_of: int | None = None):
    """Join row dicts from `take_rows`, padding prompts on the left and completions on the right."""
    values = pad_values(pad_token_id)
    out = {}
    for key in parts[0]:
        tensors = [part[key] for part in parts]
        width = _pad_width(max(t.size(1) for t in tensors), pad_to_multiple_of)
        if key == "importance_sampling_ratio" and all(t.size(1) == 1 for t in tensors):
            width = 1
        padded = []
        for t in tensors:
            fill = t.new_full((t.size(0), width - t.size(1)), values.get(key, 0))
            padded.append(torch.cat([fill, t] if key in LEFT_PADDED else [t, fill], dim=1))
        out[key] = torch.cat(padded, dim=0)
    return out
