"""What the demo prints: library logging kept quiet, one progress bar per training stage, seconds per stage."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings


@contextlib.contextmanager
def quiet_libraries(threads: int | None = None):
    """Keep the console to progress bars and the demo's own lines (and use `threads` torch threads); everything
    is restored on exit, so calling the demo from Python leaves the caller's logging as it was."""
    import datasets
    import torch
    import transformers

    loggers = [logging.getLogger(name) for name in ("trl", "accelerate", "dler", "DeepSpeed")]
    saved = (
        [lg.level for lg in loggers],
        transformers.logging.get_verbosity(),
        transformers.utils.logging.is_progress_bar_enabled(),
        datasets.logging.get_verbosity(),
        datasets.is_progress_bar_enabled(),
        torch.get_num_threads(),
    )
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # "Loading weights", "Writing model shards"
    datasets.disable_progress_bars()  # "Tokenizing train dataset", ...
    datasets.logging.set_verbosity_error()
    # the trainer warns at each partial batch of dynamic sampling; the plot and report.json show the rounds instead
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    if threads:
        torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        levels, verbosity, bars, ds_verbosity, ds_bars, num_threads = saved
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        transformers.logging.set_verbosity(verbosity)
        (transformers.logging.enable_progress_bar if bars else transformers.logging.disable_progress_bar)()
        datasets.logging.set_verbosity(ds_verbosity)
        (datasets.enable_progress_bars if ds_bars else datasets.disable_progress_bars)()
        torch.set_num_threads(num_threads)


def progress_callback(desc: str, metrics: dict[str, str]):
    """A tqdm bar for a `Trainer` that shows a few metrics beside it instead of printing every log dict."""
    from tqdm.auto import tqdm
    from transformers.trainer_callback import ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.training_bar = tqdm(total=state.max_steps, desc=desc, unit="step", dynamic_ncols=True)
            self.current_step = 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            shown = {label: f"{logs[key]:.3g}" for key, label in metrics.items() if key in (logs or {})}
            if self.training_bar is not None and shown:
                self.training_bar.set_postfix(shown, refresh=False)

    return QuietProgress()


class Clock:
    """Seconds per stage, printed as each one ends."""

    def __init__(self):
        self.start = time.perf_counter()
        self.stages: dict[str, float] = {}
        self._since = self.start

    def begin(self, text: str) -> None:
        print(f"\n{text}", flush=True)
        self._since = time.perf_counter()

    def end(self, name: str) -> None:
        self.stages[name] = round(time.perf_counter() - self._since, 1)
        print(f"   ({self.stages[name]:.0f} s)", flush=True)

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 1)
