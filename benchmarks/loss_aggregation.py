"""How much the loss aggregation of DLER's released run (verl, "token-mean" per micro-batch) differs from TRL 1.16's
`loss_type="dapo"` (token sum over the global token count), token by token and sequence by sequence.

Both losses are a weighted sum of per-token terms, sum_i sum_t w_i * l_{i,t}; only the weights differ.

* TRL 1.16 `dapo`: every response token of the optimizer update gets the same weight, 1 / (response tokens of the
  update, all ranks, all accumulation steps).
* verl (DLER's patched copy, `verl/workers/actor/dp_actor.py` `update_policy` and `verl/trainer/ppo/core_algos.py`
  `agg_loss`): each rank holds B = update sequences / ranks sequences of the update and splits them into
  micro-batches; a micro-batch's loss is the mean over its own response tokens (`masked_mean`), scaled by its share
  of the rank's sequences (`n_m / B`; with fixed micro-batches that is `1 / gradient_accumulation`), and FSDP
  averages the gradients over the ranks. A token in micro-batch m therefore weighs (1 / R) * (n_m / B) / T_m, where
  T_m is the number of response tokens in m. Relative to TRL that is (mean response length of the update) /
  (mean response length of micro-batch m): tokens that share a micro-batch with long responses weigh less.

DLER's released launch script (NVlabs/DLER `dler_slurm.sh`: 8 nodes x 8 GPUs) turns on dynamic batch sizing
(`use_dynamic_bsz=True`, `ppo_max_token_len_per_gpu=32768`), so the run has no fixed `ppo_micro_batch_size_per_gpu`:
each rank cuts its share of the update into k = ceil(prompt + response tokens / 32768) micro-batches (the largest k
over all ranks, so every rank runs the same number) whose token sums are balanced with the largest differencing
(Karmarkar-Karp) method. Before that, verl's `trainer.balance_batch` (on by default) deals the whole training batch
(512 prompts x 16 rollouts) to the ranks so that every rank gets the same number of sequences and about the same
total tokens; each rank then walks its share in index order, 64 x 16 / 64 = 16 sequences per optimizer update.
The script simulates that layout (`dler_update_layout`); `--micro-batch-size N` models fixed micro-batches instead.

TRL 1.16 note: `dapo` divides by `num_items_in_batch`, counted over the whole *generation* batch and rescaled by
steps_per_generation / gradient_accumulation_steps, so within one generation batch every token weighs the same and
an update's weights sum to (its tokens) / (mean tokens per update), about but not exactly 1. `trl_dapo_token_weights`
uses the per-update form (sum exactly 1); the script prints how far the generation-batch form moves the sum.

Run: python benchmarks/loss_aggregation.py [--seed S] [--length-model early|late|both]
Pure numpy; a run takes well under 10 s.
"""

from __future__ import annotations

import argparse
import heapq
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

CAP = 4000  # DLER's max_response_length = truncation budget


# ----------------------------------------------------------------------------------------------------- weights


def _as_lengths(lengths: Sequence[int] | np.ndarray) -> np.ndarray:
    arr = np.asarray(lengths)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError("lengths must be a non-empty 1-D sequence of response lengths")
    if not np.all(arr == np.round(arr)) or np.any(arr < 1):
        raise ValueError("response lengths must be positive integers (a response holds at least its EOS token)")
    return arr.astype(np.int64)


def _per_rank(n: int, num_ranks: int) -> int:
    if num_ranks < 1 or n % num_ranks:
        raise ValueError(f"{n} sequences cannot be split evenly over {num_ranks} ranks")
    return n // num_ranks


def weights_from_micro_batches(lengths, num_ranks: int, micro_batch_ids) -> np.ndarray:
    """Per-token weight of each sequence under verl's token-mean aggregation, for any micro-batch assignment.

    `lengths` is in rank-major layout: rank r holds `lengths[r*B:(r+1)*B]` (B = len / num_ranks).
    `micro_batch_ids[i]` names the micro-batch of sequence i within its rank (any labels; the same label on two
    ranks names two micro-batches). Weight of a token in micro-batch m: (1 / R) * (n_m / B) / T_m.
    """
    lengths = _as_lengths(lengths)
    ids = np.asarray(micro_batch_ids)
    if ids.shape != lengths.shape:
        raise ValueError("micro_batch_ids must have one entry per sequence")
    per_rank = _per_rank(lengths.size, num_ranks)
    rank = np.arange(lengths.size) // per_rank
    _, group = np.unique(np.stack([rank, ids]), axis=1, return_inverse=True)
    group = group.ravel()
    count = np.bincount(group)
    tokens = np.bincount(group, weights=lengths)
    return (count[group] / per_rank) / tokens[group] / num_ranks


