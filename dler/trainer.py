"""`DLERTrainer`: TRL's `GRPOTrainer` with the DLER recipe.

Training batches are decided first and scored once ("decide, then score"): each dynamic-sampling round runs TRL's
`_generate` and the reward functions only; the length penalty shapes the rewards, groups without signal are
dropped, and the kept groups are cut to the batch size and balanced across ranks as plain data. Then TRL's own
`_generate_and_score_completions` runs once on exactly that batch, replaying the cached generations and rewards
through its `_generate` and `_calculate_rewards` hooks, so log-probs, padding, `num_items_in_batch`, logging and every
output key are TRL's, and no forward pass is spent on a dropped group. DLER then replaces the advantages with its
batch-wise normalised ones. Generating less (docs/dynamic_sampling.md) sizes rounds from the kept fraction, carries
surplus groups to later batches and skips prompts without recent signal. Clip-higher is TRL's own `epsilon_high`.
"""

from __future__ import annotations

import copy
import json
import logging
import os

import torch
from accelerate.utils import gather, gather_object
from datasets import Dataset, IterableDataset
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import GRPOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import is_async_callable, pad

from dler.advantages import compute_advantages
from dler.budgets import budget_for_accuracy
from dler.config import DLERConfig
from dler.kl import kl_penalty_terms
from dler.penalties import LengthPenalty, RolloutGroup
from dler.reward_guard import GuardedReward
from dler.sampling import (
    GroupRef,
    RoundScores,
    SamplingState,
    assign_groups,
    classify_groups,
    first_round_prompts,
    later_round_prompts,
    partial_quota,
)

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


class DynamicSamplingExhausted(RuntimeError):
    """Raised on every rank at the same step when `max_sampling_rounds` ran out before the batch was full."""


