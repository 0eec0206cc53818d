"""The settings that make a run equal the released one (and the paper's): each mechanism on the tiny model, and what
happens when it is off. The presets themselves are checked in tests/test_presets.py."""

import pytest
import torch
from helpers import addition_dataset, alternating_if, even_length, tiny_config
from trl import GRPOTrainer

from dler import DLERTrainer
from dler.kl import kl_k2, kl_k3, kl_low_var, kl_penalty_terms
from dler.penalties import LengthPenalty

G = 4


# ---------------------------------------------------------------- KL estimators (pure)
def test_kl_estimators_against_hand_values():
    logps = torch.tensor([-1.0, -2.0, -0.5])
    ref = torch.tensor([-1.0, -1.0, -4.0])
    # r - l = 0, 1, -3.5: k3 = e^x - x - 1; k2 = x^2 / 2
    assert torch.allclose(kl_k3(logps, ref), torch.tensor([0.0, 2.718281828 - 2, 0.030197383 + 2.5]), atol=1e-6)
    assert torch.allclose(kl_k2(logps, ref), torch.tensor([0.0, 0.5, 6.125]))
    big = torch.tensor([-5.0])  # r - l = 4: k3 = e^4 - 5 = 49.6, clamped to 10 with no gradient
    big.requires_grad_(True)
    low_var = kl_low_var(big, torch.tensor([-1.0]))
    low_var.sum().backward()
    assert low_var.item() == 10.0 and big.grad.item() == 0.0
    k3, same = kl_penalty_terms(logps, ref, "k3")
    assert torch.equal(k3, same)
    with pytest.raises(ValueError, match="k2"):
        kl_penalty_terms(logps, ref, "mse")


# ---------------------------------------------------------------- on the trainer
def make_trainer(tmp_path, model_dir, reward=even_length, penalty=None, **overrides):
    return DLERTrainer(
        model=model_dir,
        reward_funcs=reward,
        args=tiny_config(tmp_path, **overrides),
        train_dataset=overrides.pop("train_dataset", None) or addition_dataset(),
        eval_dataset=addition_dataset(16),
        penalty=penalty,
    )


def kl_only_loss(trainer, estimator_fn):
    """The loss TRL's 'dapo' gives a batch with zero advantages: beta x the KL term, by hand, from a fresh forward."""
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = trainer.args.gradient_accumulation_steps  # set by train()
    inputs = trainer._generate_and_score_completions(_batch(trainer))
    inputs["advantages"] = torch.zeros_like(inputs["advantages"])
    mask = inputs["completion_mask"]
    torch.manual_seed(0)  # a reference that differs from the policy, some tokens far enough for the clamp
    inputs["ref_per_token_logps"] = inputs["old_per_token_logps"] + 4.0 * torch.rand_like(mask, dtype=torch.float32)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention = torch.cat([inputs["prompt_mask"], mask], dim=1)
    logps, *_ = GRPOTrainer._get_per_token_logps_and_entropies(trainer, trainer.model, ids, attention, mask.size(1))
    normalizer = inputs["num_items_in_batch"] * trainer.current_gradient_accumulation_steps
    normalizer = normalizer / trainer.args.steps_per_generation
    expected = trainer.beta * (estimator_fn(logps, inputs["ref_per_token_logps"]) * mask).sum() / normalizer
    return inputs, expected


def _batch(trainer):
    rows = [dict(trainer.train_dataset[i]) for i in range(4)]
    return [r for r in rows for _ in range(G)]


@pytest.mark.slow
@pytest.mark.parametrize("estimator, fn", [("k2", kl_k2), ("low_var_kl", kl_low_var), ("k3", kl_k3)])
def test_kl_estimator_is_the_loss_in_value_and_gradient(tmp_path, tiny_model_dir, estimator, fn):
    trainer = make_trainer(tmp_path, tiny_model_dir, beta=0.5, kl_estimator=estimator)
    inputs, expected = kl_only_loss(trainer, fn)
    assert (inputs["ref_per_token_logps"] - inputs["old_per_token_logps"] > 2.6).any()  # the clamp binds somewhere
    loss = trainer.compute_loss(trainer.model, inputs)
    assert torch.allclose(loss, expected, rtol=1e-5)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    got = torch.autograd.grad(loss, params, allow_unused=True)
    want = torch.autograd.grad(expected, params, allow_unused=True)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, want, strict=True) if a is not None)
    if estimator != "k3":
        assert trainer._metrics["train"][f"dler/kl_{estimator}"]
        k3_loss = kl_only_loss(trainer, kl_k3)[1]  # the estimators really differ on this batch
        assert not torch.allclose(expected, k3_loss, rtol=1e-3)


