"""DLERConfig: the paper's defaults, derived batch layout, and invalid combinations failing at construction."""

import re
import warnings

import pytest
import yaml
from trl import TrlParser

from dler import DLERConfig

BASE = dict(output_dir="unused", use_cpu=True, bf16=False, report_to=[])


def config(**kw):
    return DLERConfig(**{**BASE, **kw})


def test_defaults_are_the_paper():
    c = config(per_device_train_batch_size=16)
    assert (c.epsilon, c.epsilon_high, c.loss_type, c.beta) == (0.2, 0.28, "dapo", 0.0005)
    assert (c.num_generations, c.learning_rate, c.temperature, c.top_p) == (16, 1e-6, 1.0, 1.0)
    assert (c.truncation_length, c.max_completion_length, c.truncated_reward_scale) == (4000, 4000, 0.0)
    assert (c.advantage_normalization, c.advantage_weighting, c.correct_advantage_boost) == ("batch", "token", 0.0)
    assert (c.dynamic_sampling, c.dynamic_sampling_metric, c.max_sampling_rounds) == (True, "reward", 0)
    assert (c.lr_scheduler_type, c.weight_decay, c.max_grad_norm) == ("constant", 0.01, 1.0)
    assert not c.mask_truncated_completions
    # TRL defaults the paper and the released run do not have: vLLM importance weights, the KL ratio factor
    assert (c.vllm_importance_sampling_correction, c.use_bias_correction_kl, c.delta) == (False, False, 10.0)
    assert (c.kl_estimator, c.max_prompt_length, c.eval_temperature, c.prompts_per_round) == ("k2", None, None, None)
    # one generation batch feeds 8 optimizer updates, as 512 prompts / mini-batches of 64
    assert c.steps_per_generation == 8 * c.gradient_accumulation_steps
    assert c.generation_batch_size == 16 * 8


def test_explicit_generation_layout_wins():
    assert config(per_device_train_batch_size=16, steps_per_generation=2).steps_per_generation == 2
    assert config(per_device_train_batch_size=16, generation_batch_size=64).steps_per_generation == 4


def test_length_budgets_normalised():
    c = config(per_device_train_batch_size=16, length_budgets=["0.5:2000", "0.9:1000"])
    assert c.budget_bands == [(0.9, 1000), (0.5, 2000)]
    assert c.length_budgets == ["0.9:1000", "0.5:2000"]


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(epsilon_high=0.1), "epsilon_high"),
        (dict(truncation_length=5000), "truncation_length"),
        (dict(truncation_length=0), "truncation_length"),
        (dict(length_budgets=["0.5:5000"]), "length_budgets"),
        (dict(length_budgets=["half:2000"]), "length_budgets"),
        (dict(mask_truncated_completions=True), "mask_truncated_completions"),
        (dict(advantage_normalization="batchwise"), "advantage_normalization"),
        (dict(advantage_weighting="tokens"), "advantage_weighting"),
        (dict(dynamic_sampling_metric="accuracy"), "dynamic_sampling_metric"),
        (dict(dynamic_sampling_exhausted="skip"), "dynamic_sampling_exhausted"),
        (dict(truncated_reward_scale=2.0), "truncated_reward_scale"),
        (dict(max_sampling_rounds=-1), "max_sampling_rounds"),
        (dict(updates_per_generation=0), "updates_per_generation"),
        (dict(max_round_factor=0.5), "max_round_factor"),
        (dict(round_confidence=-1.0), "round_confidence"),
        (dict(kept_fraction_decay=1.0), "kept_fraction_decay"),
        (dict(max_carry_age=-1), "max_carry_age"),
        (dict(skip_after=0), "skip_after"),
        (dict(skip_exploration=0.0), "skip_exploration"),
        (dict(skip_exploration=1.5), "skip_exploration"),
        (dict(dynamic_sampling=False, adaptive_rounds=True), "adaptive_rounds"),
        (dict(dynamic_sampling=False, max_carry_age=1, skip_no_signal_prompts=True), "max_carry_age"),
        (dict(optimizer_recipe="grpo", skip_no_signal_prompts=True), "skip_no_signal_prompts"),
        (dict(kl_estimator="mse"), "kl_estimator"),
        (dict(use_bias_correction_kl=True), "use_bias_correction_kl"),
        (dict(loss_type="gspo"), "loss_type"),
        (dict(max_prompt_length=0), "max_prompt_length"),
        (dict(eval_temperature=0.0), "eval_temperature"),
        (dict(dynamic_sampling=False, prompts_per_round=512), "prompts_per_round"),
        (dict(prompts_per_round=0), "prompts_per_round"),
    ],
)
def test_invalid_combinations_name_the_field(overrides, field):
    settings = {"per_device_train_batch_size": 16, **overrides}
    with pytest.raises(ValueError, match=field):
        config(**settings)


