"""Decide, then score: dropped groups never reach TRL's scoring, which runs once on exactly the trained batch."""

import pytest
import torch
from helpers import addition_dataset, alternating_if, even_length, tiny_config
from trl import GRPOTrainer

from dler import DLERTrainer
from dler.trainer import Replay

pytestmark = pytest.mark.slow
G = 4
QUARTER = alternating_if(lambda a: a % 4 == 0)  # a in 0..7: a quarter of the prompts have signal


def make_trainer(tmp_path, model_dir, reward=QUARTER, **overrides):
    settings = dict(truncation_length=16, dynamic_sampling_metric="correctness", **overrides)
    return DLERTrainer(
        model=model_dir, reward_funcs=reward, args=tiny_config(tmp_path, **settings), train_dataset=addition_dataset()
    )


def batch(a_values):
    rows = [{"prompt": [{"role": "user", "content": f"{a} + 0"}], "answer": str(a), "a": a} for a in a_values]
    return [dict(r) for r in rows for _ in range(G)]


@pytest.fixture
def logprob_rows(monkeypatch):
    """Rows passed through no-grad log-prob forwards (old policy, reference), counted at TRL's function."""
    counted = []
    original = GRPOTrainer._get_per_token_logps_and_entropies

    def counting(self, model, input_ids, *args, **kwargs):
        if not torch.is_grad_enabled():
            counted.append(input_ids.size(0))
        return original(self, model, input_ids, *args, **kwargs)

    monkeypatch.setattr(GRPOTrainer, "_get_per_token_logps_and_entropies", counting)
    return counted


def test_dropped_groups_cost_no_logprob_forward(tmp_path, tiny_model_dir, logprob_rows):
    trainer = make_trainer(tmp_path, tiny_model_dir)
    assert trainer.beta > 0 and trainer.args.keeps_behaviour_logps  # old and reference log-probs are both computed
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch((0, 1, 2, 3)))
    generated = trainer._metrics["train"]["dynamic_sampling/prompts_generated_per_kept"][-1] * 16
    assert generated >= 32, "the step needed several rounds: most generated groups were dropped"
    assert sum(logprob_rows) == 2 * 16, "old + reference log-probs for the 16 trained rows only"
    assert out["old_per_token_logps"].shape[0] == out["ref_per_token_logps"].shape[0] == 16
    assert out["num_items_in_batch"].item() == out["completion_mask"].sum().item()


def test_completions_table_lists_the_trained_batch_with_dler_columns(tmp_path, tiny_model_dir):
    trainer = make_trainer(tmp_path, tiny_model_dir)
    trainer.model.train()
    out = trainer._generate_and_score_completions(batch((0, 1, 2, 3)))
    logs = trainer._logs
    assert len(logs["prompt"]) == len(logs["completion"]) == 16  # one scoring call: the trained rows, nothing else
    assert all(p[-1]["content"].split(" + ")[0] in ("0", "4") for p in logs["prompt"])  # only groups with signal
    assert list(logs["advantages"]) == pytest.approx(out["advantages"].tolist())  # DLER's advantages, not TRL's
    assert len(logs["extra"]["shaped_reward"]) == len(logs["extra"]["budget"]) == 16
    assert set(logs["rewards"]["reward"]) == {0.0, 1.0}


def test_scoring_fails_loudly_if_trl_stops_calling_the_replayed_hooks(tmp_path, tiny_model_dir, monkeypatch):
    trainer = make_trainer(tmp_path, tiny_model_dir, dynamic_sampling=False)
    trainer.model.train()

    def scoring_without_rewards(self, inputs):  # as if a TRL upgrade computed rewards another way
        self._generate([x["prompt"] for x in inputs])
        return {}

    monkeypatch.setattr(GRPOTrainer, "_generate_and_score_completions", scoring_without_rewards)
    with pytest.raises(RuntimeError, match=r"'_calculate_rewards': 0.*pins trl==1.16.0"):
        trainer._generate_and_score_completions(batch((4, 5, 6, 7)))
    replay = Replay([], torch.zeros(0, 1))
    replay.calls = {"_generate": 1, "_calculate_rewards": 2}
    with pytest.raises(RuntimeError, match="not once each"):
        replay.check()


def test_evaluation_leaves_training_state_alone(tmp_path, tiny_model_dir):
    trainer = DLERTrainer(
        model=tiny_model_dir,
        reward_funcs=even_length,
        args=tiny_config(
            tmp_path,
            penalty="laser_d",
            penalty_kwargs={"grid": [4, 8, 12, 16], "update_every": 1},
            truncation_length=16,
            dynamic_sampling=False,  # prompts cut to their last 4 tokens all look alike: groups may lack signal
            max_prompt_length=4,
            per_device_eval_batch_size=8,
            eval_strategy="steps",
            eval_steps=1,
        ),
        train_dataset=addition_dataset(),
        eval_dataset=addition_dataset(16),
    )
    trainer.model.train()
    trainer._generate_and_score_completions(batch((4, 5, 6, 7)))
    before = (repr(trainer.penalty.state_dict()), trainer.dler_state_dict(), trainer.rank_state_dict()["carry"])
    trainer.evaluate()
    after = (repr(trainer.penalty.state_dict()), trainer.dler_state_dict(), trainer.rank_state_dict()["carry"])
    assert after == before and trainer.dler_state_dict()["prompts_truncated"] == 4


def test_tools_are_refused_when_batches_are_decided_before_scoring(tmp_path, tiny_model_dir):
    def lookup(x: int) -> int:
        """Look x up.

        Args:
            x: the number.
        """
        return x

    with pytest.raises(ValueError, match="tools .* Train those with trl.GRPOTrainer"):
        DLERTrainer(
            model=tiny_model_dir,
            reward_funcs=even_length,
            args=tiny_config(tmp_path),
            train_dataset=addition_dataset(),
            tools=[lookup],
        )
