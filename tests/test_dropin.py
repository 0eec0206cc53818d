"""DLERConfig / DLERTrainer as drop-ins for GRPOConfig / GRPOTrainer: the budget at the generation cap, TRL's
`scale_rewards` honoured, TRL's signature, streaming refused with what to do, and dynamic sampling that stops."""

import inspect
import time

import pytest
from helpers import addition_dataset, even_length

from dler import DLERConfig, DLERTrainer
from dler.recipe import parse
from dler.trainer import DynamicSamplingExhausted

BASE = dict(use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=8, num_generations=4)
G = 4


def config(tmp_path, **kw):
    return DLERConfig(output_dir=str(tmp_path), **{**BASE, **kw})


def test_budget_defaults_to_the_generation_cap(tmp_path):
    assert config(tmp_path, max_completion_length=8).truncation_length == 8
    assert config(tmp_path).truncation_length == 4000  # the paper: budget = cap = 4000
    assert config(tmp_path, max_completion_length=64, truncation_length=32).truncation_length == 32
    with pytest.raises(ValueError, match="truncation_length = 10 tokens is above max_completion_length = 8"):
        config(tmp_path, max_completion_length=8, truncation_length=10)
    with pytest.raises(ValueError, match="set max_completion_length"):
        config(tmp_path, max_completion_length=None)


@pytest.mark.parametrize(
    "scale_rewards, normalization",
    [("group", "group"), (True, "group"), ("none", "none"), (False, "none"), ("batch", "batch_std"), (None, "batch")],
)
def test_scale_rewards_selects_the_matching_normalisation(tmp_path, scale_rewards, normalization):
    c = config(tmp_path, scale_rewards=scale_rewards)
    assert c.advantage_normalization == normalization
    assert c.scale_rewards == {True: "group", False: "none"}.get(scale_rewards, scale_rewards)


def test_scale_rewards_contradicting_advantage_normalization_is_refused(tmp_path):
    assert config(tmp_path, scale_rewards="batch", advantage_normalization="batch_std").scale_rewards == "batch"
    with pytest.raises(ValueError, match=r"scale_rewards='batch'.*contradicts advantage_normalization='batch'"):
        config(tmp_path, scale_rewards="batch", advantage_normalization="batch")
    with pytest.raises(ValueError, match=r"scale_rewards='none'.*contradicts advantage_normalization='group'"):
        config(tmp_path, scale_rewards=False, optimizer_recipe="dler", advantage_normalization="group")
    with pytest.raises(ValueError, match="scale_rewards='sequence' is not one of"):
        config(tmp_path, scale_rewards="sequence")
    with pytest.raises(ValueError, match="multi_objective_aggregation='sum' is not one of"):
        config(tmp_path, multi_objective_aggregation="sum")
    assert config(tmp_path, correctness_rewards="math").correctness_rewards == ["math"]
    with pytest.raises(ValueError, match="correctness_rewards=\\[\\]"):
        config(tmp_path, correctness_rewards=[])


def test_dry_run_says_where_the_budget_and_normalisation_come_from(tmp_path):
    defaults = dict(prompts_per_generation=4, prompts_per_update=2, num_generations=4, per_device_train_batch_size=8)
    argv = ["--dry-run", "--output_dir", str(tmp_path), "--max_completion_length", "64", "--num_processes", "1"]
    _, training, _, _, sources = parse(defaults, [*argv, "--scale_rewards", "false"])  # TRL's alias for 'none'
    assert (training.truncation_length, sources["truncation_length"]) == (64, "derived: max_completion_length")
    assert (training.advantage_normalization, sources["advantage_normalization"]) == (
        "none",
        "derived: scale_rewards='none'",
    )
    assert sources["scale_rewards"] == "command line"
    _, training, _, _, sources = parse(defaults, [*argv, "--truncation_length", "32"])
    assert (training.truncation_length, sources["truncation_length"]) == (32, "command line")
    assert sources["advantage_normalization"] == "optimizer_recipe dler: fills it when unset"


def test_signature_matches_grpo_trainer():
    from trl import GRPOTrainer

    ours = inspect.signature(DLERTrainer.__init__).parameters
    theirs = inspect.signature(GRPOTrainer.__init__).parameters
    assert [(p.name, p.kind, p.default) for p in theirs.values()] == [
        (p.name, p.kind, p.default) for p in ours.values() if p.name != "penalty"
    ]
    assert ours["penalty"].kind is inspect.Parameter.KEYWORD_ONLY and ours["penalty"].default is None


def test_refused_before_any_model_loads(tmp_path):
    missing = str(tmp_path / "no-such-model")  # loading it would fail with another error
    args = config(tmp_path, max_completion_length=8)
    with pytest.raises(ValueError, match="No reward source provided. DLERTrainer needs at least one reward function"):
        DLERTrainer(missing, args=args)
    with pytest.raises(ValueError, match="environment_factory would bypass"):
        DLERTrainer(missing, args=args, environment_factory=object)
    stream = addition_dataset().to_iterable_dataset()
    with pytest.raises(ValueError, match=r"IterableDataset.*streaming=False.*or set dynamic_sampling=False"):
        DLERTrainer(missing, even_length, args, stream)
    with pytest.raises(ValueError, match="reward_weights has 2 entries for 1"):
        DLERTrainer(missing, even_length, config(tmp_path, reward_weights=[1.0, 1.0]), addition_dataset())


@pytest.mark.slow
def test_only_max_completion_length_set_trains(tmp_path, tiny_model_dir):
    args = DLERConfig(
        output_dir=str(tmp_path), max_completion_length=8, max_steps=1, **BASE, save_strategy="no", learning_rate=1e-3
    )
    trainer = DLERTrainer(tiny_model_dir, even_length, args, addition_dataset())
    trainer.train()
    assert trainer.state.global_step == 1
    logged = next(h for h in trainer.state.log_history if "dler/budget_mean" in h)
    assert logged["dler/budget_mean"] == 8.0


@pytest.mark.slow
def test_streaming_data_trains_without_dynamic_sampling(tmp_path, tiny_model_dir):
    args = config(tmp_path, max_completion_length=8, max_steps=1, save_strategy="no", dynamic_sampling=False)
    trainer = DLERTrainer(tiny_model_dir, even_length, args, addition_dataset().to_iterable_dataset())
    trainer.train()
    assert trainer.state.global_step == 1


def never_solved(completions, **kwargs):
    return [0.0] * len(completions)


@pytest.mark.slow
def test_no_limit_stops_after_a_whole_pass_over_the_data(tmp_path, tiny_model_dir):
    """Rewards all 0 (as when every response is cut at a small cap) with max_sampling_rounds=0: an error naming
    the counts and the settings, after 16 prompts in rounds of 4, instead of a loop without end."""
    args = config(tmp_path, max_completion_length=8, max_steps=1, save_strategy="no", updates_per_generation=2)
    trainer = DLERTrainer(tiny_model_dir, never_solved, args, addition_dataset(16))
    started = time.monotonic()
    with pytest.raises(DynamicSamplingExhausted) as error:
        trainer.train()
    assert time.monotonic() - started < 120
    message = str(error.value)
    assert "0 of the 4 groups with signal after 4 rounds, which drew 16 prompts" in message
    assert "as many as the training set holds (16" in message and "16 groups scored all zero" in message
    assert "max_sampling_rounds" in message and "dynamic_sampling_exhausted='partial'" in message