def verl_token_weights(lengths, num_ranks: int, micro_batch_size: int) -> np.ndarray:
    """verl `token-mean` with fixed micro-batches (`use_dynamic_bsz=False`).

    Returns one weight per sequence: the weight that every response token of that sequence carries (all tokens of
    a sequence share a micro-batch, so they share a weight); `(lengths * w).sum() == 1`.

    Layout assumed: the update's sequences in rank-major order, rank r holding the contiguous block
    `lengths[r*B:(r+1)*B]`, B = len(lengths) / num_ranks; within a rank, micro-batch j is the contiguous chunk
    `[j*micro_batch_size:(j+1)*micro_batch_size]` (`DataProto.split`). B must be a multiple of micro_batch_size
    (verl scales each micro-batch by 1 / (B // micro_batch_size), so a ragged last chunk would not sum to 1).
    """
    lengths = _as_lengths(lengths)
    per_rank = _per_rank(lengths.size, num_ranks)
    if micro_batch_size < 1 or per_rank % micro_batch_size:
        raise ValueError(f"{per_rank} sequences per rank is not a multiple of micro_batch_size={micro_batch_size}")
    ids = (np.arange(lengths.size) % per_rank) // micro_batch_size
    return weights_from_micro_batches(lengths, num_ranks, ids)


def trl_dapo_token_weights(lengths) -> np.ndarray:
    """TRL 1.16 `loss_type="dapo"`: every token of the update weighs 1 / (response tokens of the update).

    One weight per sequence (shared by its tokens), `(lengths * w).sum() == 1`. Sequence order does not matter.
    """
    lengths = _as_lengths(lengths)
    return np.full(lengths.size, 1.0 / lengths.sum())


def _part_key(part: tuple[int, list]) -> tuple:
    total, items = part
    return total, len(items), items


class _State:
    """k parts, each (token sum, [(index, value), ...]), kept largest first; heap order = largest spread first."""

    __slots__ = ("parts", "spread", "top")

    def __init__(self, parts: list) -> None:
        self.parts = sorted(parts, key=_part_key, reverse=True)
        self.spread = self.parts[0][0] - self.parts[-1][0]
        self.top = _part_key(self.parts[0])

    def __lt__(self, other: _State) -> bool:
        if self.spread != other.spread:
            return self.spread > other.spread
        return self.top > other.top


def largest_differencing_partition(values, k: int, equal_size: bool = False) -> list[list[int]]:
    """k-way largest differencing (Karmarkar-Karp) partition of `values`, balancing the partition sums.

    The method verl uses (`get_seqlen_balanced_partitions`) to cut a rank's data into token-balanced micro-batches
    (`equal_size=False`) and to deal the training batch to ranks (`equal_size=True`: every part gets
    len(values) / k items). Ties are broken as verl does (part size, then contents). Returns k lists of indices,
    each sorted ascending.
    """
    vals = [int(v) for v in values]
    n = len(vals)
    if k < 1 or n < k:
        raise ValueError(f"cannot cut {n} items into {k} non-empty parts")
    if equal_size and n % k:
        raise ValueError(f"{n} items do not split into {k} equal parts")
    order = sorted(range(n), key=lambda i: (vals[i], i))
    heap: list[_State] = []
    if equal_size:
        for start in range(0, n, k):
            heapq.heappush(heap, _State([(vals[i], [(i, vals[i])]) for i in order[start : start + k]]))
    else:
        for i in order:
            heapq.heappush(heap, _State([(vals[i], [(i, vals[i])])] + [(0, []) for _ in range(k - 1)]))
    while len(heap) > 1:
        a = heapq.heappop(heap).parts
        b = heapq.heappop(heap).parts
        # largest part of one state with the smallest part of the other
        heapq.heappush(heap, _State([(a[j][0] + b[k - 1 - j][0], a[j][1] + b[k - 1 - j][1]) for j in range(k)]))
    if any(not items for _, items in heap[0].parts):
        raise ValueError("a part came out empty")
    return [sorted(i for i, _ in items) for _, items in heap[0].parts]


