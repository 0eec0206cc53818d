"""DLERTrainer end to end on the tiny offline model: each mechanism, and what happens when it is off."""

import json

import pytest
import torch
from helpers import addition_dataset, always_correct, even_length, even_length_if_a_large, tiny_config

from dler import DLERTrainer
from dler.advantages import compute_advantages
from dler.penalties import LengthPenalty
from dler.trainer import DynamicSamplingExhausted

pytestmark = pytest.mark.slow
G = 4


def make_trainer(tmp_path, model_dir, reward, penalty=None, **overrides):
    return DLERTrainer(
        model=model_dir,
        reward_funcs=reward,
        args=tiny_config(tmp_path, **overrides),
        train_dataset=addition_dataset(),
        penalty=penalty,
    )


def batch(trainer, a_values):
    """One generation batch (4 prompts x 4 rollouts) whose prompts have the given `a` values."""
    dataset = trainer.train_dataset
    rows = [next(dict(r) for r in dataset if r["a"] == a) for a in a_values]
    return [dict(r) for r in rows for _ in range(G)]


def generate(trainer, a_values=(4, 5, 6, 7)):
    trainer.model.train()
    return trainer._generate_and_score_completions(batch(trainer, a_values))


def lengths_and_finished(trainer, out):
    lengths = out["completion_mask"].sum(dim=1)
    last = out["completion_ids"].gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
    finished = torch.isin(last, torch.tensor(trainer.eos_token_ids))
    return lengths, finished


@pytest.mark.parametrize("normalization, weighting", [("batch", "token"), ("batch", "sequence"), ("group", "token")])
def test_truncation_shaping_and_advantages(tmp_path, tiny_model_dir, normalization, weighting):
    trainer = make_trainer(
        tmp_path,
        tiny_model_dir,
        always_correct,
        truncation_length=4,
        dynamic_sampling=False,
        advantage_normalization=normalization,
        advantage_weighting=weighting,
    )
    out = generate(trainer)
    lengths, finished = lengths_and_finished(trainer, out)
    shaped = ((lengths <= 4) & finished).float()  # every answer is correct; only the budget decides
    assert 0 < shaped.sum() < len(shaped), "the tiny model should produce both short and long answers"
    expected = compute_advantages(shaped, G, normalization, lengths=lengths, weighting=weighting)
    assert out["advantages"].tolist() == pytest.approx(expected.tolist(), abs=1e-5)
    # without shaping every group would be constant and every advantage 0
    assert out["advantages"][shaped == 1].min() > out["advantages"][shaped == 0].max()
    metrics = trainer._metrics["train"]
    assert metrics["dler/over_budget_frac"][-1] == pytest.approx(1 - shaped.mean().item())
    assert metrics["dler/correctness"][-1] == 1.0
    if normalization == "batch" and weighting == "token":  # whitened over the batch, one weight per token
        w = lengths.double()
        mean = (out["advantages"] * w).sum() / w.sum()
        assert mean.item() == pytest.approx(0.0, abs=1e-5)


def test_dynamic_sampling_refills_with_groups_that_have_signal(tmp_path, tiny_model_dir):
    trainer = make_trainer(tmp_path, tiny_model_dir, even_length_if_a_large, truncation_length=16)
    out = generate(trainer, a_values=(0, 1, 2, 3))  # never solved: the first round keeps nothing
    assert out["advantages"].shape == (16,) and out["completion_ids"].shape[0] == 16
    groups = out["advantages"].view(-1, G)
    assert (groups.max(dim=1).values - groups.min(dim=1).values > 1e-6).all(), "a kept group has no signal"
    metrics = trainer._metrics["train"]
    assert metrics["dynamic_sampling/rounds"][-1] >= 2
    assert metrics["dynamic_sampling/groups_all_zero"][-1] >= 4
    assert metrics["dynamic_sampling/prompts_generated_per_kept"][-1] >= 2
    assert (
        metrics["dynamic_sampling/run_prompts_generated_per_kept"][-1]
        == metrics["dynamic_sampling/prompts_generated_per_kept"][-1]
    )
    assert out["num_items_in_batch"].item() == out["completion_mask"].sum().item()
    assert trainer.sampling.stream.state_dict()["position"] > 0


