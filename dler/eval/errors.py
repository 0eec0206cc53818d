"""The errors an evaluation reports to its caller (`dler eval` turns each into its own message and exit status)."""

from __future__ import annotations


class ResumeError(ValueError):
    """The output directory holds a run made with different settings, or with different problems."""


class EvalSettingsError(ValueError):
    """Settings that cannot give the asked-for evaluation (a missing model, a context too short), found before
    anything is written or any model is loaded."""


class EvalInterrupted(KeyboardInterrupt):
    """Ctrl-C during an evaluation: what was written is kept, and the same command resumes."""

    def __init__(self, done: int | None, total: int | None):
        super().__init__(done, total)
        self.done, self.total = done, total

    @property
    def message(self) -> str:
        if self.total is None:
            return "interrupted before any problem was generated; rerun the same command to start"
        return f"interrupted; rerun the same command to resume ({self.done} of {self.total} problems done)"