def verl_dynamic_micro_batches(lengths, num_ranks: int, max_token_len: int, prompt_lengths=None) -> np.ndarray:
    """Micro-batch id of each sequence under verl's dynamic batch sizing (`use_dynamic_bsz=True`).

    Same rank-major layout as `verl_token_weights`. Each rank's sequences are cut into
    k = max over ranks of min(B, ceil(sum(prompt + response tokens) / max_token_len)) micro-batches with balanced
    prompt + response token sums (`rearrange_micro_batches`: the budget counts the attention mask, prompt included).
    """
    lengths = _as_lengths(lengths)
    per_rank = _per_rank(lengths.size, num_ranks)
    prompts = np.zeros_like(lengths) if prompt_lengths is None else np.asarray(prompt_lengths, dtype=np.int64)
    if prompts.shape != lengths.shape or np.any(prompts < 0):
        raise ValueError("prompt_lengths must give one non-negative length per sequence")
    effective = (lengths + prompts).reshape(num_ranks, per_rank)
    if effective.max() > max_token_len:
        raise ValueError(f"a sequence of {effective.max()} tokens exceeds max_token_len={max_token_len}")
    k = int(max(min(per_rank, math.ceil(row.sum() / max_token_len)) for row in effective))
    ids = np.empty(lengths.size, dtype=np.int64)
    for r, row in enumerate(effective):
        for m, part in enumerate(largest_differencing_partition(row, k)):
            ids[r * per_rank + np.asarray(part)] = m
    return ids


def verl_dynamic_token_weights(lengths, num_ranks: int, max_token_len: int, prompt_lengths=None) -> np.ndarray:
    """verl `token-mean` with dynamic batch sizing, DLER's released setting (`ppo_max_token_len_per_gpu=32768`).

    One weight per sequence (shared by its tokens), `(lengths * w).sum() == 1`. Micro-batches as in
    `verl_dynamic_micro_batches`; each scaled by n_m / B (`loss_scale_factor` in `dp_actor.update_policy`).
    """
    ids = verl_dynamic_micro_batches(lengths, num_ranks, max_token_len, prompt_lengths)
    return weights_from_micro_batches(lengths, num_ranks, ids)


def dler_update_layout(effective_lengths, num_ranks: int, num_updates: int) -> list[np.ndarray]:
    """Which sequences of a training batch each optimizer update sees, in rank-major order, as verl lays them out.

    `trainer.balance_batch` deals the batch to the ranks with an equal-size largest differencing partition of the
    prompt + response lengths; rank r takes its part in index order and splits it into `num_updates` contiguous
    mini-batches. Update u is the u-th mini-batch of every rank, rank 0 first. Returns one index array per update.
    """
    n = len(effective_lengths)
    if n % (num_ranks * num_updates):
        raise ValueError(f"{n} sequences do not split into {num_ranks} ranks x {num_updates} updates")
    parts = largest_differencing_partition(effective_lengths, num_ranks, equal_size=True)
    mini = n // num_ranks // num_updates
    return [np.concatenate([np.asarray(p[u * mini : (u + 1) * mini]) for p in parts]) for u in range(num_updates)]


# ------------------------------------------------------------------------------------------------ length models


@dataclass(frozen=True)
class LengthModel:
    """Per prompt a log-median drawn around `median`; per rollout a lognormal around it; capped at CAP tokens."""

    name: str
    median: float
    prompt_sigma: float
    rollout_sigma: float
    why: str


LENGTH_MODELS = {
    "early": LengthModel(
        "early",
        4000.0,
        0.6,
        0.5,
        "R1-Distill-1.5B at the start of DLER training. The base model averages ~10.5k tokens on the evaluation "
        "sets (paper Table 1) and DeepScaleR problems are easier, so an uncapped lognormal with median 4000 "
        "(per-prompt spread 0.6, per-rollout 0.5 in log space) puts about half of the responses at the 4000 cap "
        "and spreads the rest long-tailed down to a few hundred tokens: mean ~3200.",
    ),
    "late": LengthModel(
        "late",
        2400.0,
        0.25,
        0.3,
        "Late in DLER training: mean ~2500 (the paper's final DLER-R1-1.5B averages 2466 tokens), narrower "
        "(per-prompt 0.25, per-rollout 0.3), about 10% still truncated at the cap.",
    ),
}


def draw_lengths(model: LengthModel, rng: np.random.Generator, prompts: int, group: int) -> np.ndarray:
    """Response lengths of `prompts` x `group` rollouts, prompt-major (rollouts of a prompt adjacent)."""
    centre = np.log(model.median) + model.prompt_sigma * rng.standard_normal(prompts)
    raw = np.exp(centre[:, None] + model.rollout_sigma * rng.standard_normal((prompts, group)))
    return np.clip(np.rint(raw), 32, CAP).astype(np.int64).ravel()


