"""`DLERTrainer`: TRL's `GRPOTrainer` with the DLER recipe.

Two narrow overrides keep TRL's own generation, scoring and loss code upstream:
- `_calculate_rewards` shapes each prompt's group with the length penalty (per-prompt budgets for DA-DLER) and
  gathers the shaped rewards, correctness and lengths of every rank;
- `_generate_and_score_completions` is wrapped (never copied) by the dynamic-sampling loop: call TRL, drop groups
  with no signal, call TRL again on fresh prompts until the batch is full, cut it to size, even it out across
  ranks, and recompute the advantages (batch-wise normalisation) and `num_items_in_batch` on the final batch.
  Optionally it generates less (docs/dynamic_sampling.md): a first round sized from the kept fraction, surplus
  groups carried to later batches, prompts without recent signal skipped.
Clip-higher is TRL's own `epsilon_high`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass

import torch
from accelerate.utils import gather, gather_object
from datasets import Dataset, IterableDataset
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.trainer.utils import is_async_callable

from dler.advantages import compute_advantages
from dler.batching import check_keys, concat_rows, take_rows
from dler.budgets import budget_for_accuracy
from dler.config import DLERConfig
from dler.kl import kl_penalty_terms
from dler.penalties import LengthPenalty, RolloutGroup
from dler.reward_guard import GuardedReward
from dler.sampling import (
    CarryBuffer,
    PromptStream,
    SkipHistory,
    assign_groups,
    classify_groups,
    draw_prompts,
    first_round_prompts,
    later_round_prompts,
    partial_quota,
    update_kept_fraction,
)

logger = logging.getLogger(__name__)

STATE_FILE = "dler_state.json"
CARRY_FILE = "dler_carry_rank{rank}.pt"  # per rank: the carried groups' rows live on the rank that generated them
STREAM_SEED_OFFSET = 7919  # extra-round prompts come from a stream independent of TRL's own sampler


@dataclass
class RoundScores:
    """What one call of TRL's scoring produced, gathered over every rank (rank-major, as TRL lays it out)."""

    shaped: torch.Tensor
    correctness: torch.Tensor
    lengths: torch.Tensor
    over_budget: torch.Tensor
    budgets: torch.Tensor  # one per rollout (its group's budget)

    def rows(self, group: int, group_size: int) -> slice:
        return slice(group * group_size, (group + 1) * group_size)

    def group(self, group: int, group_size: int) -> RoundScores:
        rows = self.rows(group, group_size)
        return RoundScores(*(getattr(self, name)[rows] for name in self.__dataclass_fields__))

    @staticmethod
    def cat(parts: list[RoundScores]) -> RoundScores:
        return RoundScores(
            *(torch.cat([getattr(p, name) for p in parts]) for name in RoundScores.__dataclass_fields__)
        )


@dataclass
class GroupRef:
    """A group with signal: the generation batch, round and global group index that produced it, the rank holding
    its rows, and its scores. The same on every rank; only the owner holds the rows."""

    born: int
    round: int
    group: int
    owner: int
    scores: RoundScores

    @property
    def key(self) -> tuple[int, int, int]:
        return self.born, self.round, self.group


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


class DynamicSamplingExhausted(RuntimeError):
    """Raised on every rank at the same step when `max_sampling_rounds` ran out before the batch was full."""