@pytest.mark.parametrize(
    "overrides, advice, fix",
    [
        (dict(epsilon_high=0.1), "Set epsilon_high >= epsilon", dict(epsilon_high=0.2)),
        (
            dict(truncation_length=5000),
            "Raise max_completion_length to at least 5000",
            dict(max_completion_length=5000),
        ),
        (
            dict(length_budgets=["0.5:5000"]),
            "Raise max_completion_length to at least 5000",
            dict(max_completion_length=5000),
        ),
        (
            dict(mask_truncated_completions=True),
            "Set mask_truncated_completions=False",
            dict(mask_truncated_completions=False),
        ),
        (dict(use_bias_correction_kl=True), "or kl_estimator='k3'", dict(kl_estimator="k3")),
        (dict(loss_type="gspo"), "not one of TRL 1.16's loss types", dict(loss_type="grpo")),
        (
            dict(dynamic_sampling=False, adaptive_rounds=True),
            "set dynamic_sampling=True",
            dict(dynamic_sampling=True),
        ),
        (
            dict(dynamic_sampling=False, prompts_per_round=512),
            "set dynamic_sampling=True",
            dict(dynamic_sampling=True),
        ),
        (
            dict(updates_per_generation=1, max_carry_age=1),
            "Set updates_per_generation >= 2",
            dict(updates_per_generation=2),
        ),
    ],
)
def test_refusals_say_how_to_fix_them_and_the_fix_is_accepted(overrides, advice, fix):
    settings = {"per_device_train_batch_size": 16, **overrides}
    with pytest.raises(ValueError, match=re.escape(advice)):
        config(**settings)
    config(**{**settings, **fix})  # following the advice builds


def test_other_kl_estimators_leave_trl_free():
    assert config(
        per_device_train_batch_size=16, kl_estimator="k3", use_bias_correction_kl=True
    ).use_bias_correction_kl
    assert config(per_device_train_batch_size=16, beta=0.0, loss_type="grpo").loss_type == "grpo"  # no KL term at all


def test_group_split_across_ranks_is_refused(monkeypatch):
    # two ranks x 2 samples: the global batch (4) holds a group of 4, but each rank would hold half of it
    monkeypatch.setattr(DLERConfig, "world_size", property(lambda self: 2))
    with pytest.raises(
        ValueError, match="split across ranks.*per_device_train_batch_size \\* steps_per_generation a mul"
    ):
        config(per_device_train_batch_size=2, num_generations=4, steps_per_generation=1)
    assert config(per_device_train_batch_size=2, num_generations=4, steps_per_generation=2).steps_per_generation == 2


def test_single_update_per_generation_warns_that_clip_higher_is_idle():
    with pytest.warns(UserWarning, match="clip-higher.*set updates_per_generation=8"):
        config(per_device_train_batch_size=16, updates_per_generation=1)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        config(per_device_train_batch_size=16, updates_per_generation=8)
    assert not [w for w in seen if "clip-higher" in str(w.message)]


def test_cli_and_yaml_through_trl_parser(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"truncation_length": 3000, "length_budgets": ["0.5:1500"], "use_cpu": True}))
    parser = TrlParser((DLERConfig,))
    (c,) = parser.parse_args_and_config(
        [
            "--config",
            str(path),
            "--output_dir",
            str(tmp_path),
            "--bf16",
            "false",
            "--per_device_train_batch_size",
            "16",
            "--truncated_reward_scale",
            "0.1",
            "--advantage_weighting",
            "sequence",
        ]
    )
    assert (c.truncation_length, c.budget_bands, c.truncated_reward_scale) == (3000, [(0.5, 1500)], 0.1)
    assert c.advantage_weighting == "sequence"
    with pytest.raises(SystemExit):  # argparse rejects a value outside the documented choices
        parser.parse_args_and_config(["--output_dir", "x", "--advantage_weighting", "tokens"])