def test_without_dynamic_sampling_groups_without_signal_stay(tmp_path, tiny_model_dir):
    trainer = make_trainer(
        tmp_path, tiny_model_dir, even_length_if_a_large, truncation_length=16, dynamic_sampling=False
    )
    out = generate(trainer, a_values=(0, 1, 2, 3))
    assert torch.equal(out["advantages"], torch.zeros(16))
    assert trainer._metrics["train"]["dynamic_sampling/rounds"][-1] == 1


def test_correctness_metric_drops_all_correct_groups_that_shaping_made_mixed(tmp_path, tiny_model_dir):
    kw = dict(truncation_length=4, max_sampling_rounds=1, dynamic_sampling_exhausted="partial")
    by_reward = make_trainer(tmp_path, tiny_model_dir, always_correct, dynamic_sampling_metric="reward", **kw)
    generate(by_reward)
    assert by_reward._metrics["train"]["dynamic_sampling/groups_kept"][-1] > 0
    by_correctness = make_trainer(
        tmp_path, tiny_model_dir, always_correct, dynamic_sampling_metric="correctness", **kw
    )
    with pytest.raises(DynamicSamplingExhausted, match="0 of the 4 groups.*0 groups scored all zero, 4 all positive"):
        generate(by_correctness)


def test_exhausted_rounds_raise_with_counts(tmp_path, tiny_model_dir):
    trainer = make_trainer(tmp_path, tiny_model_dir, even_length_if_a_large, max_sampling_rounds=2)
    trainer.train_dataset = trainer.train_dataset.filter(lambda r: r["a"] < 4)  # nothing can ever be solved
    with pytest.raises(DynamicSamplingExhausted, match=r"0 of the 4 groups.*2 rounds.*8 groups scored all zero"):
        generate(trainer, a_values=(0, 1, 2, 3))


def test_partial_batch_when_asked(tmp_path, tiny_model_dir):
    trainer = make_trainer(
        tmp_path,
        tiny_model_dir,
        even_length_if_a_large,
        truncation_length=16,
        max_sampling_rounds=1,
        dynamic_sampling_exhausted="partial",
    )
    out = generate(trainer, a_values=(4, 5, 0, 1))  # two prompts can never be solved
    kept = int(trainer._metrics["train"]["dynamic_sampling/groups_kept"][-1])
    assert 0 < kept <= 2
    assert out["advantages"].shape == (kept * G,)
    assert trainer._metrics["train"]["dynamic_sampling/partial_batch"][-1] == 1.0


def test_difficulty_aware_budgets(tmp_path, tiny_model_dir):
    def solved_if_a_large(completions, a, **kwargs):
        return [float(x >= 4) for x in a]

    trainer = make_trainer(
        tmp_path,
        tiny_model_dir,
        solved_if_a_large,
        truncation_length=16,
        length_budgets=["0.5:4"],
        dynamic_sampling=False,
    )
    out = generate(trainer, a_values=(4, 5, 0, 1))
    budgets = torch.tensor(list(trainer._logs["extra"]["budget"])[-16:])
    assert budgets.tolist() == [4.0] * 8 + [16.0] * 8  # accuracy 1 -> 4 tokens, accuracy 0 -> the default
    metrics = trainer._metrics["train"]
    assert (metrics["dler/budget_mean"][-1], metrics["dler/budget_min"][-1]) == (10.0, 4.0)
    lengths, finished = lengths_and_finished(trainer, out)
    shaped = torch.tensor(list(trainer._logs["extra"]["shaped_reward"])[-16:])
    expected = torch.cat([((lengths[:8] <= 4) & finished[:8]).float(), torch.zeros(8)])
    assert torch.equal(shaped, expected)


def test_clip_higher_sees_ratios_away_from_one(tmp_path, tiny_model_dir):
    on_policy = make_trainer(tmp_path, tiny_model_dir, even_length, dynamic_sampling=False, updates_per_generation=1)
    assert "old_per_token_logps" not in generate(on_policy)  # ratio == 1: clipping can never act
    trainer = make_trainer(tmp_path, tiny_model_dir, even_length, dynamic_sampling=False, learning_rate=3e-2)
    assert trainer.epsilon_low == 0.2 and trainer.epsilon_high == 0.28
    trainer.train()
    second_update = trainer.state.log_history[1]
    assert second_update["clip_ratio/high_mean"] > 0


