"""`KLEstimatorLoss`: the trainer mixin that turns TRL's k3 KL term into `kl_estimator`'s, under every loss type.

TRL 1.16's `_compute_loss` adds `beta * k3` to `per_token_loss` after the policy term (and after the off-policy,
entropy and vLLM importance-sampling factors, which leave the KL term alone), then aggregates linearly in
`per_token_loss` for a fixed mask. Adding `beta * (estimator - k3)` aggregated the same way (`aggregate_like_trl`)
therefore gives the estimator's value and gradient exactly, whichever `loss_type` and `importance_sampling_level`.
"""

from __future__ import annotations

from dler.kl import aggregate_like_trl, kl_penalty_terms


class KLEstimatorLoss:
    """Mix into a `GRPOTrainer` subclass (before it in the bases); reads `args.kl_estimator`."""

    _kl_capture: list | None = None  # the policy log-probs seen while TRL computes the loss, when capturing

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        logps, entropies, *rest = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if self._kl_capture is not None:  # the policy's log-probs of the loss being computed
            self._kl_capture.append(logps)
        return (logps, entropies, *rest)

    def _compute_loss(self, model, inputs):
        """TRL's loss; with `kl_estimator` 'k2' or 'low_var_kl', plus beta x (estimator - k3) aggregated as TRL
        aggregates `loss_type`, which turns TRL's k3 into the chosen estimator in value and gradient."""
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
        training = self.model.training
        correction = aggregate_like_trl(
            kl - k3,
            mask,
            self.loss_type,
            training=training,
            accumulation_steps=self.current_gradient_accumulation_steps if training else 1,  # set by train() only
            steps_per_generation=self.args.steps_per_generation,
            num_items_in_batch=inputs.get("num_items_in_batch"),
            num_processes=self.accelerator.num_processes,
            max_completion_length=self.max_completion_length,
        )
        loss = loss + self.beta * correction
        mode = "train" if training else "eval"
        kl_mean = (kl.detach() * mask).sum() / mask.sum().clamp(min=1.0)
        self._metrics[mode][f"dler/kl_{self.args.kl_estimator}"].append(
            self.accelerator.gather(kl_mean).nanmean().item()
        )
        return loss