class Replay:
    """The decided batch of one rank, handed to TRL's scoring in place of generating and rewarding again. Counts the
    hook calls: TRL must generate and reward exactly once per scoring call."""

    def __init__(self, groups: list[dict], rewards: torch.Tensor, scores: RoundScores):
        self.groups, self.rewards, self.scores = groups, rewards, scores
        self.calls = {"_generate": 0, "_calculate_rewards": 0}

    def rows(self, key: str) -> list:
        return [x for group in self.groups for x in group[key]]

    def call(self, hook: str) -> None:
        self.calls[hook] += 1

    def check(self) -> None:
        if self.calls != {"_generate": 1, "_calculate_rewards": 1}:
            raise RuntimeError(
                f"TRL's scoring called the replayed hooks {self.calls} times, not once each: the installed TRL "
                "changed how `_generate_and_score_completions` generates and rewards. dler pins trl==1.16.0."
            )


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
        self._refuse_unsupported(
            [name for name in ("tools", "environment_factory", "rollout_func") if kwargs.get(name)]
        )
        super().__init__(model, reward_funcs, args, *trl_args, **kwargs)
        self._refuse_unsupported(["a vision-language model"] if self._is_vlm else [])
        self.reward_funcs = [  # plain synchronous functions fail naming themselves and the sample
            GuardedReward(func, name) if _is_plain_function(func) else func
            for func, name in zip(self.reward_funcs, self.reward_func_names, strict=True)
        ]
        self.add_callback(CloseRewardFunctions(self.reward_funcs))
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

    def _decide_batch(self, inputs) -> tuple[list[GroupRef], int]:
        """Generate and reward round after round, keeping the groups with signal, until `len(inputs)` rollouts per
        rank are kept (or the rounds run out). Returns the groups to train, in arrival order (carried ones first),
        and the groups per rank (smaller than the sampler's only for a partial batch). Nothing is scored by TRL yet;
        only kept groups' rows stay in memory."""
        args, state, group_size = self.args, self.sampling, self.num_generations
        num_processes, rank = self.accelerator.num_processes, self.accelerator.process_index
        metrics = self._metrics["train"]
        quota = len(inputs) // group_size
        target = quota * num_processes
        state.generations += 1
        self._skipped = 0
        selected: list[GroupRef] = []
        if args.max_carry_age:
            evicted, selected = state.take_carried(target)
            metrics["dynamic_sampling/carry_evicted"].append(float(len(evicted)))
        rounds: list[RoundScores] = []
        counts = {"kept": 0, "all_zero": 0, "all_positive": 0}
        round_inputs, indices = self._first_round(inputs, quota, target - len(selected))
        while True:
            refs, scores = self._run_round(round_inputs, len(rounds))
            rounds.append(scores)
            keep = [True] * len(refs)
            if args.dynamic_sampling:
                metric = scores.shaped if args.dynamic_sampling_metric == "reward" else scores.correctness
                signal = classify_groups(metric, group_size)
                keep = signal.keep.tolist()
                for name in counts:
                    counts[name] += int(getattr(signal, "keep" if name == "kept" else name).sum())
                if indices is not None:  # the whole round came from the stream: its prompts are known globally
                    state.record(indices, keep)
            selected += [ref for ref, kept in zip(refs, keep, strict=True) if kept]
            if len(selected) >= target:
                break
            if args.max_sampling_rounds and len(rounds) >= args.max_sampling_rounds:
                quota = self._on_exhausted(len(selected), target, counts, len(rounds))
                break
            if not args.max_sampling_rounds and len(rounds) in (10, 100, 1000):
                logger.warning(
                    "Dynamic sampling needed %d generation rounds for one batch (%d/%d groups with signal; %d all-zero,"
                    " %d all-positive). Consider max_sampling_rounds or filtering the data by solve rate.",
                    len(rounds),
                    len(selected),
                    target,
                    counts["all_zero"],
                    counts["all_positive"],
                )
            generated = sum(len(s.shaped) for s in rounds) // group_size
            round_inputs, indices = self._next_prompts(
                self._later_round(quota, target - len(selected), counts["kept"], generated)
            )

        target = quota * num_processes
        trained, surplus = selected[:target], selected[target:]
        generated = sum(len(s.shaped) for s in rounds) // group_size
        if args.max_carry_age:
            self._behaviour_logps([ref for ref in surplus if ref.owner == rank])
        fresh_kept = sum(ref.born == state.generations for ref in selected)
        state.end_batch(
            surplus, fresh_kept, generated, target, args.kept_fraction_decay if args.adaptive_first_round else None
        )

        for name, value in counts.items():
            metrics[f"dynamic_sampling/groups_{name}"].append(float(value))
        metrics["dynamic_sampling/rounds"].append(len(rounds))
        metrics["dynamic_sampling/prompts_generated_per_kept"].append(generated / target)
        metrics["dynamic_sampling/run_prompts_generated_per_kept"].append(
            state.prompts_generated / state.prompts_trained
        )
        metrics["dynamic_sampling/partial_batch"].append(float(target < len(inputs) // group_size * num_processes))
        self._log_scores("train", rounds, group_size)
        if args.adaptive_first_round:
            metrics["dynamic_sampling/kept_fraction"].append(state.kept_fraction)
        if args.max_carry_age:
            ages = [state.generations - ref.born for ref in trained]
            metrics["dynamic_sampling/carried_groups"].append(float(sum(age > 0 for age in ages)))
            metrics["dynamic_sampling/group_age_mean"].append(sum(ages) / len(ages))
            metrics["dynamic_sampling/group_age_max"].append(float(max(ages)))
            metrics["dynamic_sampling/carry_buffer"].append(float(len(state.carry)))
        if state.skip is not None:
            metrics["dynamic_sampling/prompts_skipped"].append(float(self._skipped))
            metrics["dynamic_sampling/prompts_skippable"].append(float(state.skip.num_skippable()))
        return trained, quota

    def _run_round(self, inputs, round_index: int) -> tuple[list[GroupRef], RoundScores]:
        """One round: TRL's `_generate`, then the rewards, shaped and gathered. Every group of every rank as a
        `GroupRef`; this rank's carry their rows."""
        group_size = self.num_generations
        prompts = [x["prompt"] for x in inputs]
        prompt_ids, completion_ids, _, completions, logprobs, _, _, _ = self._generate(prompts)
        _, scores = self._score(inputs, prompts, completions, completion_ids)
        per_rank, rank = len(prompts) // group_size, self.accelerator.process_index
        refs = []
        for g in range(len(scores.shaped) // group_size):
            ref = GroupRef(self.sampling.generations, round_index, g, g // per_rank, scores.group(g, group_size))
            if ref.owner == rank:
                rows = slice((g % per_rank) * group_size, (g % per_rank + 1) * group_size)
                ref.rows = {
                    "inputs": inputs[rows],
                    "prompt_ids": prompt_ids[rows],
                    "completion_ids": completion_ids[rows],
                    "completions": completions[rows],
                    "logprobs": logprobs[rows] if logprobs is not None else None,
                }
            refs.append(ref)
        return refs, scores

    def _score_batch(self, trained: list[GroupRef], quota: int):
        """Even the decided groups out to `quota` per rank, then let TRL score exactly them, once."""
        num_processes, rank, group_size = (
            self.accelerator.num_processes,
            self.accelerator.process_index,
            self.num_generations,
        )
        owners = [ref.owner for ref in trained]
        destinations = assign_groups(owners, num_processes, quota)
        moves = [i for i, (o, d) in enumerate(zip(owners, destinations, strict=True)) if o != d]
        if moves:  # the same on every rank: all join the gather
            for i, rows in gather_object([(i, trained[i].rows) for i in moves if owners[i] == rank]):
                if destinations[i] == rank:
                    trained[i].rows = rows
        self._metrics["train"]["dynamic_sampling/groups_moved"].append(float(len(moves)))
        final = [trained[i] for r in range(num_processes) for i in range(len(trained)) if destinations[i] == r]
        mine = final[rank * quota : (rank + 1) * quota]
        groups = [
            {**ref.rows, "shaped": ref.scores.shaped.tolist(), "budget": ref.scores.budgets.tolist()} for ref in mine
        ]
        scores = RoundScores.cat([ref.scores for ref in final])
        self._replay = Replay(groups, scores.rewards, scores)
        try:
            output = super()._generate_and_score_completions([x for g in groups for x in g["inputs"]])
            self._replay.check()
        finally:
            self._replay = None
        self._restore_behaviour_logps(output, groups)
        self._metrics["train"]["dler/batch_shaped_reward"].append(scores.shaped.mean().item())
        advantages = self._advantages(scores.shaped, scores.correctness, scores.lengths, group_size)
        self._relog_advantages(advantages)
        per_rank = len(advantages) // num_processes
        output["advantages"] = advantages[rank * per_rank : (rank + 1) * per_rank].to(self.accelerator.device)
        return output

    def _behaviour_logps(self, refs: list[GroupRef]) -> None:
        """Log-probs of the generating policy for this rank's surplus groups, which are carried to a later batch and
        must train against them (TRL would score them with the policy of that later batch). Every rank runs the
        same number of forward passes, as ZeRO-3 needs: short ranks repeat a sequence."""
        sequences = [
            pair for ref in refs for pair in zip(ref.rows["prompt_ids"], ref.rows["completion_ids"], strict=True)
        ]
        device = self.accelerator.device
        most = int(gather(torch.tensor([len(sequences)], device=device)).max())
        if most == 0:
            return
        eos = self._tokenizer.eos_token_id
        batch = sequences + [sequences[0] if sequences else ([eos], [eos])] * (most - len(sequences))
        pad_id = self._tokenizer.pad_token_id
        prompts = pad([torch.tensor(p) for p, _ in batch], padding_value=pad_id, padding_side="left")
        prompt_mask = pad(
            [torch.ones(len(p), dtype=torch.long) for p, _ in batch], padding_value=0, padding_side="left"
        )
        completions = pad([torch.tensor(c) for _, c in batch], padding_value=pad_id, padding_side="right")
        completion_mask = pad(
            [torch.ones(len(c), dtype=torch.long) for _, c in batch], padding_value=0, padding_side="right"
        )
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            logps = self._get_per_token_logps_and_entropies(
                self.model,
                torch.cat([prompts, completions], dim=1).to(device),
                torch.cat([prompt_mask, completion_mask], dim=1).to(device),
                completions.size(1),
                batch_size=self.args.per_device_train_batch_size,
            )[0].cpu()
        k = 0
        for ref in refs:
            ref.rows["old_logps"] = [logps[k + j, : len(c)] for j, c in enumerate(ref.rows["completion_ids"])]
            k += len(ref.rows["completion_ids"])

    @staticmethod
    def _restore_behaviour_logps(output: dict, groups: list[dict]) -> None:
        """Carried groups train against the log-probs of the policy that generated them, not the current one."""
        start = 0
        for group in groups:
            for j, logps in enumerate(group.get("old_logps") or []):
                output["old_per_token_logps"][start + j, : len(logps)] = logps.to(output["old_per_token_logps"].device)
            start += len(group["inputs"])

    def _first_round(self, inputs, quota, need):
        """The first round's prompts (and their dataset indices when all come from the stream): the sampler's batch
        (paper) or `prompts_per_round`, enlarged for `need` groups at the recent kept fraction
        (adaptive_first_round); drawn from the prompt stream when prompts can be skipped or `prompts_per_round` is
        set, so that every round of the run comes from one stream."""
        args = self.args
        n = base = self._round_size(quota)
        if args.adaptive_first_round:
            n = first_round_prompts(
                need,
                base,
                self.accelerator.num_processes,
                self.sampling.kept_fraction,
                args.max_first_round_factor,
                args.first_round_confidence,
            )
            self._metrics["train"]["dynamic_sampling/first_round_prompts"].append(
                float(n * self.accelerator.num_processes)
            )
        if self.sampling.skip is not None or args.prompts_per_round:
            return self._next_prompts(n)
        return (inputs + self._next_prompts(n - quota)[0] if n > quota else inputs), None

    def _round_size(self, quota: int) -> int:
        """Prompts per rank in a plain round: `prompts_per_round`'s share, else the sampler's batch (`quota`)."""
        if self.args.prompts_per_round:
            return self.args.prompts_per_round // self.accelerator.num_processes
        return quota

    def _later_round(self, quota: int, need: int, kept: int, generated: int) -> int:
        """Prompts per rank for a step's next round: a plain round (`_round_size`), or with adaptive_first_round
        enough for the `need` missing groups at the kept fraction seen so far (this step's `kept` of `generated`
        groups folded into the moving average, or alone in the run's first step), never fewer than a plain round."""
        args = self.args
        if not args.adaptive_first_round:
            return self._round_size(quota)
        return later_round_prompts(
            need,
            self._round_size(quota),
            self.accelerator.num_processes,
            self.sampling.kept_fraction,
            kept,
            generated,
            args.kept_fraction_decay,
            args.max_first_round_factor,
            args.first_round_confidence,
        )

    def _next_prompts(self, num_prompts: int) -> tuple[list[dict], list[int]]:
        """This rank's share of the next `num_prompts * num_processes` prompts of the stream (skipped ones passed
        over and counted), each repeated for its group, and the dataset indices of all of them."""
        if self._stream_dataset is None:
            dataset = self.train_dataset
            if self.args.remove_unused_columns and isinstance(dataset, Dataset):  # as TRL's dataloader does
                dataset = self._remove_unused_columns(dataset, description="dynamic sampling")
            self._stream_dataset = dataset
        indices, skipped = self.sampling.draw(num_prompts * self.accelerator.num_processes, len(self._stream_dataset))
        self._skipped += skipped
        rank = self.accelerator.process_index
        rows = [dict(self._stream_dataset[i]) for i in indices[rank * num_prompts : (rank + 1) * num_prompts]]
        return [row for row in rows for _ in range(self.num_generations)], indices

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
