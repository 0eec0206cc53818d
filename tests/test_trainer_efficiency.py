"""Generating less on the tiny model: adaptive first round, carried groups, skipped prompts, their checkpoints.

Rewards decide signal by the prompt alone (`alternating_if`) and the filter reads raw correctness, so
which groups have signal is known whatever the model writes.
"""

import json
import statistics

import pytest
import torch
from helpers import addition_dataset, alternating_if, tiny_config
from trl import GRPOTrainer

from dler import DLERTrainer
from dler.round_sizing import later_round_prompts

pytestmark = pytest.mark.slow
G = 4
NEW_METRICS = ("first_round_prompts", "kept_fraction", "carried_groups", "group_age_max", "prompts_skipped")


def make_trainer(tmp_path, model_dir, reward, dataset=None, **overrides):
    settings = dict(truncation_length=16, dynamic_sampling_metric="correctness", **overrides)
    return DLERTrainer(
        model=model_dir,
        reward_funcs=reward,
        args=tiny_config(tmp_path, **settings),
        train_dataset=dataset if dataset is not None else addition_dataset(),
    )


def prompts(a_values, b=0):
    """A sampler batch (4 prompts x 4 rollouts) with the given `a` values."""
    rows = [{"prompt": [{"role": "user", "content": f"{a} + {b}"}], "answer": str(a + b), "a": a} for a in a_values]
    return [dict(r) for r in rows for _ in range(G)]


def step(trainer, a_values):
    trainer.model.train()
    return trainer._generate_and_score_completions(prompts(a_values))


def metric(trainer, name):
    return trainer._metrics["train"][f"dynamic_sampling/{name}"]


def completions(out):
    """Each row's completion tokens, padding removed."""
    return [
        tuple(ids[mask.bool()].tolist())
        for ids, mask in zip(out["completion_ids"], out["completion_mask"], strict=True)
    ]


def policy_logps(trainer, rows):
    """Per-token log-probs of each rollout in `rows` under the trainer's current policy, one forward per rollout."""
    out = []
    for prompt, completion in zip(rows["prompt_ids"], rows["completion_ids"], strict=True):
        ids = torch.tensor([list(prompt) + list(completion)])
        with torch.no_grad():
            logps, *_ = GRPOTrainer._get_per_token_logps_and_entropies(
                trainer, trainer.model, ids, torch.ones_like(ids), len(completion)
            )
        out.append(logps[0])
    return out


def test_surplus_groups_train_in_the_next_batch_with_their_age_and_logps(tmp_path, tiny_model_dir):
    mixed_only = addition_dataset().filter(lambda r: r["a"] >= 4)  # extra rounds keep every group
    trainer = make_trainer(tmp_path, tiny_model_dir, alternating_if(lambda a: a >= 4), mixed_only, max_carry_age=1)
    step(trainer, (0, 1, 2, 4))  # keeps 1 group, the extra round 4 more: one group left over
    assert metric(trainer, "carry_buffer")[-1] == 1.0 and metric(trainer, "carried_groups")[-1] == 0
    (carried,) = [c.item.rows for c in trainer.sampling.carry.items]
    generating = policy_logps(trainer, carried)  # the policy that generated it, by a separate forward
    for logps, expected in zip(carried["old_logps"], generating, strict=True):
        torch.testing.assert_close(logps, expected)
    with torch.no_grad():  # an optimizer update happens before the group trains
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert not torch.allclose(policy_logps(trainer, carried)[0], generating[0])

    out = step(trainer, (0, 1, 2, 3))  # keeps nothing fresh in round 1: the carried group + 3 of round 2
    assert metric(trainer, "carried_groups")[-1] == 1.0
    assert (metric(trainer, "group_age_max")[-1], metric(trainer, "group_age_mean")[-1]) == (1.0, 0.25)
    rows = completions(out)
    first = rows.index(tuple(carried["completion_ids"][0]))
    assert rows[first : first + G] == [tuple(ids) for ids in carried["completion_ids"]], "the carried group, whole"
    for j, logps in enumerate(carried["old_logps"]):  # trained against the policy that generated it
        torch.testing.assert_close(out["old_per_token_logps"][first + j, : len(logps)], logps)
    lengths = out["completion_mask"].sum(dim=1).double()  # whitened with the fresh groups: one batch, mean 0
    assert (out["advantages"].double() * lengths).sum().item() == pytest.approx(0.0, abs=1e-4)

    assert metric(trainer, "carry_buffer")[-1] == 1.0
    trainer.sampling.carry.items[0].born -= 1  # as if left over twice: 2 batches old at the next one
    step(trainer, (0, 1, 2, 3))  # round 2 keeps exactly the 4 groups needed: nothing left over this time
    assert metric(trainer, "carry_evicted")[-1] == 1.0 and metric(trainer, "carried_groups")[-1] == 0
    assert len(trainer.sampling.carry) == 0, "the evicted group is gone"


def test_adaptive_rounds_need_about_one_round_per_step(tmp_path, tiny_model_dir):
    reward = alternating_if(lambda a: a % 4 == 0)  # a in 0..7: a quarter of the prompts give signal
    trainer = make_trainer(tmp_path, tiny_model_dir, reward, adaptive_rounds=True, max_round_factor=8.0)
    for _ in range(6):
        step(trainer, (0, 1, 2, 3))
    rounds = metric(trainer, "rounds")
    assert statistics.fmean(rounds) <= 1.4, rounds
    assert metric(trainer, "first_round_prompts")[-1] > 16  # sized for a quarter kept: ~5x the sampler's 4
    assert 0.15 < metric(trainer, "kept_fraction")[-1] < 0.4


