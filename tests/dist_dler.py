"""Run under `torchrun --nproc_per_node 2`: DLER across two CPU ranks.

balance: rank 0's rollouts never score, so it keeps no group and rank 1 must hand over its surplus. Checks that
no rank hangs, both train on equal batches, and the advantages equal the single-process formula on the gathered
final batch. exhaust: no signal anywhere; unlimited: the same without a round limit. generating_less: adaptive first round, carry-over and skipping across ranks.
"""

import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(__file__))
from helpers import addition_dataset, alternating_if, even_length, tiny_config  # noqa: E402

from dler import DLERTrainer  # noqa: E402
from dler.advantages import compute_advantages  # noqa: E402
from dler.trainer import DynamicSamplingExhausted  # noqa: E402

G = 4


def rank_skewed(completions, completion_ids, **kwargs):
    if os.environ["RANK"] == "0":
        return [0.0] * len(completions)
    return even_length(completions, completion_ids)


def never_solved(completions, **kwargs):
    return [0.0] * len(completions)


def exhaust(model_dir, output_dir, rank):
    """No group ever has signal: every rank must stop at the same step, with the same counts."""
    args = tiny_config(output_dir, truncation_length=16, max_sampling_rounds=2)
    trainer = DLERTrainer(model=model_dir, reward_funcs=never_solved, args=args, train_dataset=addition_dataset())
    try:
        trainer.train()
        return {"rank": rank, "error": None}
    except DynamicSamplingExhausted as error:
        return {"rank": rank, "error": str(error), "step": trainer.state.global_step}


def unlimited(model_dir, output_dir, rank):
    """No signal anywhere and no round limit: every rank must stop at the same step once the rounds of one batch
    drew as many prompts as the training set holds (16: two rounds of 2 ranks x 4 prompts)."""
    args = tiny_config(output_dir, truncation_length=16, max_sampling_rounds=0)
    trainer = DLERTrainer(model=model_dir, reward_funcs=never_solved, args=args, train_dataset=addition_dataset(16))
    try:
        trainer.train()
        return {"rank": rank, "error": None}
    except DynamicSamplingExhausted as error:
        return {"rank": rank, "error": str(error), "step": trainer.state.global_step}


def generating_less(model_dir, output_dir, rank):
    """Adaptive first round, carry-over and skipping on two ranks: the bookkeeping must agree on both, and carried
    groups (whose rows live on the rank that generated them) must reach training."""
    args = tiny_config(
        output_dir,
        truncation_length=16,
        dynamic_sampling_metric="correctness",
        max_steps=8,
        save_strategy="steps",
        save_steps=8,
        adaptive_rounds=True,
        max_carry_age=2,
        skip_no_signal_prompts=True,
        skip_after=1,
    )
    reward = alternating_if(lambda a: a % 3 == 0)
    trainer = DLERTrainer(model=model_dir, reward_funcs=reward, args=args, train_dataset=addition_dataset(32))
    trainer.train()
    logs = [h for h in trainer.state.log_history if "dynamic_sampling/rounds" in h]
    carry = trainer.sampling.carry_state_dict()
    gathered = [None, None]
    bookkeeping = [(g["born"], g["round"], g["group"], g["owner"]) for g in carry]
    dist.all_gather_object(gathered, (bookkeeping, trainer.dler_state_dict()))
    return {
        "rank": rank,
        "same_bookkeeping": gathered[0] == gathered[1],
        "carried": sum(h["dynamic_sampling/carried_groups"] for h in logs),
        "moved": sum(h["dynamic_sampling/groups_moved"] for h in logs),
        "rounds": [h["dynamic_sampling/rounds"] for h in logs],
        "rows_held_by_owner_only": all((g["rows"] is not None) == (g["owner"] == rank) for g in carry),
        "carry_file": os.path.exists(os.path.join(output_dir, "checkpoint-8", f"dler_rank{rank}.pt")),
        "steps": trainer.state.global_step,
    }


def raises_on_rank_1(completions, **kwargs):
    if os.environ["RANK"] == "1":
        raise ArithmeticError("the grader broke on rank 1")
    return [0.0] * len(completions)


def main(model_dir, output_dir):
    rank = int(os.environ["RANK"])
    mode = os.environ.get("DLER_TEST_MODE")
    if mode == "raise":  # one rank's reward raises mid-round, while the other waits in a collective
        args = tiny_config(output_dir, truncation_length=16)
        DLERTrainer(
            model=model_dir, reward_funcs=raises_on_rank_1, args=args, train_dataset=addition_dataset()
        ).train()
        return
    if mode in ("exhaust", "unlimited", "generating_less"):
        run = {"exhaust": exhaust, "unlimited": unlimited, "generating_less": generating_less}[mode]
        result = run(model_dir, output_dir, rank)
        with open(os.path.join(output_dir, f"result-{rank}.json"), "w") as f:
            json.dump(result, f)
        return
    args = tiny_config(output_dir, truncation_length=16, max_steps=2)
    trainer = DLERTrainer(model=model_dir, reward_funcs=rank_skewed, args=args, train_dataset=addition_dataset())
    trainer.model.train()
    rows = [dict(trainer.train_dataset[rank * 4 + i]) for i in range(4)]
    out = trainer._generate_and_score_completions([dict(r) for r in rows for _ in range(G)])

    lengths = out["completion_mask"].sum(dim=1)
    last = out["completion_ids"].gather(1, (lengths - 1).unsqueeze(1)).squeeze(1)
    finished = torch.isin(last, torch.tensor(trainer.eos_token_ids))
    shaped = ((lengths % 2 == 0) & finished).float()  # every final group was generated (and scored) on rank 1
    gathered = [None, None]
    dist.all_gather_object(gathered, (shaped, lengths, out["advantages"]))
    shaped, lengths, advantages = (torch.cat([g[i] for g in gathered]) for i in range(3))
    reference = compute_advantages(shaped, G, "batch", lengths=lengths, weighting="token")
    metrics = trainer._metrics["train"]
    result = {
        "rank": rank,
        "batch": len(out["advantages"]),
        "moved": metrics["dynamic_sampling/groups_moved"][-1],
        "rounds": metrics["dynamic_sampling/rounds"][-1],
        "max_error": (advantages - reference).abs().max().item(),
        "num_items": out["num_items_in_batch"].item(),
        "global_tokens": lengths.sum().item(),
    }
    trainer.train()  # the whole loop, two optimizer steps, without a hang
    result["steps"] = trainer.state.global_step
    with open(os.path.join(output_dir, f"result-{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(*sys.argv[1:3])
