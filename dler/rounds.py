"""Dynamic sampling, decided before it is scored: the rounds of one training batch, as methods of `DLERTrainer`.

Each round runs TRL's `_generate` and the rewards only (`DLERTrainer._score`); groups without signal are dropped
before any log-prob is computed; the kept groups are cut to the batch size and evened out across ranks as plain
data; then TRL's `_generate_and_score_completions` scores exactly that batch once, replaying the cached generations
and rewards through `Replay`. The state these decisions carry between batches is `dler.sampling.SamplingState`.
"""

from __future__ import annotations

import logging

import torch
from accelerate.utils import gather, gather_object
from datasets import Dataset
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.utils import pad

from dler.round_sizing import later_round_prompts, round_prompts
from dler.sampling import GroupRef, RoundScores, assign_groups, classify_groups, partial_quota

logger = logging.getLogger(__name__)


class DynamicSamplingExhausted(RuntimeError):
    """Raised on every rank at the same step when `max_sampling_rounds` ran out before the batch was full."""


class Replay:
    """The decided batch of one rank, handed to TRL's scoring in place of generating and rewarding again. Counts the
    hook calls: TRL must generate and reward exactly once per scoring call."""

    def __init__(self, groups: list[dict], rewards: torch.Tensor):
        self.groups, self.rewards = groups, rewards  # this rank's groups; every rank's rewards, rank-major
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


class DynamicSampling:
    """The batch-deciding half of `DLERTrainer` (a `GRPOTrainer`): `_decide_batch` picks the groups to train,
    `_score_batch` has TRL score exactly them."""

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
        counts = {"kept": 0, "all_zero": 0, "all_positive": 0, "unscorable": 0}
        round_inputs, indices = self._first_round(inputs, quota, target - len(selected))
        while True:
            refs, scores = self._run_round(round_inputs, len(rounds))
            rounds.append(scores)
            keep = [True] * len(refs)
            if args.dynamic_sampling:
                metric = scores.total if args.dynamic_sampling_metric == "reward" else scores.correctness
                signal = classify_groups(metric, group_size)
                keep = signal.keep.tolist()
                for name in counts:
                    counts[name] += int(getattr(signal, "keep" if name == "kept" else name).sum())
                if indices is not None:  # the whole round came from the stream: its prompts are known globally
                    state.record(indices, keep)
            selected += [ref for ref, kept in zip(refs, keep, strict=True) if kept]
            if len(selected) >= target:
                break
            drawn = sum(len(s.shaped) for s in rounds) // group_size + self._skipped
            if (args.max_sampling_rounds and len(rounds) >= args.max_sampling_rounds) or (
                not args.max_sampling_rounds and drawn >= len(self.train_dataset)
            ):
                quota = self._on_exhausted(len(selected), target, counts, len(rounds), drawn)
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
            surplus, fresh_kept, generated, target, args.kept_fraction_decay if args.adaptive_rounds else None
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
        if args.adaptive_rounds:
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
        self._replay = Replay(groups, scores.rewards)
        try:
            output = super()._generate_and_score_completions([x for g in groups for x in g["inputs"]])
            self._replay.check()
        finally:
            self._replay = None
        self._restore_behaviour_logps(output, groups)
        self._metrics["train"]["dler/batch_shaped_reward"].append(scores.shaped.nanmean().item())
        advantages = self._advantages(scores, group_size)
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
        (adaptive_rounds); drawn from the prompt stream when prompts can be skipped or `prompts_per_round` is
        set, so that every round of the run comes from one stream."""
        args = self.args
        n = base = self._round_size(quota)
        if args.adaptive_rounds:
            n = round_prompts(
                need,
                base,
                self.accelerator.num_processes,
                self.sampling.kept_fraction,
                args.max_round_factor,
                args.round_confidence,
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
        """Prompts per rank for a step's next round: a plain round (`_round_size`), or with adaptive_rounds
        enough for the `need` missing groups at the kept fraction seen so far (this step's `kept` of `generated`
        groups folded into the moving average, or alone in the run's first step), never fewer than a plain round."""
        args = self.args
        if not args.adaptive_rounds:
            return self._round_size(quota)
        return later_round_prompts(
            need,
            self._round_size(quota),
            self.accelerator.num_processes,
            self.sampling.kept_fraction,
            kept,
            generated,
            args.kept_fraction_decay,
            args.max_round_factor,
            args.round_confidence,
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

    def _on_exhausted(self, kept: int, target: int, counts: dict, rounds: int, drawn: int) -> int:
        """Rounds ran out (`max_sampling_rounds`), or with no limit the rounds of this batch drew as many prompts as
        the training set holds without filling it (a bound a healthy run never meets): raise (every rank at once,
        the decision being global) or return a partial quota."""
        args = self.args
        limit = (
            f"after {rounds} rounds (max_sampling_rounds={args.max_sampling_rounds})"
            if args.max_sampling_rounds
            else f"after {rounds} rounds, which drew {drawn} prompts, as many as the training set holds "
            f"({len(self.train_dataset)}; max_sampling_rounds=0 allows any number of rounds, but not a whole "
            "pass over the data for one batch)"
        )
        what = (
            f"Dynamic sampling found {kept} of the {target} groups with signal {limit}: {counts['all_zero']} groups "
            f"scored all zero, {counts['all_positive']} all positive, {counts['unscorable']} unscorable (every "
            f"reward None) (metric: {args.dynamic_sampling_metric})."
        )
        quota = partial_quota(kept, self.accelerator.num_processes, self.num_generations, args.steps_per_generation)
        if args.dynamic_sampling_exhausted == "partial" and quota > 0:
            logger.warning("%s Training on a partial batch of %d groups per rank.", what, quota)
            return quota
        raise DynamicSamplingExhausted(
            f"{what} Mostly all-zero means the data is too hard for the model (or every response is cut: check "
            "max_completion_length and truncation_length), mostly all-positive too easy: filter the dataset by "
            "solve rate, raise max_sampling_rounds (0 = no limit), set dynamic_sampling_exhausted='partial' to "
            "train on what was kept, or dynamic_sampling=False."
        )
