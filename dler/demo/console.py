"""What the demo prints: library logging kept quiet, one progress bar per training stage, one wall clock."""

from __future__ import annotations

import contextlib
import logging
import time
import warnings


@contextlib.contextmanager
def quiet_libraries():
    """Keep the console to progress bars and the demo's own lines; everything (torch's thread count included, which
    the demo sets inside) is restored on exit, so calling the demo from Python leaves the caller's state as it was."""
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


def format_duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`: how the demo writes a duration, in its log as in the README."""
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes else f"{rest} s"


class Clock:
    """One clock for the whole demo: wall time since it started, library loading included. Each stage ends with the
    time so far; the stages (libraries and report included) are contiguous, so they add up to the total, and the log,
    `report.json` and the README all give that one duration."""

    def __init__(self, now=time.perf_counter):
        self._now = now
        self.start = self._last = now()
        self.stages: dict[str, float] = {}

    def begin(self, text: str) -> None:
        print(f"\n{text}", flush=True)

    def end(self, name: str, quiet: bool = False) -> None:
        """The time since the previous stage ended (or the demo started) is stage `name`'s."""
        now = self._now()
        self.stages[name] = self.stages.get(name, 0.0) + now - self._last
        self._last = now
        if not quiet:
            print(f"   (done at {format_duration(now - self.start)})", flush=True)

    def elapsed(self) -> dict[str, float]:
        """Seconds per stage and `total`, the wall time of the whole demo (the stages' sum), to 0.1 s."""
        return {**{k: round(v, 1) for k, v in self.stages.items()}, "total": round(self._last - self.start, 1)}

    def summary(self) -> str:
        """The demo's last line: its wall time, from start to report."""
        return f"Demo wall time: {format_duration(self._last - self.start)} (library loading included; install not)"
