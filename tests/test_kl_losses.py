"""The KL estimator under every TRL 1.16 loss type: the aggregation by hand, the DLER loss against TRL's loss without
KL plus beta x the estimator aggregated by an independent loop (value and gradient), and 2 training steps each."""

import math

import pytest
import torch
from helpers import addition_dataset, even_length, tiny_config
from trl import GRPOTrainer

import dler.kl_loss
from dler import DLERConfig, DLERTrainer
from dler.kl import LOSS_TYPES, aggregate_like_trl, kl_k2, kl_k3, kl_low_var

BASE = dict(output_dir="unused", use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=16)
# (loss_type, importance_sampling_level): every loss type, GSPO (sequence-level 'grpo') and luspo's own setup
SETUPS = [(t, "token") for t in LOSS_TYPES if t != "luspo"] + [("grpo", "sequence"), ("luspo", "sequence")]
SETUP_IDS = [f"{t}-{level}" for t, level in SETUPS]


# ---------------------------------------------------------------- the aggregation, by hand
# values [[1, 2, 3], [4, 5, 6]], mask [[1, 1, 0], [1, 1, 1]]: row sums 3 and 15, 5 tokens
VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
# training with 4 accumulation steps, steps_per_generation 2, num_items_in_batch 20 over 2 processes, cap 10
HAND = {
    "grpo": (1.5 + 5.0) / 2 / 4,  # per-sequence means 1.5 and 5, their mean, / accumulation
    "sapo": (1.5 + 5.0) / 2 / 4,
    "bnpo": 18 / 5 / 4,  # token mean
    "dr_grpo": 18 / (2 * 10) / 4,  # sum / (B x max_completion_length)
    "luspo": (3 + 15) / 2 / 4,  # per-sequence sums, their mean
    "dapo": 18 / (20 / 2 * 4 / 2),  # sum / (items per process x accumulation / steps_per_generation)
    "cispo": 18 / (20 / 2 * 4 / 2),
    "vespo": 18 / (20 / 2 * 4 / 2),
}
HAND_EVAL = {  # no accumulation and no rescaling in evaluation
    "grpo": 3.25,
    "sapo": 3.25,
    "bnpo": 3.6,
    "dr_grpo": 0.9,
    "luspo": 9.0,
    "dapo": 1.8,
    "cispo": 1.8,
    "vespo": 1.8,
}


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("training", [True, False])
def test_aggregation_by_hand(loss_type, training):
    got = aggregate_like_trl(
        VALUES,
        MASK,
        loss_type,
        training=training,
        accumulation_steps=4,
        steps_per_generation=2,
        num_items_in_batch=torch.tensor(20.0),
        num_processes=2,
        max_completion_length=10,
    )
    assert got.item() == pytest.approx((HAND if training else HAND_EVAL)[loss_type])


def test_aggregation_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="'dapo'"):
        aggregate_like_trl(VALUES, MASK, "gspo", training=True)
    with pytest.raises(ValueError, match="num_items_in_batch"):
        aggregate_like_trl(VALUES, MASK, "dapo", training=True)
    with pytest.raises(ValueError, match="max_completion_length"):
        aggregate_like_trl(VALUES, MASK, "dr_grpo", training=True)


# ---------------------------------------------------------------- config
@pytest.mark.parametrize("loss_type, level", SETUPS, ids=SETUP_IDS)
@pytest.mark.parametrize("estimator", ["k2", "low_var_kl"])
def test_every_loss_type_takes_every_estimator(loss_type, level, estimator):
    c = DLERConfig(**BASE, loss_type=loss_type, importance_sampling_level=level, kl_estimator=estimator)
    assert (c.loss_type, c.kl_estimator) == (loss_type, estimator)


def test_liger_is_accepted_with_k2():
    # TRL 1.16 applies Liger's layer kernels only (fused_linear_cross_entropy forced off): the loss, and the
    # per-token log-probs the correction reads, stay in `_compute_loss`.
    assert DLERConfig(**BASE, use_liger_kernel=True).kl_estimator == "k2"
    assert DLERConfig(**BASE, use_liger_kernel=True, kl_estimator="k3").use_liger_kernel


