"""Experiments of several training runs (cells) compared on one accuracy-length plane: the penalty grid (DLER Fig. 8)
and the ablations (DLER minus one component at a time).

`recipes/penalty_grid.py` and `recipes/ablations.py` describe their cells; this package validates every cell before
the first one trains (`cells`), trains and evaluates them resumably (`runner`), tabulates them (`table`) and adds the
plane to `dler report OUT` (`report`). The per-penalty settings derived from the recipe's lengths are in `defaults`.
Details: docs/experiments.md.
"""
