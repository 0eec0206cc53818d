"""The math correctness reward: `MathReward` for TRL, and `math_correctness` as a function.

Flow per call: extract every answer in this process (pure string work, microseconds), drop duplicates and
answers seen before (the 16 rollouts of a prompt often agree), and send only the rest to the grading pool.
"""

import logging
import threading
from collections import Counter, OrderedDict
from typing import Any, NamedTuple

from dler.prompts import check_answer_region
from dler.rewards import extract, released
from dler.rewards.pool import GradingPool
from dler.rewards.prechecks import MAX_ANSWER_CHARS, MAX_DEPTH
from dler.rewards.ratelimit import RateLimitedWarnings
from dler.rewards.status import (
    CATEGORIES,
    CORRECT,
    ERROR,
    INVALID_GOLD,
    UNPARSED,
    WRONG,
    category,
)
from dler.rewards.worker import run_job
from dler.trl_keywords import TRL_CONTROL_KWARGS  # what TRL passes besides the dataset columns

logger = logging.getLogger(__name__)

GRADERS = ("dler", "released")
# job kinds of the grading workers (`dler.rewards.worker`) per grader: (grade one answer, check one gold)
_JOBS = {"dler": ("grade", "gold"), "released": ("grade_released", "gold_released")}
_DESCRIPTIONS = {
    "dler": "the last \\boxed{} (or \\fbox{}) after the first </think>, compared with math-verify (gold first), "
    "after dler's reading rules for e-notation, units, choice labels and redundant braces",
    "released": "DLER's released reward: the text between the first and second </think>, the last literal "
    "\\boxed{...} there, correct if math-verify OR a normalised-string match OR sympy equality accepts",
}


def check_grader(grader: str, field: str = "grader") -> str:
    """`grader` itself if it names a grader, else a ValueError naming the field and the choices."""
    if grader not in GRADERS:
        raise ValueError(f"{field} must be one of {', '.join(repr(g) for g in GRADERS)}; got {grader!r}")
    return grader


_CACHEABLE = (CORRECT, WRONG, UNPARSED)  # deterministic outcomes; timeouts and crashes may depend on load


class Grade(NamedTuple):
    """One graded completion: its reward, why, and the answer string that was graded (None if none)."""

    score: float
    status: str
    answer: str | None


class MissingAnswerColumn(KeyError):
    def __str__(self):
        return self.args[0]


class _Warnings(RateLimitedWarnings):
    def __init__(self, every: float = 30.0):
        super().__init__(logger, "math reward: ", every)


