"""`DLERTrainer`: TRL's `GRPOTrainer` with the DLER recipe.

Training batches are decided first and scored once ("decide, then score"): each dynamic-sampling round runs TRL's
`_generate` and the reward functions only; the length penalty shapes the rewards, groups without signal are
dropped, and the kept groups are cut to the batch size and balanced across ranks as plain data. Then TRL's own
`_generate_and_score_completions` runs once on exactly that batch, replaying the cached generations and rewards
through its `_generate` and `_calculate_rewards` hooks, so log-probs, padding, `num_items_in_batch`, logging and every
output key are TRL's, and no forward pass is spent on a dropped group. DLER then replaces the advantages with its
batch-wise normalised ones. The rounds live in `dler/rounds.py`, their state in `dler.sampling.SamplingState`.
Generating less (docs/dynamic_sampling.md) sizes rounds from the kept fraction, carries surplus groups to later
batches and skips prompts without recent signal. Clip-higher is TRL's own `epsilon_high`.
"""

from __future__ import annotations

import copy
import json
import logging
import os

import torch
from accelerate.utils import gather
from datasets import Dataset, IterableDataset
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.trainer.utils import is_async_callable

from dler.advantages import compute_advantages
from dler.budgets import budget_for_accuracy
from dler.config import DLERConfig
from dler.kl import kl_penalty_terms
from dler.penalties import LengthPenalty, RolloutGroup
from dler.reward_guard import GuardedReward
from dler.rounds import DynamicSampling, DynamicSamplingExhausted, Replay
from dler.runs import leave_process_group_at_exit, write_manifest
from dler.sampling import RoundScores, SamplingState

__all__ = ["DLERTrainer", "DynamicSamplingExhausted"]

logger = logging.getLogger(__name__)

STATE_FILE = "dler_state.json"  # the run's sampling state and counters: the same on every rank
RANK_FILE = "dler_rank{rank}.pt"  # per rank: the penalty's state and the rows of the groups this rank carries
STREAM_SEED_OFFSET = 7919  # DLER's prompt stream is independent of TRL's own sampler


def _is_plain_function(func) -> bool:
    return callable(func) and not isinstance(func, torch.nn.Module) and not is_async_callable(func)


class CloseRewardFunctions(TrainerCallback):
    """Stop reward functions' worker pools (e.g. `dler.rewards.MathReward`) when training ends; they restart lazily."""

    def __init__(self, reward_funcs):
        self.reward_funcs = reward_funcs

    def on_train_end(self, args, state, control, **kwargs):
        for func in self.reward_funcs:
            if callable(getattr(func, "close", None)):
                func.close()