def test_custom_penalty_plugin(tmp_path, tiny_model_dir):
    class ShorterIsBetter(LengthPenalty):
        name = "shorter"

        def __call__(self, group):
            assert len(group.completions) == G and all(isinstance(c, str) for c in group.completions)
            assert group.max_length == 16 and group.prompt["answer"] == str(eval(group.prompt["prompt"][0]["content"]))
            return group.correctness - 0.1 * group.lengths.float()

    trainer = make_trainer(tmp_path, tiny_model_dir, always_correct, penalty=ShorterIsBetter(), dynamic_sampling=False)
    out = generate(trainer)
    lengths, _ = lengths_and_finished(trainer, out)
    assert trainer._metrics["train"]["dler/shaped_reward"][-1] == pytest.approx(
        1 - 0.1 * lengths.float().mean().item()
    )

    class Broken(LengthPenalty):
        name = "broken"

        def __call__(self, group):
            return torch.tensor([float("nan")])

    trainer = make_trainer(tmp_path, tiny_model_dir, always_correct, penalty=Broken(), dynamic_sampling=False)
    with pytest.raises(ValueError, match="Broken returned"):
        generate(trainer)


def test_checkpoints_carry_dler_state_and_resume_continues_it(tmp_path, tiny_model_dir):
    kw = dict(truncation_length=16, max_steps=4, save_strategy="steps", save_steps=2)
    first = make_trainer(tmp_path / "a", tiny_model_dir, even_length_if_a_large, **kw)
    first.train()
    saved = json.loads((tmp_path / "a" / "checkpoint-2" / "dler_state.json").read_text())
    final = json.loads((tmp_path / "a" / "checkpoint-4" / "dler_state.json").read_text())
    assert saved["prompt_stream"]["position"] > 0 and saved["prompts_generated"] > saved["prompts_trained"]

    resumed = make_trainer(tmp_path / "b", tiny_model_dir, even_length_if_a_large, **kw)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))
    assert resumed.dler_state_dict() == final  # the same extra prompts were drawn after the resume


