"""Warnings that repeat at most once per kind every few seconds: a grader meets the same problem thousands of times."""

import logging
import time
from collections import Counter


class RateLimitedWarnings:
    """At most one warning per kind every `every` seconds on `logger`, with the number of occurrences since the last
    one; `prefix` starts every message."""

    def __init__(self, logger: logging.Logger, prefix: str = "", every: float = 30.0):
        self.logger, self.prefix, self.every = logger, prefix, every
        self._last: dict[str, float] = {}
        self._count: Counter = Counter()

    def __call__(self, kind: str, message: str) -> None:
        self._count[kind] += 1
        now = time.monotonic()
        if now - self._last.get(kind, -1e9) >= self.every:
            n = self._count.pop(kind)
            self.logger.warning("%s%s%s", self.prefix, message, f" ({n} such since the last warning)" if n > 1 else "")
            self._last[kind] = now