class DLERTrainer(DynamicSampling, GRPOTrainer):
    """GRPO with DLER: truncation reward shaping, batch-wise advantage normalisation, clip-higher, dynamic sampling
    and difficulty-aware budgets. Takes every `GRPOTrainer` argument, a [`DLERConfig`] as `args`, and optionally a
    `penalty` instance (a [`LengthPenalty`]) that overrides the config's `penalty` / `penalty_kwargs`.
    """

    _tag_names = ["trl", "grpo", "dler"]

    def __init__(self, model, reward_funcs, args: DLERConfig | None = None, *trl_args, penalty=None, **kwargs):
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = DLERConfig(f"{name.split('/')[-1]}-DLER")
        if not isinstance(args, DLERConfig):
            raise TypeError(f"DLERTrainer needs a DLERConfig as `args`, got {type(args).__name__}")
        train_dataset = kwargs.get("train_dataset", trl_args[0] if trl_args else None)
        if args.dynamic_sampling and isinstance(train_dataset, IterableDataset):
            raise ValueError(
                "dynamic_sampling draws extra prompts by index and needs a map-style `datasets.Dataset`; got an "
                "IterableDataset. Load the dataset without streaming, or set dynamic_sampling=False."
            )
        if penalty is not None and not isinstance(penalty, LengthPenalty):
            raise TypeError(f"penalty must be a dler.penalties.LengthPenalty, got {type(penalty).__name__}")
        self.penalty = penalty or args.build_penalty()
        self._refuse_unsupported(
            [name for name in ("tools", "environment_factory", "rollout_func") if kwargs.get(name)]
        )
        super().__init__(model, reward_funcs, args, *trl_args, **kwargs)
        self._refuse_unsupported(["a vision-language model"] if self._is_vlm else [])
        self.reward_funcs = [  # plain synchronous functions fail naming themselves and the sample
            GuardedReward(func, name, timeout=args.reward_timeout) if _is_plain_function(func) else func
            for func, name in zip(self.reward_funcs, self.reward_func_names, strict=True)
        ]
        self.add_callback(CloseRewardFunctions(self.reward_funcs))
        leave_process_group_at_exit()  # any script, not only the recipes, exits cleanly on every rank
        self._budget_bands = args.budget_bands
        self._stream_dataset: Dataset | None = None  # the training set as TRL's dataloader sees it, on first use
        self.sampling = SamplingState(
            args.seed + STREAM_SEED_OFFSET,
            shuffle=self.shuffle_dataset,
            max_carry_age=args.max_carry_age,
            skip_after=args.skip_after if args.skip_no_signal_prompts else None,
            skip_exploration=args.skip_exploration,
        )
        self._prompts_truncated = 0  # prompts cut to max_prompt_length over the run
        self._kl_capture: list | None = None  # policy log-probs seen while TRL computes the loss
        self._replay: Replay | None = None  # set while TRL scores a decided batch
        self._eval_scores: RoundScores | None = None  # what `_calculate_rewards` scored in TRL's last eval call

    @staticmethod
    def _refuse_unsupported(features: list[str]) -> None:
        if features:
            raise ValueError(
                f"DLERTrainer decides each batch from text rollouts before TRL scores it, which {', '.join(features)} "
                "would bypass (tool calls, environments and images are generated and scored inside TRL's own call). "
                "Train those with trl.GRPOTrainer."
            )

    # ------------------------------------------------------------------ prompts and sampling
    def _tokenize_prompts(self, prompts: list):
        """TRL's tokenisation (chat template included), then the `max_prompt_length` cap: a longer prompt keeps its
        last tokens, as the released run's left truncation. Counted over every rank and logged."""
        prompt_ids, images, multimodal_fields = super()._tokenize_prompts(prompts)
        cap = self.args.max_prompt_length
        if cap is None:
            return prompt_ids, images, multimodal_fields
        if images is not None or multimodal_fields:
            raise ValueError("max_prompt_length cannot cut multimodal prompts (their image tokens); unset it")
        cut = [len(ids) > cap for ids in prompt_ids]
        prompt_ids = [list(ids[-cap:]) if long else ids for ids, long in zip(prompt_ids, cut, strict=True)]
        counts = gather(torch.tensor([[sum(cut), len(cut)]], device=self.accelerator.device)).sum(dim=0)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["dler/prompt_truncated_frac"].append(counts[0].item() / max(counts[1].item(), 1))
        if mode == "train":  # evaluation leaves the run's counters alone
            self._prompts_truncated += int(counts[0]) // self.num_generations
            self._metrics[mode]["dler/prompts_truncated_total"] = [float(self._prompts_truncated)]
        return prompt_ids, images, multimodal_fields

    def _generate(self, prompts: list):
        """TRL's generation, or, while TRL scores a decided batch, that batch's cached generations."""
        if self._replay is None:
            return super()._generate(prompts)
        replay = self._replay
        replay.call("_generate")
        if prompts != [x["prompt"] for x in replay.rows("inputs")]:
            raise RuntimeError("TRL asked to generate for prompts other than the decided batch's")
        logprobs = replay.rows("logprobs") if replay.groups[0]["logprobs"] is not None else None
        completions = replay.rows("completions")
        return replay.rows("prompt_ids"), replay.rows("completion_ids"), None, completions, logprobs, {}, None, []

    def _generate_single_turn(self, prompt_ids, images, multimodal_fields, num_generations, **kwargs):
        """TRL's generation; evaluation samples at `eval_temperature` (TRL would use the training temperature)."""
        temperature = self.args.eval_temperature
        if self.model.training or temperature is None:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, **kwargs)
        backend = getattr(self, "vllm_generation", None) if self.use_vllm else None
        saved = (self.temperature, getattr(self, "generation_kwargs", None), getattr(self, "generation_config", None))
        self.temperature = temperature
        if backend is not None:
            saved_backend, backend.temperature = backend.temperature, temperature
        else:
            self.generation_kwargs = {**self.generation_kwargs, "temperature": temperature}
            self.generation_config = copy.deepcopy(self.generation_config)
            self.generation_config.temperature = temperature
        try:
            return super()._generate_single_turn(prompt_ids, images, multimodal_fields, num_generations, **kwargs)
        finally:
            self.temperature, self.generation_kwargs, self.generation_config = saved
            if backend is not None:
                backend.temperature = saved_backend

    # ------------------------------------------------------------------ KL estimator
    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, entropies, *rest = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._kl_capture is not None:  # the policy's log-probs of the loss being computed
            self._kl_capture.append(logps)
        return (logps, entropies, *rest)

    def _compute_loss(self, model, inputs):
        """TRL's loss; with `kl_estimator` 'k2' or 'low_var_kl', plus beta x (estimator - k3) aggregated as TRL's
        'dapo' aggregates its k3 term, which turns TRL's k3 into the chosen estimator in value and gradient."""
        if self.args.kl_estimator == "k3" or self.beta == 0.0:
            return super()._compute_loss(model, inputs)
        self._kl_capture = []
        try:
            loss = super()._compute_loss(model, inputs)
            (logps,) = self._kl_capture
        finally:
            self._kl_capture = None
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
        k3, kl = kl_penalty_terms(logps, inputs["ref_per_token_logps"], self.args.kl_estimator)
        normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
        if self.model.training:  # as TRL's 'dapo': the generation batch's tokens, rescaled to one accumulation window
            normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
        loss = loss + self.beta * ((kl - k3) * mask).sum() / normalizer
        mode = "train" if self.model.training else "eval"
        kl_mean = (kl.detach() * mask).sum() / mask.sum().clamp(min=1.0)
        self._metrics[mode][f"dler/kl_{self.args.kl_estimator}"].append(
            self.accelerator.gather(kl_mean).nanmean().item()
        )
        return loss

    # ------------------------------------------------------------------ rewards
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        if self._replay is not None:  # TRL scoring a decided batch: its rewards, not computed again
            replay = self._replay
            replay.call("_calculate_rewards")
            self._log_completion_extra("shaped_reward", [x for g in replay.groups for x in g["shaped"]])
            self._log_completion_extra("budget", [x for g in replay.groups for x in g["budget"]])
            return replay.rewards.to(self.accelerator.device)
        rewards, self._eval_scores = self._score(inputs, prompts, completions, completion_ids_list)
        return rewards

    def _score(self, inputs, prompts, completions, completion_ids_list) -> tuple[torch.Tensor, RoundScores]:
        """Run the reward functions (TRL's `_calculate_rewards`), then shape each training group with the length
        penalty; evaluation keeps plain correctness. Returns TRL's gathered rewards and the gathered scores."""
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        device, n = rewards_per_func.device, len(prompts)
        group_size = self.num_generations if self.model.training else self.num_generations_eval
        if n % group_size:
            raise ValueError(f"{n} rollouts on this rank do not form whole groups of {group_size}")
        local = rewards_per_func[self.accelerator.process_index * n : (self.accelerator.process_index + 1) * n]
        correctness = (local * self.reward_weights.to(device)).nansum(dim=1).cpu()
        lengths = torch.tensor([len(ids) for ids in completion_ids_list])
        finished = torch.tensor([len(ids) > 0 and ids[-1] in self.eos_token_ids for ids in completion_ids_list])
        if self.model.training:
            shaped, over_budget, budgets = self._shape_groups(
                inputs, completions, correctness, lengths, finished, group_size
            )
        else:  # evaluation scores correctness, without the length penalty (released run)
            shaped, over_budget = [correctness], [~finished]
            budgets = [torch.full((n,), float(self.max_completion_length))]
        stats = torch.stack(
            [torch.cat(shaped), correctness, lengths, torch.cat(over_budget), torch.cat(budgets)], dim=1
        ).to(device=device, dtype=torch.float32)
        everything = gather(stats).cpu()
        scores = RoundScores(
            shaped=everything[:, 0],
            correctness=everything[:, 1],
            lengths=everything[:, 2],
            over_budget=everything[:, 3].bool(),
            budgets=everything[:, 4],
            rewards=rewards_per_func.cpu(),
        )
        return rewards_per_func, scores

    def _shape_groups(self, inputs, completions, correctness, lengths, finished, group_size):
        """Each group's shaped rewards, over-budget flags and budget (per rollout), from the length penalty."""
        shaped, over_budget, budgets = [], [], []
        for start in range(0, len(correctness), group_size):
            rows = slice(start, start + group_size)
            accuracy = (correctness[rows] > 0).float().mean().item()
            group = RolloutGroup(
                correctness=correctness[rows],
                lengths=lengths[rows],
                finished=finished[rows],
                budget=budget_for_accuracy(accuracy, self._budget_bands, self.args.truncation_length),
                step=self.state.global_step,
                prompt=inputs[start],
                completions=[c if isinstance(c, str) else c[-1]["content"] for c in completions[rows]],
                max_length=self.max_completion_length,
            )
            rewards = torch.as_tensor(self.penalty(group), dtype=torch.float32).reshape(-1)
            if rewards.numel() != group_size or not torch.isfinite(rewards).all():
                raise ValueError(
                    f"penalty {type(self.penalty).__name__} returned {rewards.tolist()} for a group of {group_size}: "
                    "it must return one finite reward per rollout"
                )
            budget = self.penalty.effective_budget(group)
            shaped.append(rewards)
            over_budget.append((group.lengths > budget) | ~group.finished)
            budgets.append(torch.full((group_size,), budget))
        return shaped, over_budget, budgets

    def _advantages(self, rewards, correctness, lengths, group_size) -> torch.Tensor:
        args = self.args
        return compute_advantages(
            rewards,
            group_size,
            normalization=args.advantage_normalization,
            lengths=lengths,
            weighting=args.advantage_weighting,
            correct=correctness > 0,
            correct_boost=args.correct_advantage_boost,
        )

    def _log_scores(self, mode: str, scores: list[RoundScores], group_size: int) -> None:
        metrics = self._metrics[mode]
        correctness = torch.cat([s.correctness for s in scores])
        if mode == "eval":  # unshaped: accuracy, length and how often the generation cap cut a response
            metrics["dler/accuracy"].append((correctness > 0).float().mean().item())
            metrics["dler/mean_length"].append(torch.cat([s.lengths for s in scores]).float().mean().item())
            metrics["dler/truncated_frac"].append(torch.cat([s.over_budget for s in scores]).float().mean().item())
            return
        metrics["dler/correctness"].append(correctness.mean().item())
        metrics["dler/shaped_reward"].append(torch.cat([s.shaped for s in scores]).mean().item())
        metrics["dler/over_budget_frac"].append(torch.cat([s.over_budget for s in scores]).float().mean().item())
        budgets = torch.cat([s.budgets[::group_size] for s in scores])
        metrics["dler/budget_mean"].append(budgets.mean().item())
        metrics["dler/budget_min"].append(budgets.min().item())

    # ------------------------------------------------------------------ batches: decide, then score
    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            return self._score_eval(inputs)
        trained, quota = self._decide_batch(inputs)
        return self._score_batch(trained, quota)

    def _score_eval(self, inputs):
        """TRL's evaluation call, with DLER's advantages (so TRL's eval loss is DLER's) on plain correctness."""
        self._eval_scores = None
        output = super()._generate_and_score_completions(inputs)
        scores, group_size = self._eval_scores, self.num_generations_eval
        if scores is None:
            raise RuntimeError("TRL's evaluation call did not compute rewards through `_calculate_rewards`")
        advantages = self._advantages(scores.shaped, scores.correctness, scores.lengths, group_size)
        self._relog_advantages(advantages)
        n = len(inputs)
        output["advantages"] = advantages[self.accelerator.process_index * n :][:n].to(self.accelerator.device)
        self._log_scores("eval", [scores], group_size)
        return output

    def _relog_advantages(self, values: torch.Tensor) -> None:
        """Show DLER's advantages in TRL's completions table instead of the ones TRL computed from raw rewards."""
        log = self._logs["advantages"]
        n = min(len(values), len(log))
        for _ in range(n):
            log.pop()
        log.extend(values[len(values) - n :].tolist())

    # ------------------------------------------------------------------ checkpoints
    def dler_state_dict(self) -> dict:
        """What DLER adds to a run's state that is the same on every rank (saved as `dler_state.json`)."""
        return {**self.sampling.state_dict(), "prompts_truncated": self._prompts_truncated}

    def load_dler_state_dict(self, state: dict) -> None:
        self.sampling.load_state_dict(state)
        self._prompts_truncated = state.get("prompts_truncated", 0)

    def rank_state_dict(self) -> dict:
        """What differs between ranks: the penalty's state (it sees this rank's groups) and the carried groups."""
        return {
            "num_processes": self.accelerator.num_processes,
            "penalty": self.penalty.state_dict(),
            "carry": self.sampling.carry_state_dict(),
        }

    def load_rank_state_dict(self, state: dict) -> None:
        if state["carry"] and state["num_processes"] != self.accelerator.num_processes:
            raise ValueError(
                f"The checkpoint carries groups generated on {state['num_processes']} ranks; this run has "
                f"{self.accelerator.num_processes}. Resume on as many ranks, or set max_carry_age=0."
            )
        self.penalty.load_state_dict(state["penalty"])
        self.sampling.load_carry_state_dict(state["carry"])

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        os.makedirs(folder, exist_ok=True)
        if self.args.should_save:
            with open(os.path.join(folder, STATE_FILE), "w") as f:
                json.dump(self.dler_state_dict(), f, indent=2)
        torch.save(self.rank_state_dict(), os.path.join(folder, RANK_FILE.format(rank=self.accelerator.process_index)))
        self.accelerator.wait_for_everyone()  # every rank has written: the checkpoint is whole
        if self.args.should_save:
            write_manifest(folder, self.state.global_step)

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, STATE_FILE)
        rank_path = os.path.join(checkpoint, RANK_FILE.format(rank=self.accelerator.process_index))
        if not os.path.exists(path):
            logger.warning("Checkpoint %s has no %s: DLER's sampling state starts fresh.", checkpoint, STATE_FILE)
            return
        with open(path) as f:
            self.load_dler_state_dict(json.load(f))
        if os.path.exists(rank_path):
            self.load_rank_state_dict(torch.load(rank_path, weights_only=True))
        else:
            logger.warning("Checkpoint %s has no %s: the penalty's state starts fresh.", checkpoint, rank_path)