@pytest.mark.slow
def test_prompts_are_left_truncated_after_the_chat_template_and_counted(tmp_path, tiny_model_dir):
    trainer = make_trainer(tmp_path, tiny_model_dir, max_prompt_length=5)
    trainer.model.train()
    prompts = [r["prompt"] for r in _batch(trainer)]
    full, _, _ = GRPOTrainer._tokenize_prompts(trainer, prompts)
    cut, _, _ = trainer._tokenize_prompts(prompts)
    assert all(len(ids) > 5 for ids in full)  # the template alone is longer than 5 tokens
    assert [list(ids) for ids in cut] == [list(ids[-5:]) for ids in full]  # the last tokens: the generation prompt
    assert trainer._metrics["train"]["dler/prompt_truncated_frac"] == [1.0]
    assert trainer._prompts_truncated == 4  # prompts, not rollouts
    assert trainer.dler_state_dict()["prompts_truncated"] == 4
    uncut = make_trainer(tmp_path, tiny_model_dir)
    assert [list(i) for i in uncut._tokenize_prompts(prompts)[0]] == [list(i) for i in full]


class CountingPenalty(LengthPenalty):
    """The truncation rule, counting its calls."""

    calls = 0

    def __call__(self, group):
        CountingPenalty.calls += 1
        return group.correctness * (group.lengths <= group.budget)


@pytest.mark.slow
def test_evaluation_samples_at_eval_temperature_and_scores_without_the_penalty(tmp_path, tiny_model_dir):
    trainer = make_trainer(
        tmp_path,
        tiny_model_dir,
        penalty=CountingPenalty(),
        eval_temperature=0.6,
        num_generations_eval=4,
        per_device_eval_batch_size=4,
        eval_strategy="steps",
        eval_steps=1,
    )
    seen = []
    generate = trainer.model.generate

    def spy(*args, generation_config=None, **kwargs):
        seen.append(generation_config.temperature)
        return generate(*args, generation_config=generation_config, **kwargs)

    trainer.model.generate = spy
    CountingPenalty.calls = 0
    metrics = trainer.evaluate()
    assert set(seen) == {0.6} and CountingPenalty.calls == 0  # eval: T=0.6, correctness only
    assert 0 < metrics["eval_dler/accuracy"] < 1 and "eval_dler/truncated_frac" in metrics
    seen.clear()
    trainer.model.train()
    trainer._generate_and_score_completions(_batch(trainer))
    assert set(seen) == {1.0} and CountingPenalty.calls >= 4  # training: T=1.0, every group shaped
    assert trainer.generation_config.temperature == 1.0 and trainer.generation_kwargs["temperature"] == 1.0


@pytest.mark.slow
def test_every_round_comes_from_one_stream_so_a_prompt_comes_once_per_epoch(tmp_path, tiny_model_dir):
    def run(prompts_per_round):
        seen = []

        def reward(completions, a, b, **kwargs):
            seen.extend(zip(a[::G], b[::G], strict=True))
            return alternating_if(lambda x: x % 2 == 0)(completions, a)

        data = addition_dataset(16).map(lambda r, i: {"b": i % 2}, with_indices=True)
        data = data.map(lambda r: {"a": r["a"] * 2 + r["b"]})  # 16 distinct (a, b) pairs, half of them mixed
        trainer = DLERTrainer(
            model=tiny_model_dir,
            reward_funcs=reward,
            args=tiny_config(tmp_path, max_steps=3, prompts_per_round=prompts_per_round),
            train_dataset=data,
        )
        trainer.train()
        return seen, trainer

    seen, trainer = run(2)
    assert len(seen) >= 16 and len(set(seen[:16])) == 16  # the first 16 prompts generated are the whole dataset
    assert all(len(set(seen[k : k + 2])) == 2 for k in range(0, len(seen), 2))
    rounds = [h["dynamic_sampling/rounds"] for h in trainer.state.log_history if "dynamic_sampling/rounds" in h]
    assert rounds and min(rounds) >= 2  # 2-prompt rounds cannot fill a 4-prompt batch
    before, _ = run(None)  # the sampler's first round and the stream's later rounds overlap within an epoch
    assert len(set(before[:16])) < 16


class FakeVLLM:
    """Stands in for TRL's `VLLMGeneration`: records the temperature each generate call sees."""

    def __init__(self):
        self.temperature, self.seen = 1.0, []

    def sync_weights(self):
        pass

    def generate(self, prompts, images, num_generations, profiler):
        self.seen.append(self.temperature)
        return None, [[1, 2]] * len(prompts), [[[-0.1], [-0.2]]] * len(prompts), None


@pytest.mark.slow
def test_eval_temperature_reaches_the_vllm_backend_and_is_restored(tmp_path, tiny_model_dir):
    trainer = make_trainer(tmp_path, tiny_model_dir, eval_temperature=0.6)
    trainer.use_vllm, trainer.vllm_generation, trainer._last_loaded_step = True, FakeVLLM(), -1
    trainer.model.eval()
    trainer._generate_single_turn([[1, 2, 3]], None, {}, 4)
    trainer.model.train()
    trainer._generate_single_turn([[1, 2, 3]], None, {}, 4)
    assert trainer.vllm_generation.seen == [0.6, 1.0] and trainer.vllm_generation.temperature == 1.0