class DLERTrainer(GRPOTrainer):
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
        super().__init__(model, reward_funcs, args, *trl_args, **kwargs)
        self.reward_funcs = [  # plain synchronous functions fail naming themselves and the sample
            GuardedReward(func, name) if _is_plain_function(func) else func
            for func, name in zip(self.reward_funcs, self.reward_func_names, strict=True)
        ]
        self.add_callback(CloseRewardFunctions(self.reward_funcs))
        self._budget_bands = args.budget_bands
        self._round: RoundScores | None = None
        self._prompt_stream: PromptStream | None = None
        self._pending_stream_state: dict | None = None  # restored from a checkpoint, applied on first use
        self._prompts_generated = 0  # over the run: prompts generated / prompts trained on
        self._prompts_trained = 0
        self._generations = 0  # generation batches so far: the clock of carried groups' ages
        self._kept_fraction: float | None = None  # moving average, sizes the first round (adaptive_first_round)
        self._carry = CarryBuffer(args.max_carry_age)
        self._carry_rows: dict[tuple, dict] = {}  # this rank's rows of the carried groups, by GroupRef.key
        self._skip = (
            SkipHistory(args.skip_after, args.skip_exploration, args.seed) if args.skip_no_signal_prompts else None
        )
        self._round_indices: list[int] = []  # dataset indices of the last round's prompts when drawn from the stream
        self._skipped = 0  # prompts skipped during the current step
        self._prompts_truncated = 0  # prompts cut to max_prompt_length over the run
        self._kl_capture: list | None = None  # policy log-probs seen while TRL computes the loss

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
        self._prompts_truncated += int(counts[0]) // self._group_size()
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["dler/prompt_truncated_frac"].append(counts[0].item() / max(counts[1].item(), 1))
        self._metrics[mode]["dler/prompts_truncated_total"] = [float(self._prompts_truncated)]
        return prompt_ids, images, multimodal_fields

    def _group_size(self) -> int:
        return self.num_generations if self.model.training else self.num_generations_eval

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
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        device = rewards_per_func.device
        group_size = self.num_generations if self.model.training else self.num_generations_eval
        n = len(prompts)
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
        self._log_completion_extra("shaped_reward", torch.cat(shaped).tolist())
        self._log_completion_extra("budget", torch.cat(budgets).tolist())
        everything = gather(stats).cpu()
        self._round = RoundScores(
            shaped=everything[:, 0],
            correctness=everything[:, 1],
            lengths=everything[:, 2],
            over_budget=everything[:, 3].bool(),
            budgets=everything[:, 4],
        )
        return rewards_per_func

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

    # ------------------------------------------------------------------ dynamic sampling
    def _generate_and_score_completions(self, inputs):
        if not self.model.training:
            output = super()._generate_and_score_completions(inputs)
            scores, group_size = self._round, self.num_generations_eval
            advantages = self._advantages(scores.shaped, scores.correctness, scores.lengths, group_size)
            self._relog_advantages(advantages)
            n = len(inputs)
            output["advantages"] = advantages[self.accelerator.process_index * n :][:n].to(self.accelerator.device)
            self._log_scores("eval", [scores], group_size)
            return output
        return self._sample_training_batch(inputs)

    def _sample_training_batch(self, inputs):
        """Generate, filter and refill until the batch is full; then cut, balance and re-score it."""
        group_size, num_processes, rank = (
            self.num_generations,
            self.accelerator.num_processes,
            self.accelerator.process_index,
        )
        quota = len(inputs) // group_size  # groups per rank in a full batch
        self._generations += 1
        self._skipped = 0
        carried = self._take_carried(quota * num_processes)
        output, scores, selected, rows, final_quota = self._generate_until_full(inputs, quota, carried)

        target = final_quota * num_processes
        trained, surplus = selected[:target], selected[target:]
        generated = sum(len(s.shaped) for s in scores) // group_size
        self._prompts_generated += generated
        self._prompts_trained += target
        metrics = self._metrics["train"]
        metrics["dynamic_sampling/rounds"].append(len(scores))
        metrics["dynamic_sampling/prompts_generated_per_kept"].append(generated / target)
        metrics["dynamic_sampling/run_prompts_generated_per_kept"].append(
            self._prompts_generated / self._prompts_trained
        )
        metrics["dynamic_sampling/partial_batch"].append(float(final_quota < quota))
        self._log_scores("train", scores, group_size)
        fresh_kept = sum(ref.born == self._generations for ref in selected)
        self._update_generating_less(trained, surplus, rows, fresh_kept, generated)

        if output is None:
            output, final_order = self._assemble(rows, trained, final_quota)
        else:  # the first round kept everything: TRL's batch stands, only the advantages change
            final_order = trained
            metrics["dynamic_sampling/groups_moved"].append(0.0)
        final = RoundScores.cat([ref.scores for ref in final_order])
        metrics["dler/batch_shaped_reward"].append(final.shaped.mean().item())
        advantages = self._advantages(final.shaped, final.correctness, final.lengths, group_size)
        last_round = torch.zeros(len(scores[-1].shaped))  # dropped groups do not train: advantage 0
        for k, ref in enumerate(final_order):
            if ref.key[:2] == (self._generations, len(scores) - 1):
                last_round[scores[-1].rows(ref.group, group_size)] = advantages[k * group_size : (k + 1) * group_size]
        self._relog_advantages(last_round)
        per_rank = len(advantages) // num_processes
        output["advantages"] = advantages[rank * per_rank : (rank + 1) * per_rank].to(self.accelerator.device)
        return output

    def _generate_until_full(self, inputs, quota, carried):
        """Call TRL round after round until `quota` groups per rank have signal (or the rounds run out), counting
        the `carried` groups first.

        Returns TRL's first output untouched when its round alone is exactly the batch (else None), the scores of
        every round, the selected groups (`GroupRef`, carried first, then in arrival order), this rank's rows of its
        selected groups by key, and the final quota (smaller than `quota` only for a partial batch). Only kept rows
        stay in memory.
        """
        args, group_size = self.args, self.num_generations
        num_processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        target = quota * num_processes
        selected = list(carried)
        rows = {ref.key: self._carry_rows.pop(ref.key) for ref in carried if ref.owner == rank}
        scores = []
        counts = {"kept": 0, "all_zero": 0, "all_positive": 0}
        round_inputs = self._first_round(inputs, quota, target - len(selected))
        while True:
            output = super()._generate_and_score_completions(round_inputs)
            scores.append(self._round)
            if args.dynamic_sampling:
                metric = self._round.shaped if args.dynamic_sampling_metric == "reward" else self._round.correctness
                signal = classify_groups(metric, group_size)
                keep = signal.keep
                counts["kept"] += int(signal.keep.sum())
                counts["all_zero"] += int(signal.all_zero.sum())
                counts["all_positive"] += int(signal.all_positive.sum())
                if self._skip is not None:  # every round came from the stream: its indices are known globally
                    for index, has_signal in zip(self._round_indices, keep.tolist(), strict=True):
                        self._skip.record(index, has_signal)
            else:
                keep = torch.ones(len(self._round.shaped) // group_size, dtype=torch.bool)
            round_index, per_rank = len(scores) - 1, len(keep) // num_processes
            if round_index == 0 and keep.all() and not selected and len(keep) == target:
                selected = [self._group_ref(round_index, g, per_rank) for g in range(len(keep))]
                break
            check_keys(output)
            for g in keep.nonzero().flatten().tolist():
                ref = self._group_ref(round_index, g, per_rank)
                selected.append(ref)
                if ref.owner == rank:
                    start = (g % per_rank) * group_size
                    rows[ref.key] = take_rows(output, slice(start, start + group_size))
            output = None
            if len(selected) >= target:
                break
            if args.max_sampling_rounds and len(scores) >= args.max_sampling_rounds:
                quota = self._on_exhausted(len(selected), target, counts, len(scores))
                break
            if not args.max_sampling_rounds and len(scores) in (10, 100, 1000):
                logger.warning(
                    "Dynamic sampling needed %d generation rounds for one batch (%d/%d groups with signal; %d all-zero,"
                    " %d all-positive). Consider max_sampling_rounds or filtering the data by solve rate.",
                    len(scores),
                    len(selected),
                    target,
                    counts["all_zero"],
                    counts["all_positive"],
                )
            generated = sum(len(s.shaped) for s in scores) // group_size
            round_inputs = self._next_prompts(
                self._later_round(quota, target - len(selected), counts["kept"], generated)
            )
        for name, value in counts.items():
            self._metrics["train"][f"dynamic_sampling/groups_{name}"].append(float(value))
        return output, scores, selected, rows, quota

    def _group_ref(self, round_index: int, group: int, per_rank: int) -> GroupRef:
        """Global group `group` of this batch's round `round_index` (`per_rank` groups per rank)."""
        scores = self._round.group(group, self.num_generations)
        return GroupRef(self._generations, round_index, group, group // per_rank, scores)

    def _first_round(self, inputs, quota, need):
        """The first round's prompts: the sampler's batch (paper) or `prompts_per_round`, enlarged for `need` groups
        at the recent kept fraction (adaptive_first_round); drawn from the prompt stream when prompts can be skipped
        or `prompts_per_round` is set, so that every round of the run comes from one stream."""
        args = self.args
        n = base = self._round_size(quota)
        if args.adaptive_first_round:
            n = first_round_prompts(
                need,
                base,
                self.accelerator.num_processes,
                self._kept_fraction,
                args.max_first_round_factor,
                args.first_round_confidence,
            )
            self._metrics["train"]["dynamic_sampling/first_round_prompts"].append(
                float(n * self.accelerator.num_processes)
            )
        if self._skip is not None or args.prompts_per_round:
            return self._next_prompts(n)
        return inputs + self._next_prompts(n - quota) if n > quota else inputs

    def _round_size(self, quota: int) -> int:
        """Prompts per rank in a plain round: `prompts_per_round`'s share, else the sampler's batch (`quota`)."""
        if self.args.prompts_per_round:
            return self.args.prompts_per_round // self.accelerator.num_processes
        return quota

    def _later_round(self, quota: int, need: int, kept: int, generated: int) -> int:
        """Prompts per rank for a step's next round: a plain round (`_round_size`), or with adaptive_first_round
        enough for the `need` missing groups at the kept fraction seen so far (this step's `kept` of `generated`
        groups folded into the moving average, or alone in the run's first step), never fewer than the sampler's."""
        args = self.args
        if not args.adaptive_first_round:
            return self._round_size(quota)
        return later_round_prompts(
            need,
            self._round_size(quota),
            self.accelerator.num_processes,
            self._kept_fraction,
            kept,
            generated,
            args.kept_fraction_decay,
            args.max_first_round_factor,
            args.first_round_confidence,
        )

    def _take_carried(self, n: int) -> list[GroupRef]:
        """Up to `n` carried groups for this batch, oldest first, after dropping (and counting) the too old."""
        if not self.args.max_carry_age:
            return []
        evicted = self._carry.evict(self._generations)
        for c in evicted:
            self._carry_rows.pop(c.item.key, None)
        self._metrics["train"]["dynamic_sampling/carry_evicted"].append(float(len(evicted)))
        return [c.item for c in self._carry.take(n)]

    def _update_generating_less(self, trained, surplus, rows, fresh_kept: int, generated: int) -> None:
        """After a step: update the kept fraction, keep the surplus groups, log what was carried and skipped."""
        args, metrics = self.args, self._metrics["train"]
        if args.adaptive_first_round:
            self._kept_fraction = update_kept_fraction(
                self._kept_fraction, fresh_kept, generated, args.kept_fraction_decay
            )
            metrics["dynamic_sampling/kept_fraction"].append(self._kept_fraction)
        if args.max_carry_age:
            for ref in surplus:
                self._carry.put(ref, ref.born)
                if ref.owner == self.accelerator.process_index:
                    self._carry_rows[ref.key] = rows[ref.key]
            ages = [self._generations - ref.born for ref in trained]
            metrics["dynamic_sampling/carried_groups"].append(float(sum(age > 0 for age in ages)))
            metrics["dynamic_sampling/group_age_mean"].append(sum(ages) / len(ages))
            metrics["dynamic_sampling/group_age_max"].append(float(max(ages)))
            metrics["dynamic_sampling/carry_buffer"].append(float(len(self._carry)))
        if self._skip is not None:
            metrics["dynamic_sampling/prompts_skipped"].append(float(self._skipped))
            metrics["dynamic_sampling/prompts_skippable"].append(float(self._skip.num_skippable()))

    def _assemble(self, rows, selected, quota):
        """Move the selected groups so each rank holds `quota`, and join them into one padded batch.

        Returns the local batch and the final groups in their global (rank-major) order, which every rank knows.
        """
        num_processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        owners = [ref.owner for ref in selected]
        destinations = assign_groups(owners, num_processes, quota)
        moves = [i for i, (o, d) in enumerate(zip(owners, destinations, strict=True)) if o != d]

        mine = {i: rows[selected[i].key] for i in range(len(selected)) if owners[i] == rank == destinations[i]}
        if moves:  # the same on every rank: all join the gather
            outgoing = [
                (i, {k: v.cpu() for k, v in rows[selected[i].key].items()}) for i in moves if owners[i] == rank
            ]
            for i, group_rows in gather_object(outgoing):
                if destinations[i] == rank:
                    mine[i] = {k: v.to(self.accelerator.device) for k, v in group_rows.items()}
        self._metrics["train"]["dynamic_sampling/groups_moved"].append(float(len(moves)))

        output = concat_rows([mine[i] for i in sorted(mine)], self._tokenizer.pad_token_id, self.pad_to_multiple_of)
        loss_mask = output["completion_mask"] * output.get("tool_mask", 1)
        output["num_items_in_batch"] = self.accelerator.gather(loss_mask.sum()).sum()
        final_order = [selected[i] for r in range(num_processes) for i in range(len(selected)) if destinations[i] == r]
        return output, final_order

    def _relog_advantages(self, values: torch.Tensor) -> None:
        """Show DLER's advantages in TRL's completions table instead of the ones TRL computed from raw rewards."""
        log = self._logs["advantages"]
        n = min(len(values), len(log))
        for _ in range(n):
            log.pop()
        log.extend(values[len(values) - n :].tolist())

    def _on_exhausted(self, kept: int, target: int, counts: dict, rounds: int) -> int:
        """Rounds ran out: raise (every rank at once, the decision being global) or return a partial quota."""
        args = self.args
        what = (
            f"Dynamic sampling found {kept} of the {target} groups with signal after {rounds} rounds "
            f"(max_sampling_rounds={args.max_sampling_rounds}): {counts['all_zero']} groups scored all zero, "
            f"{counts['all_positive']} all positive (metric: {args.dynamic_sampling_metric})."
        )
        quota = partial_quota(kept, self.accelerator.num_processes, self.num_generations, args.steps_per_generation)
        if args.dynamic_sampling_exhausted == "partial" and quota > 0:
            logger.warning("%s Training on a partial batch of %d groups per rank.", what, quota)
            return quota
        raise DynamicSamplingExhausted(
            f"{what} Mostly all-zero means the data is too hard for the model, mostly all-positive too easy: "
            "filter the dataset by solve rate, raise max_sampling_rounds (0 = no limit), or set "
            "dynamic_sampling_exhausted='partial' to train on what was kept."
        )

    def _next_prompts(self, num_prompts: int) -> list[dict]:
        """This rank's share of the next `num_prompts * num_processes` prompts (skipped ones passed over and
        counted), each repeated for its group."""
        if self._prompt_stream is None:
            dataset = self.train_dataset
            if self.args.remove_unused_columns and isinstance(dataset, Dataset):  # as TRL's dataloader does
                dataset = self._remove_unused_columns(dataset, description="dynamic sampling")
            self._stream_dataset = dataset
            self._prompt_stream = PromptStream(
                len(dataset), self.args.seed + STREAM_SEED_OFFSET, shuffle=self.shuffle_dataset
            )
            if self._pending_stream_state:
                self._prompt_stream.load_state_dict(self._pending_stream_state)
                self._pending_stream_state = None
        indices, skipped = draw_prompts(self._prompt_stream, self._skip, num_prompts * self.accelerator.num_processes)
        self._round_indices, self._skipped = indices, self._skipped + skipped
        rank = self.accelerator.process_index
        rows = [self._stream_dataset[i] for i in indices[rank * num_prompts : (rank + 1) * num_prompts]]
        return [dict(row) for row in rows for _ in range(self.num_generations)]

    # ------------------------------------------------------------------ checkpoints
    def dler_state_dict(self) -> dict:
        """Everything DLER adds to a run's state, saved beside TRL's in each checkpoint."""
        stream = self._prompt_stream.state_dict() if self._prompt_stream else self._pending_stream_state
        return {
            "prompt_stream": stream,
            "penalty": self.penalty.state_dict(),
            "prompts_generated": self._prompts_generated,
            "prompts_trained": self._prompts_trained,
            "generations": self._generations,
            "kept_fraction": self._kept_fraction,
            "prompts_truncated": self._prompts_truncated,
            "skip_history": self._skip.state_dict() if self._skip else None,
        }

    def load_dler_state_dict(self, state: dict) -> None:
        self._pending_stream_state = state.get("prompt_stream")
        self._prompt_stream = None  # rebuilt lazily from the pending state
        self.penalty.load_state_dict(state.get("penalty", {}))
        self._prompts_generated = state.get("prompts_generated", 0)
        self._prompts_trained = state.get("prompts_trained", 0)
        self._generations = state.get("generations", 0)
        self._kept_fraction = state.get("kept_fraction")
        self._prompts_truncated = state.get("prompts_truncated", 0)
        if self._skip is not None:
            self._skip.load_state_dict(state.get("skip_history") or {})

    def carry_state_dict(self) -> dict:
        """The carry buffer as this rank sees it: every group's bookkeeping (the same on every rank) and this
        rank's rows, on the CPU."""
        groups = []
        for c in self._carry.items:
            ref = c.item
            rows = self._carry_rows.get(ref.key)
            groups.append(
                {
                    "born": ref.born,
                    "round": ref.round,
                    "group": ref.group,
                    "owner": ref.owner,
                    "scores": {name: getattr(ref.scores, name) for name in RoundScores.__dataclass_fields__},
                    "rows": None if rows is None else {k: v.cpu() for k, v in rows.items()},
                }
            )
        return {"num_processes": self.accelerator.num_processes, "groups": groups}

    def load_carry_state_dict(self, state: dict) -> None:
        """Restore the carry buffer saved by `carry_state_dict` (same number of ranks only)."""
        if state["num_processes"] != self.accelerator.num_processes:
            raise ValueError(
                f"The checkpoint carries groups generated on {state['num_processes']} ranks; this run has "
                f"{self.accelerator.num_processes}. Resume on as many ranks, or set max_carry_age=0."
            )
        self._carry = CarryBuffer(self.args.max_carry_age)
        self._carry_rows = {}
        for group in state["groups"]:
            ref = GroupRef(
                group["born"], group["round"], group["group"], group["owner"], RoundScores(**group["scores"])
            )
            self._carry.put(ref, ref.born)
            if group["rows"] is not None:
                self._carry_rows[ref.key] = {k: v.to(self.accelerator.device) for k, v in group["rows"].items()}

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        if self.args.should_save:
            with open(os.path.join(folder, STATE_FILE), "w") as f:
                json.dump(self.dler_state_dict(), f, indent=2)
        if self.args.max_carry_age:  # every rank saves the rows it holds
            os.makedirs(folder, exist_ok=True)
            torch.save(
                self.carry_state_dict(), os.path.join(folder, CARRY_FILE.format(rank=self.accelerator.process_index))
            )

    def _load_optimizer_and_scheduler(self, checkpoint):
        super()._load_optimizer_and_scheduler(checkpoint)
        if checkpoint is None:
            return
        path = os.path.join(checkpoint, STATE_FILE)
        if not os.path.exists(path):
            logger.warning(
                "Checkpoint %s has no %s: DLER state (prompt stream, penalty) starts fresh.", checkpoint, STATE_FILE
            )
            return
        with open(path) as f:
            self.load_dler_state_dict(json.load(f))
        if self.args.max_carry_age:
            carry = os.path.join(checkpoint, CARRY_FILE.format(rank=self.accelerator.process_index))
            if os.path.exists(carry):
                self.load_carry_state_dict(torch.load(carry, weights_only=True))
            else:
                logger.warning("Checkpoint %s has no %s: the carry buffer starts empty.", checkpoint, carry)
