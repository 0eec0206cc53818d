"""What a training run prints on the console: one short line per logging step, and no warning the user can do
nothing about. The whole metrics dict still goes to `metrics.jsonl` (dler.run_logs) and the trackers.

- `short_console(trainer)`: swaps transformers' progress bar (or its log printer) for one that writes
  `console_line` instead of the ~60-key dict.
- `quiet_known_warnings()`: drops transformers' FutureWarning about `gradient_checkpointing` being renamed.
"""

from __future__ import annotations

import warnings

from transformers.trainer_callback import PrinterCallback, ProgressCallback

# (label, metrics key, format) of the console's line per logging step
CONSOLE_FIELDS = (
    ("loss", "loss", "{:.4g}"),
    ("reward", "reward", "{:.3g}"),
    ("correct", "dler/correctness", "{:.1%}"),
    ("length", "completions/mean_length", "{:.1f}"),
    ("over budget", "dler/over_budget_frac", "{:.1%}"),
    ("rounds", "dynamic_sampling/rounds", "{:g}"),
)


def console_line(step: int, max_steps: int, logs: dict) -> str:
    """One short line for a logged dict: the step and the few metrics a user watches (those present), evaluation
    logs (`eval_*`) marked as such, and the end-of-training summary as its runtime."""
    if "train_runtime" in logs:
        return f"step {step}/{max_steps}: training done in {logs['train_runtime']:.1f} s"
    evaluation = any(k.startswith("eval_") for k in logs)
    values = {k.removeprefix("eval_"): v for k, v in logs.items()} if evaluation else logs
    parts = [
        f"{label} {fmt.format(values[key])}"
        for label, key, fmt in CONSOLE_FIELDS
        if isinstance(values.get(key), (int, float))
    ]
    return f"step {step}/{max_steps}{' eval' if evaluation else ''}: " + ", ".join(parts)


class ShortProgress(ProgressCallback):
    """transformers' progress bar, writing `console_line` under it instead of the whole metrics dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            self.training_bar.write(console_line(state.global_step, state.max_steps, logs))


class ShortPrinter(PrinterCallback):
    """transformers' log printer (used when the bar is off), printing `console_line` instead of the whole dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_local_process_zero and logs:
            print(console_line(state.global_step, state.max_steps, logs))


def short_console(trainer) -> None:
    """Swap the trainer's default progress bar or log printer for its short-line twin (same place, same events)."""
    for default, short in ((ProgressCallback, ShortProgress), (PrinterCallback, ShortPrinter)):
        if any(type(cb) is default for cb in trainer.callback_handler.callbacks):
            trainer.remove_callback(default)
            trainer.add_callback(short)


def quiet_known_warnings() -> None:
    """Drop transformers' FutureWarning about `gradient_checkpointing` being renamed `activation_checkpointing` (TRL's
    config sets the old name on every run, so the user can do nothing about it); every other warning stays."""
    warnings.filterwarnings(
        "ignore", message=r"`(is_)?gradient_checkpointing\w*` is deprecated", category=FutureWarning
    )
