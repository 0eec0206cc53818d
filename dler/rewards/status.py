"""Outcome names of one graded answer, and the metric each one counts towards.

Every answer scores 1.0 (status "correct") or 0.0 with a reason; reasons are grouped into the logged metrics
`math/graded`, `math/unparseable`, `math/timed_out`, `math/errors` and `math/invalid_gold`.
"""

from dler.rewards import extract, prechecks

CORRECT = "correct"
WRONG = "wrong"
UNPARSED = "unparsed"  # math-verify found no maths in the boxed answer
TIMEOUT = "timeout"  # math-verify's own timeout fired inside the worker
DEADLINE = "deadline"  # the answer ran past its deadline: the worker was killed and replaced
BATCH_DEADLINE = "batch_deadline"  # still unfinished when the batch deadline came
ERROR = "error"  # an exception while grading (logged)
WORKER_DIED = "worker_died"  # the worker crashed (segfault, OOM kill) on this answer
INVALID_GOLD = "invalid_gold"  # the gold answer cannot be parsed

GRADED = "graded"
UNPARSEABLE = "unparseable"
TIMED_OUT = "timed_out"
ERRORS = "errors"

CATEGORY = {
    CORRECT: GRADED,
    WRONG: GRADED,
    UNPARSED: UNPARSEABLE,
    extract.NO_THINK_END: UNPARSEABLE,
    extract.NO_BOX: UNPARSEABLE,
    extract.UNCLOSED_BOX: UNPARSEABLE,
    extract.EMPTY: UNPARSEABLE,
    prechecks.TOO_LONG: UNPARSEABLE,
    prechecks.TOO_DEEP: UNPARSEABLE,
    prechecks.HUGE_POWER: UNPARSEABLE,
    prechecks.HUGE_FACTORIAL: UNPARSEABLE,
    TIMEOUT: TIMED_OUT,
    DEADLINE: TIMED_OUT,
    BATCH_DEADLINE: TIMED_OUT,
    ERROR: ERRORS,
    WORKER_DIED: ERRORS,
    INVALID_GOLD: INVALID_GOLD,
}
CATEGORIES = (GRADED, UNPARSEABLE, TIMED_OUT, ERRORS, INVALID_GOLD)


def category(status: str) -> str:
    """Metric group of a status; unknown statuses count as errors so that nothing disappears."""
    return CATEGORY.get(status, ERRORS)