def test_optimizer_recipe_fills_unset_fields_and_explicit_values_win():
    grpo = config(per_device_train_batch_size=16, optimizer_recipe="grpo")
    assert (grpo.advantage_normalization, grpo.epsilon_high, grpo.dynamic_sampling) == ("group", None, False)
    mixed = config(per_device_train_batch_size=16, optimizer_recipe="grpo", dynamic_sampling=True)
    assert mixed.dynamic_sampling is True and mixed.advantage_normalization == "group"
    dler = config(per_device_train_batch_size=16, advantage_normalization="none")
    assert (dler.advantage_normalization, dler.epsilon_high, dler.dynamic_sampling) == ("none", 0.28, True)
    with pytest.raises(ValueError, match="optimizer_recipe"):
        config(per_device_train_batch_size=16, optimizer_recipe="ppo")


def test_penalty_chosen_in_config_is_validated_early():
    c = config(per_device_train_batch_size=16, truncated_reward_scale=0.1)
    penalty = c.build_penalty()
    assert penalty.name == "truncation" and penalty.truncated_reward_scale == 0.1
    with pytest.raises(ValueError, match="no_such_penalty.*available: .*truncation"):  # lists the available ones
        config(per_device_train_batch_size=16, penalty="no_such_penalty")
    with pytest.raises(ValueError, match="no_such_param.*accepted: .*truncated_reward_scale"):  # names the accepted
        config(per_device_train_batch_size=16, penalty_kwargs={"no_such_param": 1})


def test_penalty_kwargs_from_the_command_line(tmp_path):
    (c,) = TrlParser((DLERConfig,)).parse_args_and_config(
        [
            "--output_dir",
            str(tmp_path),
            "--use_cpu",
            "true",
            "--bf16",
            "false",
            "--per_device_train_batch_size",
            "16",
            "--penalty",
            "truncation",
            "--penalty_kwargs",
            '{"truncated_reward_scale": 0.1}',
        ]
    )
    assert c.penalty_kwargs == {"truncated_reward_scale": 0.1} and c.build_penalty().truncated_reward_scale == 0.1


def test_penalty_that_cannot_fit_the_cap_fails_at_construction():
    # DAPO's default buffer (4096) is longer than DLER's 4000-token cap
    with pytest.raises(ValueError, match="buffer B=4096 exceeds Lmax=4000"):
        config(per_device_train_batch_size=16, penalty="soft_overlong")
    c = config(per_device_train_batch_size=16, penalty="soft_overlong", penalty_kwargs={"buffer": 1000})
    assert c.build_penalty().buffer == 1000


def test_generating_less_is_off_by_default():
    c = config(per_device_train_batch_size=16)
    assert (c.adaptive_rounds, c.max_carry_age, c.skip_no_signal_prompts) == (False, 0, False)


def test_carry_over_needs_the_generating_policys_logps():
    # one generation batch per optimizer update: TRL keeps no old_per_token_logps, stale groups would pass as on-policy
    with pytest.raises(ValueError, match="max_carry_age=1 trains on groups generated by an older policy.*updates_per"):
        config(per_device_train_batch_size=16, updates_per_generation=1, max_carry_age=1)
    assert config(per_device_train_batch_size=16, updates_per_generation=2, max_carry_age=1).keeps_behaviour_logps
    # several iterations per generation: logps kept as soon as generations outnumber an optimizer step
    c = config(per_device_train_batch_size=16, updates_per_generation=1, num_iterations=2, max_carry_age=1)
    assert c.keeps_behaviour_logps
    # vLLM's importance weights would compare a carried group's sampler with today's policy
    carried = dict(per_device_train_batch_size=16, max_carry_age=1, use_vllm=True)
    with pytest.raises(ValueError, match="max_carry_age=1 with vllm_importance_sampling_correction.*Set vllm_imp"):
        config(**carried, vllm_importance_sampling_correction=True)
    assert config(**carried, vllm_importance_sampling_correction=False).max_carry_age == 1