def test_first_step_sizes_its_later_rounds_from_its_first_round(tmp_path, tiny_model_dir):
    """The run's first step has no moving average: its first round is the sampler's 4 prompts and keeps 1 (a = 0).
    The second round is sized for the 3 missing groups at that 1/4 (20 prompts at one standard deviation), so
    the step needs 2 rounds. Later rounds of the sampler's size keep ~1 group each: that step needs 6 rounds."""
    reward = alternating_if(lambda a: a % 4 == 0)
    trainer = make_trainer(tmp_path, tiny_model_dir, reward, adaptive_rounds=True, max_round_factor=8.0)
    step(trainer, (0, 1, 2, 3))
    assert metric(trainer, "first_round_prompts") == [4.0], "no average yet: the sampler's batch"
    assert metric(trainer, "rounds") == [2], "the second round is sized from the first round's kept fraction"
    second = later_round_prompts(3, 4, 1, None, kept=1, generated=4, decay=0.8, max_factor=8.0, confidence=1.0)
    assert second == 20
    assert metric(trainer, "prompts_generated_per_kept") == [(4 + second) / 4]
    kept = metric(trainer, "groups_kept")[0]
    assert metric(trainer, "kept_fraction") == [pytest.approx(kept / (4 + second))], "the first step seeds it"

    paper = make_trainer(tmp_path / "paper", tiny_model_dir, reward)  # off: later rounds keep the sampler's 4
    step(paper, (0, 1, 2, 3))
    paper_rounds = metric(paper, "rounds")[0]
    assert paper_rounds >= 3, "the same step needs several rounds of the sampler's size"  # 6 with this seed
    assert metric(paper, "prompts_generated_per_kept") == [paper_rounds]


def test_prompts_without_signal_are_skipped_but_still_explored(tmp_path, tiny_model_dir):
    reward = alternating_if(lambda a: a % 2 == 0)  # odd a: never any signal
    trainer = make_trainer(
        tmp_path,
        tiny_model_dir,
        reward,
        addition_dataset(16),
        skip_no_signal_prompts=True,
        skip_after=1,
        skip_exploration=0.2,  # high enough to see exploration within 8 steps
    )
    for _ in range(8):
        step(trainer, (1, 3, 5, 7))  # the sampler's batch is not generated: prompts come from the stream
    kept, all_zero = metric(trainer, "groups_kept"), metric(trainer, "groups_all_zero")
    dataset = trainer._stream_dataset
    skippable = [k for k in trainer.sampling.skip.no_signal if trainer.sampling.skip.skippable(k)]
    assert skippable and all(dataset[k]["a"] % 2 == 1 for k in skippable)
    assert sum(metric(trainer, "prompts_skipped")) > 0
    late = sum(kept[2:]) / (sum(kept[2:]) + sum(all_zero[2:]))
    assert late > 0.75, f"skipping should leave mostly mixed groups, kept fraction {late}"  # 0.5 without skipping
    assert sum(all_zero[2:]) > 0, "skipped prompts are still drawn at the exploration floor"


def test_everything_off_logs_no_new_metrics(tmp_path, tiny_model_dir):
    trainer = make_trainer(tmp_path, tiny_model_dir, alternating_if(lambda a: a % 2 == 0))
    step(trainer, (0, 1, 2, 3))
    assert not [m for m in NEW_METRICS if metric(trainer, m)]
    assert trainer.dler_state_dict()["skip_history"] is None and len(trainer.sampling.carry) == 0


def test_checkpoint_holds_carry_buffer_and_skip_history_and_resume_continues(tmp_path, tiny_model_dir):
    kw = dict(
        max_steps=6,
        save_strategy="steps",
        save_steps=4,
        adaptive_rounds=True,
        max_carry_age=2,
        skip_no_signal_prompts=True,
        skip_after=1,
    )
    reward = alternating_if(lambda a: a % 3 == 0)
    first = make_trainer(tmp_path / "a", tiny_model_dir, reward, **kw)
    first.train()
    checkpoint = tmp_path / "a" / "checkpoint-4"
    saved = json.loads((checkpoint / "dler_state.json").read_text())
    carry = torch.load(checkpoint / "dler_rank0.pt", weights_only=True)
    assert saved["generations"] == 2 and saved["kept_fraction"] is not None and saved["skip_history"]["no_signal"]
    assert carry["carry"], "the test needs groups in the buffer at the checkpoint"
    final_state, final_carry = first.dler_state_dict(), first.sampling.carry_state_dict()
    history = [h for h in first.state.log_history if "loss" in h]

    resumed = make_trainer(tmp_path / "b", tiny_model_dir, reward, **kw)
    resumed.train(resume_from_checkpoint=str(checkpoint))
    assert resumed.dler_state_dict() == final_state
    assert repr(resumed.sampling.carry_state_dict()) == repr(final_carry)
    resumed_history = [h for h in resumed.state.log_history if "loss" in h]
    for key in ("dynamic_sampling/carried_groups", "dynamic_sampling/first_round_prompts", "dler/correctness"):
        assert [h.get(key) for h in resumed_history[-2:]] == [h.get(key) for h in history[-2:]], key