def draw_prompt_lengths(rng: np.random.Generator, prompts: int, group: int) -> np.ndarray:
    """Chat-templated DeepScaleR prompt lengths (median ~110 tokens, at most 1024), repeated for each rollout."""
    per_prompt = np.clip(np.rint(np.exp(np.log(110.0) + 0.4 * rng.standard_normal(prompts))), 30, 1024)
    return np.repeat(per_prompt.astype(np.int64), group)


# ----------------------------------------------------------------------------------------------------- analysis


def weighted_quantiles(values: np.ndarray, weights: np.ndarray, qs: Sequence[float]) -> list[float]:
    """Quantiles of `values` where each value counts `weights` times (lower quantile, no interpolation)."""
    order = np.argsort(values, kind="stable")
    v, cum = values[order], np.cumsum(weights[order], dtype=np.float64)
    return [float(v[min(np.searchsorted(cum, q * cum[-1], side="left"), v.size - 1)]) for q in qs]


QS = (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)
QNAMES = ("min", "p5", "p25", "median", "p75", "p95", "max")
BANDS = ((1, 1000, "< 1000"), (1000, 2000, "1000-1999"), (2000, 3000, "2000-2999"), (3000, CAP, f"3000-{CAP - 1}"))


@dataclass
class Result:
    lengths: np.ndarray  # pooled over updates
    ratio: np.ndarray  # verl / TRL per-token weight, per sequence
    w_verl: np.ndarray
    w_trl: np.ndarray
    update: np.ndarray  # update index of each pooled sequence
    long_ratio: list[float]  # per update: weight on responses longer than the update mean, verl / TRL
    micro_batches: list[int]  # per update: micro-batches per rank
    trl_update_sum: list[float]  # per update: TRL 1.16 total weight with the generation-batch normaliser