def test_lora_through_peft(tmp_path, tiny_model_dir):
    from peft import LoraConfig

    trainer = DLERTrainer(
        model=tiny_model_dir,
        reward_funcs=even_length,
        args=tiny_config(tmp_path, dynamic_sampling=False, max_steps=1),
        train_dataset=addition_dataset(),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    before = {n: p.clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    assert before and any(not torch.equal(before[n], after[n]) for n in before)


def test_evaluation_logs_dler_metrics(tmp_path, tiny_model_dir):
    trainer = DLERTrainer(
        model=tiny_model_dir,
        reward_funcs=even_length,
        args=tiny_config(tmp_path, per_device_eval_batch_size=8, eval_strategy="steps", eval_steps=1, max_steps=1),
        train_dataset=addition_dataset(),
        eval_dataset=addition_dataset(16),
    )
    metrics = trainer.evaluate()
    assert 0 < metrics["eval_dler/accuracy"] < 1  # even_length: about half the rollouts
    assert 1 <= metrics["eval_dler/mean_length"] <= 16 and 0 <= metrics["eval_dler/truncated_frac"] <= 1


def test_rejects_plain_grpo_config_and_streaming_data(tmp_path, tiny_model_dir):
    from trl import GRPOConfig

    with pytest.raises(TypeError, match="DLERConfig"):
        DLERTrainer(
            model=tiny_model_dir, reward_funcs=even_length, args=GRPOConfig(str(tmp_path), use_cpu=True, bf16=False)
        )
    with pytest.raises(ValueError, match="IterableDataset"):
        DLERTrainer(
            model=tiny_model_dir,
            reward_funcs=even_length,
            args=tiny_config(tmp_path),
            train_dataset=addition_dataset().to_iterable_dataset(),
        )


def test_completions_table_shows_dler_advantages(tmp_path, tiny_model_dir):
    trainer = make_trainer(tmp_path, tiny_model_dir, always_correct, truncation_length=4, dynamic_sampling=False)
    out = generate(trainer)
    assert list(trainer._logs["advantages"]) == pytest.approx(out["advantages"].tolist())


def test_math_reward_pool_stops_with_training(tmp_path, tiny_model_dir):
    from dler.rewards import MathReward

    reward = MathReward(num_workers=1, answer_timeout=2.0)
    trainer = make_trainer(tmp_path, tiny_model_dir, reward, dynamic_sampling=False, max_steps=1)
    trainer.train()  # the tiny model never writes a boxed answer: every rollout scores 0
    assert trainer.state.log_history[0]["rewards/math_correctness/mean"] == 0.0
    assert reward._pool is None or not reward._pool.pids, "grading workers outlived the trainer"
    assert reward(completions=["</think> \\boxed{2}"], answer=["2"]) == [1.0]  # restarts on demand
    reward.close()


@pytest.mark.parametrize(
    "penalty, kwargs, recipe",
    [("cosine", {"exceed_margin": 0}, "grpo"), ("kimi", {}, "dler"), ("shorterbetter", {"beta": 0.05}, "dler")],
)
def test_penalty_and_optimizer_recipe_chosen_in_config(tmp_path, tiny_model_dir, penalty, kwargs, recipe):
    from dler.penalties import RolloutGroup, get_penalty

    trainer = DLERTrainer(
        model=tiny_model_dir,
        reward_funcs=even_length,
        args=tiny_config(
            tmp_path,
            truncation_length=16,
            optimizer_recipe=recipe,
            penalty=penalty,
            penalty_kwargs=kwargs,
            dynamic_sampling=False,
        ),
        train_dataset=addition_dataset(),
    )
    assert trainer.penalty.name == penalty
    out = generate(trainer)
    lengths, finished = lengths_and_finished(trainer, out)
    correctness = (lengths % 2 == 0).float()
    reference = get_penalty(penalty, **kwargs)
    expected = torch.cat(
        [
            reference(RolloutGroup(correctness[s], lengths[s], finished[s], budget=16, max_length=16))
            for s in (slice(i, i + G) for i in range(0, 16, G))
        ]
    )
    shaped = torch.tensor(list(trainer._logs["extra"]["shaped_reward"])[-16:])
    assert shaped.tolist() == pytest.approx(expected.tolist(), abs=1e-6)
    normalization = "group" if recipe == "grpo" else "batch"
    assert out["advantages"].tolist() == pytest.approx(
        compute_advantages(expected, G, normalization, lengths=lengths).tolist(), abs=1e-4
    )
    assert trainer.epsilon_high == (0.2 if recipe == "grpo" else 0.28)


def test_stateful_penalty_state_rides_in_checkpoints(tmp_path, tiny_model_dir):
    kw = dict(
        penalty="thinkprune",
        penalty_kwargs={"budgets": [16, 8], "stage_steps": [1]},
        truncation_length=16,
        dynamic_sampling=False,
        updates_per_generation=1,
        max_steps=2,
        save_strategy="steps",
        save_steps=2,
    )

    def build(output_dir):
        return DLERTrainer(
            model=tiny_model_dir,
            reward_funcs=even_length,
            args=tiny_config(output_dir, **kw),
            train_dataset=addition_dataset(),
        )

    trainer = build(tmp_path)
    trainer.train()  # generates at steps 0 and 1: the second stage starts at step 1
    state = torch.load(tmp_path / "checkpoint-2" / "dler_rank0.pt", weights_only=True)  # per rank: its groups
    assert state["penalty"] == {"stage": 1, "budget": 8}
    fresh = build(tmp_path / "fresh")
    assert fresh.penalty.stage == 0
    fresh.load_rank_state_dict(state)  # what resuming from the checkpoint calls
    assert fresh.penalty.stage == 1 and fresh.penalty.budget == 8


def test_failing_reward_function_is_named_with_its_sample(tmp_path, tiny_model_dir):
    from dler.reward_guard import RewardFunctionError

    def broken_on_long(completions, completion_ids, **kwargs):
        return [1.0 if len(ids) < 9 else float("nan") for ids in completion_ids]

    trainer = make_trainer(tmp_path, tiny_model_dir, broken_on_long, truncation_length=16, dynamic_sampling=False)
    with pytest.raises(RewardFunctionError, match=r"'broken_on_long' returned nan for sample \d+ \(prompt: "):
        generate(trainer)


def test_unlimited_rounds_warn_as_they_grow(tmp_path, tiny_model_dir, caplog):
    calls = []

    def solved_after_ten_rounds(completions, completion_ids, **kwargs):
        calls.append(1)
        return even_length(completions, completion_ids) if len(calls) > 10 else [0.0] * len(completions)

    trainer = make_trainer(tmp_path, tiny_model_dir, solved_after_ten_rounds, truncation_length=16)
    with caplog.at_level("WARNING", logger="dler.trainer"):
        generate(trainer)
    assert trainer._metrics["train"]["dynamic_sampling/rounds"][-1] > 10
    assert (
        "Dynamic sampling needed 10 generation rounds for one batch (0/4 groups with signal; 40 all-zero"
        in caplog.text
    )