class MathReward:
    """R1-style math correctness for GRPO: 1.0 if the last `\\boxed{}` after `</think>` equals the gold answer.

    Args:
        answer_column: dataset column with the gold answers (TRL passes every column as a keyword argument).
        grader: "dler" (default): the last box after the first `think_end`, math-verify with dler's reading rules
            (`dler.rewards.forms`). "released": DLER's released reward (`dler.rewards.released`): the text
            between the first and second `think_end`, the last literal `\\boxed{}` there, and correct when
            math-verify, a normalised-string match or sympy equality accepts. Both run in the same pool.
        answer_region: where the answer is read: "after-think" (after the first `</think>`; a response that never
            closes its thinking scores 0: a thinking model, the R1 grader) or "whole" (the last box anywhere: a
            model that answers without thinking tags). Given, it sets `think_end` and `require_think_end`; None:
            those two say it (the defaults are "after-think").
        think_end: the marker that closes the thinking; the answer must follow it. None: grade the whole text.
        require_think_end: a response that never closes its thinking scores 0 (R1 grader). If False, such a
            response is graded on its whole text.
        num_workers: grading processes of this rank (default min(4, CPUs / local ranks)); 0 grades in this
            process with math-verify's timeouts only (main thread) and no hard deadline.
        answer_timeout: seconds per answer (CPU seconds of the worker, wall time capped at 3x) before its worker
            is killed (the answer scores 0); also math-verify's own timeout inside the worker.
        batch_timeout: seconds per call; unfinished answers score 0.
        max_answer_chars, max_depth: pre-check limits of `dler.rewards.prechecks`.
        on_invalid_gold: "warn" (score 0, counted in `math/invalid_gold`, rate-limited warning) or "error".
        cache_size: graded (gold, answer) pairs remembered across calls.
        pool: share an existing `GradingPool` (e.g. between a train and an eval reward); `close()` then leaves
            it running. `num_workers`, `answer_timeout` and `batch_timeout` are the pool's own in that case.

    TRL calls `reward(prompts=..., completions=..., completion_ids=..., **columns, log_metric=...)`; the metrics
    `math/graded`, `math/unparseable`, `math/timed_out`, `math/errors` and `math/invalid_gold` are logged as
    fractions of the call's completions (they sum to 1), and the graded answer and status of each completion go
    to the completions table (`log_extra`). With the "after-think" region, `math/think_unclosed` is the fraction
    of the call's completions without `think_end`, and when it is above one half a warning (at most one every 30
    s) says that such responses score 0 and names the switch for models that do not think in tags. `stats` keeps cumulative counts per status.
    Call `close()` (or use it as a context manager) to stop the workers; interpreter exit stops them too.
    """

    __name__ = "math_correctness"
    has_own_deadlines = True  # each answer is timed out in a worker process: `dler.reward_guard` adds no deadline

    def __init__(
        self,
        answer_column: str = "answer",
        think_end: str | None = extract.THINK_END,
        require_think_end: bool = True,
        num_workers: int | None = None,
        answer_timeout: float = 5.0,
        batch_timeout: float = 120.0,
        max_answer_chars: int = MAX_ANSWER_CHARS,
        max_depth: int = MAX_DEPTH,
        on_invalid_gold: str = "warn",
        cache_size: int = 100_000,
        pool: GradingPool | None = None,
        grader: str = "dler",
        answer_region: str | None = None,
    ):
        if on_invalid_gold not in ("warn", "error"):
            raise ValueError(f"on_invalid_gold must be 'warn' or 'error', got {on_invalid_gold!r}")
        if answer_region is not None:
            whole = check_answer_region(answer_region) == "whole"
            think_end, require_think_end = (None, False) if whole else (think_end or extract.THINK_END, True)
        self.grader = check_grader(grader)
        self.answer_column = answer_column
        self.think_end = think_end
        self.require_think_end = require_think_end
        self.num_workers = num_workers
        self.answer_timeout = answer_timeout
        self.batch_timeout = batch_timeout
        self.max_answer_chars = max_answer_chars
        self.max_depth = max_depth
        self.on_invalid_gold = on_invalid_gold
        self.cache_size = cache_size
        self._init_state(pool)

    def _init_state(self, pool=None):
        self.stats: Counter = Counter()
        self._pool: GradingPool | None = pool
        self._owns_pool = pool is None
        self._golds: dict[Any, tuple[str | None, str]] = {}  # raw gold -> (gold string or None, reason)
        self._bad_golds: dict[str, str] = {}  # gold strings the workers could not parse -> why
        self._cache: OrderedDict[tuple[str, str], tuple[float, str]] = OrderedDict()
        self._warn = _Warnings()
        self._lock = threading.RLock()  # one call at a time: the caches are shared

    # TRL's async GRPO pickles reward functions into a child process: send the settings, not the processes.
    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_") and k != "stats"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._init_state()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        """Stop the grading workers (unless the pool was passed in: its owner closes it)."""
        if self._pool is not None and self._owns_pool:
            self._pool.close()

    @property
    def answer_region(self) -> str:
        """ "after-think", "whole", or "after-think-if-closed" (`require_think_end=False`: after the marker when
        there is one, else the whole response)."""
        if not self.think_end:
            return "whole"
        return "after-think" if self.require_think_end else "after-think-if-closed"

    def describe(self) -> dict[str, Any]:
        """The grading settings, as recorded in an evaluation's protocol: runs that differ here differ in score."""
        return {
            "reward": "dler.rewards.MathReward",
            "grader": self.grader,
            "description": _DESCRIPTIONS[self.grader],
            "answer_region": self.answer_region,
            "think_end": self.think_end,
            "require_think_end": self.require_think_end,
            "answer_timeout": self.answer_timeout,
            "max_answer_chars": self.max_answer_chars,
            "max_depth": self.max_depth,
        }

    @property
    def pool(self) -> GradingPool | None:
        """The grading pool (created on first use; None with `num_workers=0`)."""
        if self._pool is None and self.num_workers != 0:
            self._pool = GradingPool(self.num_workers, self.answer_timeout, self.batch_timeout)
        return self._pool

    # ------------------------------------------------------------------ TRL entry point

    def __call__(self, prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
        if self.answer_column not in kwargs:
            columns = sorted(k for k in kwargs if k not in TRL_CONTROL_KWARGS)
            raise MissingAnswerColumn(
                f"MathReward reads the gold answers from the dataset column {self.answer_column!r}, which is not "
                f"among the columns it received: {columns}. Pass MathReward(answer_column=...) with the right name."
            )
        grades = self.grade(completions, kwargs[self.answer_column])
        log_metric = kwargs.get("log_metric")
        unclosed = self._think_unclosed(completions) if self.answer_region == "after-think" else None
        if log_metric is not None:
            for name, value in self.summarize(grades).items():
                log_metric(f"math/{name}", value)
            if unclosed is not None:
                log_metric("math/think_unclosed", unclosed)
        log_extra = kwargs.get("log_extra")
        if log_extra is not None:  # columns of TRL's completions table
            log_extra("math_answer", [g.answer for g in grades])
            log_extra("math_status", [g.status for g in grades])
        return [g.score for g in grades]

    def _think_unclosed(self, completions) -> float:
        """The fraction of `completions` that never close their thinking; warns (rate-limited) above one half."""
        texts = [extract.completion_text(c, self.think_end) for c in completions]
        unclosed = sum(self.think_end not in t for t in texts) / max(1, len(texts))
        if unclosed > 0.5:
            self._warn(
                "think_unclosed",
                f"{unclosed:.0%} of this call's responses never close their thinking with {self.think_end!r} and "
                "score 0 (answer region 'after-think'). A model that answers without thinking tags needs "
                "--answer_region whole, or a --prompt_format whose answer region is 'whole' (docs/prompts.md).",
            )
        return unclosed

    # ------------------------------------------------------------------ grading

    def score(self, completions, answers) -> list[float]:
        """1.0 or 0.0 per completion."""
        return [g.score for g in self.grade(completions, answers)]

    def grade(self, completions, answers) -> list[Grade]:
        """A `Grade` per completion. Completions are strings or TRL conversations; answers are raw golds."""
        with self._lock:
            return self._grade(list(completions), list(answers))

    def _grade(self, completions: list, answers: list) -> list[Grade]:
        if len(completions) != len(answers):
            raise ValueError(f"got {len(completions)} completions but {len(answers)} gold answers")
        out: list[Grade | None] = [None] * len(completions)
        jobs: dict[tuple[str, str], list[int]] = {}
        for i, (completion, raw_gold) in enumerate(zip(completions, answers, strict=True)):
            gold, why = self._gold(raw_gold)
            if gold is None:
                out[i] = Grade(0.0, INVALID_GOLD, None)
                self._invalid_gold(raw_gold, why)
                continue
            text = extract.completion_text(completion, self.think_end or "")
            extract_answer = released.extract_answer if self.grader == "released" else extract.extract_answer
            answer, why = extract_answer(
                text, self.think_end, self.require_think_end, self.max_answer_chars, self.max_depth
            )
            if answer is None:
                out[i] = Grade(0.0, why, None)
                continue
            key = (gold, answer)
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                out[i] = Grade(hit[0], hit[1], answer)
            else:
                jobs.setdefault(key, []).append(i)
        if jobs:
            keys = list(jobs)
            grade_kind = _JOBS[self.grader][0]
            for key, (score, status, detail) in zip(keys, self._run(grade_kind, keys), strict=True):
                self._remember(key, score, status, detail)
                for i in jobs[key]:
                    out[i] = Grade(float(score), status, key[1])
        self.stats.update(g.status for g in out)
        return out

    @staticmethod
    def summarize(grades: list[Grade]) -> dict[str, float]:
        """Fraction of completions per metric group (graded, unparseable, timed_out, errors, invalid_gold)."""
        counts = Counter(category(g.status) for g in grades)
        n = max(1, len(grades))
        return {name: counts[name] / n for name in CATEGORIES}

    def _run(self, kind: str, items: list[tuple[str, str]]) -> list[tuple[float, str, str]]:
        if self.pool is not None:
            return self.pool.run(kind, items)
        from dler.rewards import grading

        timeout = grading.inner_timeout(self.answer_timeout)
        results = []
        for a, b in items:
            try:
                results.append(run_job(kind, a, b, timeout))
            except Exception as exc:  # grading functions report errors themselves; this is a last resort
                results.append((0.0, ERROR, f"{type(exc).__name__}"))
        return results

    def _remember(self, key, score, status, detail) -> None:
        if status in _CACHEABLE:
            self._cache[key] = (float(score), status)
            if len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        elif status == INVALID_GOLD:
            self._bad_golds[key[0]] = detail or "unparseable"
            self._invalid_gold(key[0], detail)
        else:
            kind = category(status)
            self._warn(
                status,
                f"{kind.replace('_', ' ')}: answer {key[1][:80]!r} against gold {key[0][:40]!r} scored 0 "
                f"({status}{': ' + detail if detail else ''})",
            )

    def _invalid_gold(self, raw, why) -> None:
        message = (
            f"gold answer {str(raw)[:80]!r} in column {self.answer_column!r} cannot be parsed ({why}); every rollout "
            "of its prompt scores 0. Recipes check every gold before training; with your own script, run "
            "dler.rewards.prepare_gold_answers on the dataset to find and drop such rows."
        )
        if self.on_invalid_gold == "error":
            raise ValueError(message)
        self._warn(INVALID_GOLD, message)

    def _gold(self, raw) -> tuple[str | None, str]:
        """(gold string, "ok") or (None, why), normalised once per distinct raw value."""
        raw_key = (type(raw), raw)  # typed: True == 1 == 1.0 as dict keys
        try:
            hit = self._golds.get(raw_key)
        except TypeError:  # unhashable (a list)
            raw_key = (type(raw), repr(raw))
            hit = self._golds.get(raw_key)
        if hit is None:
            hit = extract.normalize_gold(raw, self.max_answer_chars, self.max_depth)
            self._golds[raw_key] = hit
        if hit[0] is not None and hit[0] in self._bad_golds:
            return None, self._bad_golds[hit[0]]
        return hit

    def check_answers(self, values: list) -> list[tuple[bool, str]]:
        """(gradable, why) per raw gold value (a dataset's answer column): it normalises (`normalize_gold`),
        parses, and grades correct against itself under this reward's grader. Distinct values are checked once."""
        with self._lock:
            normalised = [self._gold(v) for v in values]
            strings = sorted({g for g, _ in normalised if g is not None})
            verdicts = dict(zip(strings, self._check_golds(strings), strict=True))
        return [(False, why) if g is None else verdicts[g] for g, why in normalised]

    def check_golds(self, golds: list[str]) -> list[tuple[bool, str]]:
        """Check normalised gold strings once (in the workers): each must parse and grade correct against itself
        under this reward's grader. Plain numbers are valid without sympy."""
        with self._lock:
            return self._check_golds(golds)

    def _check_golds(self, golds: list[str]) -> list[tuple[bool, str]]:
        out: list[tuple[bool, str] | None] = [None] * len(golds)
        todo: dict[str, list[int]] = {}
        for i, g in enumerate(golds):
            if extract.is_plain_number(g):
                out[i] = (True, "ok")
            else:
                todo.setdefault(g, []).append(i)
        keys = list(todo)
        results = []
        for i in range(0, len(keys), 512):  # slices, so that a large dataset stays within each call's deadline
            results += self._run(_JOBS[self.grader][1], [(g, "") for g in keys[i : i + 512]])
        for g, (_, status, detail) in zip(keys, results, strict=True):
            ok = status == CORRECT
            if not ok:
                self._bad_golds[g] = detail or status
            for i in todo[g]:
                out[i] = (ok, "ok" if ok else (detail or status))
        return out


# --------------------------------------------------------------------------------------------- functional API

_SHARED: dict[tuple, MathReward] = {}


def math_correctness(completions, answers, grader: str = "dler", **options) -> list[float]:
    """1.0 or 0.0 per completion: is the completion's final answer equal to the gold answer?

    `grader` is "dler" (the last `\\boxed{}` after `</think>`, dler's rules) or "released" (DLER's released
    reward); see `MathReward`. `options` are `MathReward`'s other arguments (think_end, require_think_end,
    num_workers, answer_timeout, ...). One grader (and its worker pool) is kept per set of options and reused.
    """
    options["grader"] = check_grader(grader)
    key = tuple(sorted(options.items()))
    reward = _SHARED.get(key)
    if reward is None:
        reward = _SHARED.setdefault(key, MathReward(**options))
    return reward.score(completions, answers)