def simulate(model: LengthModel, args: argparse.Namespace, rng: np.random.Generator) -> Result:
    prompts = args.prompts_per_update * args.updates
    resp = draw_lengths(model, rng, prompts, args.group_size)
    prompt_len = draw_prompt_lengths(rng, prompts, args.group_size)
    effective = resp + prompt_len
    if args.layout == "balanced":
        updates = dler_update_layout(effective, args.ranks, args.updates)
    else:  # prompt-major, rank-major blocks, no balancing
        per_update = resp.size // args.updates
        updates = [np.arange(u * per_update, (u + 1) * per_update) for u in range(args.updates)]

    pooled: dict[str, list] = {k: [] for k in ("lengths", "ratio", "w_verl", "w_trl", "update")}
    long_ratio, micro_batches = [], []
    for u, idx in enumerate(updates):
        L = resp[idx]
        if args.micro_batch_size:
            wv = verl_token_weights(L, args.ranks, args.micro_batch_size)
            micro_batches.append(L.size // args.ranks // args.micro_batch_size)
        else:
            ids = verl_dynamic_micro_batches(L, args.ranks, args.max_token_len, prompt_len[idx])
            wv = weights_from_micro_batches(L, args.ranks, ids)
            micro_batches.append(int(ids.max()) + 1)
        wt = trl_dapo_token_weights(L)
        long = L > L.mean()
        long_ratio.append(float((L[long] * wv[long]).sum() / (L[long] * wt[long]).sum()))
        for key, val in (("lengths", L), ("ratio", wv / wt), ("w_verl", wv), ("w_trl", wt)):
            pooled[key].append(val)
        pooled["update"].append(np.full(L.size, u))

    # TRL 1.16 shuffles the generation batch, splits it into steps and divides by its token count / #updates.
    shuffled = resp[rng.permutation(resp.size)].reshape(args.updates, -1)
    trl_update_sum = list(shuffled.sum(axis=1) / (resp.sum() / args.updates))
    cat = {k: np.concatenate(v) for k, v in pooled.items()}
    return Result(**cat, long_ratio=long_ratio, micro_batches=micro_batches, trl_update_sum=trl_update_sum)


def fmt_quantiles(values: np.ndarray, weights: np.ndarray) -> str:
    return "  ".join(f"{n} {q:.3f}" for n, q in zip(QNAMES, weighted_quantiles(values, weights, QS), strict=True))


def report(model: LengthModel, res: Result, args: argparse.Namespace) -> None:
    L, ratio = res.lengths, res.ratio
    n_upd = args.updates
    print(f"\n=== length model '{model.name}' ===")
    print(f"  {model.why}")
    trunc = (L == CAP).mean()
    print(
        f"  drawn: {L.size} responses ({n_upd} updates x {L.size // n_upd}); mean {L.mean():.0f}, median "
        f"{np.median(L):.0f}, p10 {np.percentile(L, 10):.0f}, truncated at {CAP}: {trunc:.1%}"
    )
    mb = sorted(set(res.micro_batches))
    print(f"  micro-batches per rank per update: {', '.join(map(str, mb))}")

    print("  per-token weight ratio verl / TRL (each token counts once, pooled over the updates):")
    print(f"    {fmt_quantiles(ratio, L.astype(float))}")
    off = np.abs(ratio - 1.0) > 0.10
    print(f"    tokens whose weight differs by more than 10%: {L[off].sum() / L.sum():.1%}")
    lr = np.asarray(res.long_ratio)
    print(
        f"  total weight on responses longer than the update mean, verl / TRL: {lr.mean():.3f} "
        f"(updates: {lr.min():.3f}-{lr.max():.3f})"
    )

    print("  per-sequence view (sequence weight = sum over its tokens; ratio verl / TRL, each sequence counts once):")
    print(f"    {fmt_quantiles(ratio, np.ones_like(ratio))}")
    print(f"    sequences whose total weight differs by more than 10%: {off.mean():.1%}")
    seq_v, seq_t = L * res.w_verl, L * res.w_trl  # each update sums to 1 under both
    print("    length band       share of seqs   TRL weight   verl weight   verl/TRL")
    bands = [(lo, hi, name) for lo, hi, name in BANDS] + [(CAP, CAP + 1, f"= {CAP} (truncated)")]
    for lo, hi, name in bands:
        sel = (L >= lo) & (L < hi)
        if not sel.any():
            continue
        tv, tt = seq_v[sel].sum() / n_upd, seq_t[sel].sum() / n_upd
        print(f"    {name:<18} {sel.mean():>12.1%}   {tt:>10.1%}   {tv:>11.1%}   {tv / tt:>8.3f}")
    q1, q4 = L <= np.percentile(L, 25), L >= np.percentile(L, 75)
    print(
        f"    mean ratio, shortest quarter of responses {ratio[q1].mean():.3f}, longest quarter {ratio[q4].mean():.3f}"
    )
    s = np.asarray(res.trl_update_sum)
    print(
        f"  TRL 1.16 as run (normaliser = generation-batch tokens / {n_upd}): an update's weights sum to "
        f"{s.min():.3f}-{s.max():.3f} instead of 1"
    )


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--length-model", choices=["early", "late", "both"], default="both")
    p.add_argument("--ranks", type=int, default=64, help="data-parallel ranks (DLER: 8 nodes x 8 GPUs)")
    p.add_argument("--prompts-per-update", type=int, default=64, help="ppo_mini_batch_size in prompts")
    p.add_argument("--group-size", type=int, default=16, help="rollouts per prompt")
    p.add_argument("--updates", type=int, default=8, help="optimizer updates per training batch (512 / 64)")
    p.add_argument("--max-token-len", type=int, default=32768, help="ppo_max_token_len_per_gpu (dynamic bsz)")
    p.add_argument(
        "--micro-batch-size",
        type=int,
        default=0,
        help="fixed ppo_micro_batch_size_per_gpu instead of dynamic batch sizing (0 = dynamic, DLER's setting)",
    )
    p.add_argument(
        "--layout",
        choices=["balanced", "contiguous"],
        default="balanced",
        help="balanced: verl's balance_batch (default on); contiguous: prompt-major blocks per rank",
    )
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    mode = (
        f"fixed micro-batches of {args.micro_batch_size}"
        if args.micro_batch_size
        else f"dynamic batch sizing, ppo_max_token_len_per_gpu={args.max_token_len}"
    )
    per_update = args.prompts_per_update * args.group_size
    print(
        f"verl token-mean per micro-batch vs TRL 1.16 dapo; {args.ranks} ranks, {per_update} sequences per update "
        f"({per_update // args.ranks} per rank), {mode}, layout={args.layout}, seed={args.seed}"
    )
    names = ["early", "late"] if args.length_model == "both" else [args.length_model]
    for name in names:
        rng = np.random.default_rng([args.seed, list(LENGTH_MODELS).index(name)])
        model = LENGTH_MODELS[name]
        report(model, simulate(model, args, rng), args)
    print(f"\n({time.perf_counter() - start:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
