"""dler: Doing Length pEnalty Right, as a TRL GRPOTrainer subclass.

Heavy imports (torch, trl) are deferred so that light modules such as `dler.advantages` or the reward
workers start fast.
"""

__version__ = "0.1.0"

_LAZY = {
    "DLERConfig": "dler.config",
    "DLERTrainer": "dler.trainer",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dler' has no attribute {name!r}")