def test_refusals_name_the_reason():
    with pytest.raises(ValueError, match=r"loss_type='gspo' is not one of .*'grpo'.*'luspo'"):
        DLERConfig(**BASE, loss_type="gspo")
    with pytest.raises(ValueError, match="use_bias_correction_kl=False or kl_estimator='k3'"):
        DLERConfig(**BASE, loss_type="grpo", use_bias_correction_kl=True)
    assert DLERConfig(**BASE, loss_type="grpo", use_bias_correction_kl=True, beta=0.0).beta == 0.0  # no KL term


# ---------------------------------------------------------------- the loss on the tiny model (trainers: slow)
B, P, T, BETA, ACCUMULATION = 8, 3, 6, 0.5, 3


def by_loop(values, mask, loss_type, trainer, inputs):
    """TRL's aggregation of `loss_type`, written as loops over the sequences and their kept tokens."""
    rows = [values[i][mask[i].bool()] for i in range(values.size(0))]
    training = trainer.model.training
    accumulation = ACCUMULATION if training else 1
    if loss_type in ("dapo", "cispo", "vespo"):
        tokens = inputs["num_items_in_batch"] / trainer.accelerator.num_processes
        if training:
            tokens = tokens * ACCUMULATION / trainer.args.steps_per_generation
        return sum(r.sum() for r in rows) / tokens
    if loss_type in ("grpo", "sapo"):
        total = sum(r.sum() / len(r) for r in rows) / len(rows)
    elif loss_type == "bnpo":
        total = sum(r.sum() for r in rows) / sum(len(r) for r in rows)
    elif loss_type == "dr_grpo":
        total = sum(r.sum() for r in rows) / (len(rows) * trainer.args.max_completion_length)
    else:  # luspo
        total = sum(r.sum() for r in rows) / len(rows)
    return total / accumulation


def build(tmp_path, model_dir, loss_type, level="token", estimator="k2"):
    args = tiny_config(
        tmp_path, loss_type=loss_type, importance_sampling_level=level, kl_estimator=estimator, beta=BETA
    )
    return DLERTrainer(model=model_dir, reward_funcs=even_length, args=args, train_dataset=addition_dataset())


def policy_logps(trainer, inputs):
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    logps, *_ = GRPOTrainer._get_per_token_logps_and_entropies(trainer, trainer.model, ids, attention, T)
    return logps


def hand_batch(trainer):
    """8 sequences with 1..6 completion tokens, mixed advantages, an older policy (some ratios clipped) and a
    reference far enough from the policy for low_var_kl's clamp to bind on some tokens."""
    g = torch.Generator().manual_seed(0)
    lengths = torch.tensor([1, 2, 3, 4, 5, 6, 6, 3])
    mask = (torch.arange(T) < lengths[:, None]).long()
    inputs = {
        "prompt_ids": torch.randint(2, 512, (B, P), generator=g),
        "prompt_mask": torch.ones(B, P, dtype=torch.long),
        "completion_ids": torch.randint(2, 512, (B, T), generator=g) * mask,
        "completion_mask": mask,
        "advantages": torch.randn(B, generator=g),
        "num_items_in_batch": torch.tensor(float(mask.sum() + 23)),  # the generation batch's other micro-batch
    }
    with torch.no_grad():
        logps = policy_logps(trainer, inputs)
    inputs["old_per_token_logps"] = logps + 0.3 * torch.randn(B, T, generator=g)
    inputs["ref_per_token_logps"] = logps + 4.0 * torch.rand(B, T, generator=g)
    return inputs


def expected_loss(trainer, inputs, estimator_fn):
    """TRL's own loss with no KL term, plus beta x the estimator aggregated by `by_loop`."""
    trainer.beta = 0.0
    try:
        policy = GRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    finally:
        trainer.beta = BETA
    kl = estimator_fn(policy_logps(trainer, inputs), inputs["ref_per_token_logps"])
    return policy + BETA * by_loop(kl, inputs["completion_mask"], trainer.loss_type, trainer, inputs)


