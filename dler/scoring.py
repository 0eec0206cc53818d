"""Scoring rollouts, as methods of `DLERTrainer`: the reward functions through TRL's `_calculate_rewards`, the
correctness they measure shaped per group by the length penalty, the other reward functions added after shaping
(`dler.reward_roles`), the advantages and the score metrics. Unscorable rollouts (every reward None) follow TRL 1.16:
NaN, outside every baseline and statistic, advantage 0.
"""

from __future__ import annotations

import torch
from accelerate.utils import gather

from dler.advantages import compute_advantages
from dler.budgets import budget_for_accuracy, group_accuracy
from dler.penalties import RolloutGroup
from dler.reward_roles import combine_rewards, correctness_of
from dler.sampling import RoundScores


class RewardScoring:
    """The scoring half of `DLERTrainer` (a `GRPOTrainer`): `_score` runs and shapes the rewards of one round,
    `_advantages` turns a batch's scores into advantages."""

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
        """Run the reward functions (TRL's `_calculate_rewards`), take the correctness functions' weighted sum,
        shape it per training group with the length penalty (evaluation keeps it plain), then add the other
        functions (`dler.reward_roles`). Returns TRL's gathered rewards and the gathered scores."""
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        device, n = rewards_per_func.device, len(prompts)
        group_size = self.num_generations if self.model.training else self.num_generations_eval
        if n % group_size:
            raise ValueError(f"{n} rollouts on this rank do not form whole groups of {group_size}")
        local = rewards_per_func[self.accelerator.process_index * n : (self.accelerator.process_index + 1) * n].cpu()
        weights = self.reward_weights.cpu()
        correctness = correctness_of(local, weights, self._correctness_columns)
        lengths = torch.tensor([len(ids) for ids in completion_ids_list])
        finished = torch.tensor([len(ids) > 0 and ids[-1] in self.eos_token_ids for ids in completion_ids_list])
        if self.model.training:
            shaped, over_budget, budgets = self._shape_groups(
                inputs, completions, correctness, lengths, finished, group_size
            )
        else:  # evaluation scores correctness, without the length penalty (released run)
            shaped, over_budget = [correctness], [~finished]
            budgets = [torch.full((n,), float(self.max_completion_length))]
        shaped = torch.cat(shaped)
        total = combine_rewards(
            shaped, local, weights, self._correctness_columns, group_size, self.args.multi_objective_aggregation
        )
        stats = torch.stack(
            [total, shaped, correctness, lengths, torch.cat(over_budget), torch.cat(budgets)], dim=1
        ).to(device=device, dtype=torch.float32)
        everything = gather(stats).cpu()
        scores = RoundScores(
            total=everything[:, 0],
            shaped=everything[:, 1],
            correctness=everything[:, 2],
            lengths=everything[:, 3],
            over_budget=everything[:, 4].bool(),
            budgets=everything[:, 5],
            rewards=rewards_per_func.cpu(),
        )
        return rewards_per_func, scores

    def _shape_groups(self, inputs, completions, correctness, lengths, finished, group_size):
        """Each group's shaped correctness, over-budget flags and budget (per rollout), from the length penalty.
        An unscorable rollout (correctness NaN) is shown to the penalty as 0 and its output masked back to NaN."""
        shaped, over_budget, budgets = [], [], []
        for start in range(0, len(correctness), group_size):
            rows = slice(start, start + group_size)
            missing = torch.isnan(correctness[rows])
            group = RolloutGroup(
                correctness=correctness[rows].nan_to_num(nan=0.0),
                lengths=lengths[rows],
                finished=finished[rows],
                budget=budget_for_accuracy(
                    group_accuracy(correctness[rows]), self._budget_bands, self.args.truncation_length
                ),
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
            shaped.append(torch.where(missing, torch.nan, rewards))
            over_budget.append((group.lengths > budget) | ~group.finished)
            budgets.append(torch.full((group_size,), budget))
        return shaped, over_budget, budgets

    def _advantages(self, scores: RoundScores, group_size: int) -> torch.Tensor:
        args = self.args
        return compute_advantages(
            scores.total,
            group_size,
            normalization=args.advantage_normalization,
            lengths=scores.lengths,
            weighting=args.advantage_weighting,
            correct=scores.correctness > 0,
            correct_boost=args.correct_advantage_boost,
        )

    def _log_scores(self, mode: str, scores: list[RoundScores], group_size: int) -> None:
        """Means over the scorable rollouts: correctness (the correctness functions, before shaping), the shaped
        correctness, the total reward (plus the other functions), and the share of rollouts nothing could score."""
        metrics = self._metrics[mode]
        correctness = torch.cat([s.correctness for s in scores])
        total = torch.cat([s.total for s in scores])
        metrics["dler/unscorable_frac"].append(torch.isnan(total).float().mean().item())
        if mode == "eval":  # unshaped: accuracy, length and how often the generation cap cut a response
            solved = torch.where(torch.isnan(correctness), torch.nan, (correctness > 0).float())
            metrics["dler/accuracy"].append(solved.nanmean().item())
            metrics["dler/mean_length"].append(torch.cat([s.lengths for s in scores]).float().mean().item())
            metrics["dler/truncated_frac"].append(torch.cat([s.over_budget for s in scores]).float().mean().item())
            return
        metrics["dler/correctness"].append(correctness.nanmean().item())
        metrics["dler/shaped_reward"].append(torch.cat([s.shaped for s in scores]).nanmean().item())
        metrics["dler/reward"].append(total.nanmean().item())
        metrics["dler/over_budget_frac"].append(torch.cat([s.over_budget for s in scores]).float().mean().item())
        budgets = torch.cat([s.budgets[::group_size] for s in scores])
        metrics["dler/budget_mean"].append(budgets.mean().item())
        metrics["dler/budget_min"].append(budgets.min().item())