def grads(loss, model):
    params = [p for p in model.parameters() if p.requires_grad]
    return [g for g in torch.autograd.grad(loss, params, allow_unused=True) if g is not None]


CASES = [(t, level, "k2", True) for t, level in SETUPS] + [
    ("grpo", "sequence", "low_var_kl", True),
    ("dr_grpo", "token", "low_var_kl", True),
    ("grpo", "token", "k2", False),  # evaluation: no accumulation, no rescaling
    ("dapo", "token", "low_var_kl", False),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    "loss_type, level, estimator, training",
    CASES,
    ids=[f"{t}-{lv}-{e}-{'train' if tr else 'eval'}" for t, lv, e, tr in CASES],
)
def test_dler_loss_is_trl_loss_with_the_estimator(tmp_path, tiny_model_dir, loss_type, level, estimator, training):
    trainer = build(tmp_path, tiny_model_dir, loss_type, level, estimator)
    trainer.model.train(training)
    if training:  # set by train(); evaluation before any training has none
        trainer.current_gradient_accumulation_steps = ACCUMULATION
    inputs = hand_batch(trainer)
    estimator_fn = {"k2": kl_k2, "low_var_kl": kl_low_var}[estimator]
    if estimator == "low_var_kl":  # the clamp binds on some tokens
        assert (kl_k3(policy_logps(trainer, inputs), inputs["ref_per_token_logps"]) > 10).any()

    loss = trainer.compute_loss(trainer.model, inputs)
    want = expected_loss(trainer, inputs, estimator_fn)
    assert torch.allclose(loss, want, rtol=1e-5, atol=1e-7)
    for got_grad, want_grad in zip(grads(loss, trainer.model), grads(want, trainer.model), strict=True):
        assert torch.allclose(got_grad, want_grad, rtol=1e-4, atol=1e-6)
    mode = "train" if training else "eval"
    assert len(trainer._metrics[mode][f"dler/kl_{estimator}"]) == 1

    # the correction matters here: TRL's own k3 loss is measurably different
    trl_k3 = GRPOTrainer._compute_loss(trainer, trainer.model, inputs)
    assert not math.isclose(trl_k3.item(), loss.item(), rel_tol=1e-3)
    assert not torch.allclose(expected_loss(trainer, inputs, kl_k3), want, rtol=1e-3)


@pytest.mark.slow
def test_the_correction_follows_the_loss_type(tmp_path, tiny_model_dir, monkeypatch):
    """Switched off, or aggregated as 'dapo' under 'grpo' (dler's former behaviour), the loss is not k2's."""
    trainer = build(tmp_path, tiny_model_dir, "grpo")
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = ACCUMULATION
    inputs = hand_batch(trainer)
    want = expected_loss(trainer, inputs, kl_k2)
    assert torch.allclose(trainer.compute_loss(trainer.model, inputs), want, rtol=1e-5)

    monkeypatch.setattr(dler.kl_loss, "aggregate_like_trl", lambda values, *a, **k: values.sum() * 0.0)
    assert not torch.allclose(trainer.compute_loss(trainer.model, inputs), want, rtol=1e-3)

    def as_dapo(values, mask, loss_type, **kwargs):
        return aggregate_like_trl(values, mask, "dapo", **kwargs)

    monkeypatch.setattr(dler.kl_loss, "aggregate_like_trl", as_dapo)
    assert not torch.allclose(trainer.compute_loss(trainer.model, inputs), want, rtol=1e-3)


# ---------------------------------------------------------------- training
@pytest.mark.slow
@pytest.mark.parametrize("loss_type, level", SETUPS, ids=SETUP_IDS)
def test_two_training_steps_with_k2(tmp_path, tiny_model_dir, loss_type, level):
    trainer = build(tmp_path, tiny_model_dir, loss_type, level)
    trainer.train()
    logged = [row for row in trainer.state.log_history if "dler/kl_k2" in row]
    assert trainer.state.global_step == 2 and len(logged) == 2
    assert all(math.isfinite(row["loss"]) and row["dler/kl_k2"] >= 0 for row in logged)
    assert logged[-1]["dler/kl_k2"] > 0  # the first update moved the policy away from the reference
