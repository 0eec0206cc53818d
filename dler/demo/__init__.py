"""`make demo`: DLER makes a tiny model think shorter without losing accuracy, on CPU, offline, in minutes.

    python -m dler.demo [--seed 0] [--output-dir runs/demo]

- `pipeline`: the command line and the five stages, in order; writes `report.json`.
- `toy`: the toy task (column-by-column additions padded with removable "wait, let me verify" lines), its grading,
  tokenizer and model.
- `tiny`: a tiny offline Qwen2 model and tokenizer (also used by tests and benchmarks) and the settings of
  `recipes/dler_tiny.py`, which the DLER stage trains with.
- `training`: the SFT warm start and the DLER stage.
- `report`: held-out evaluation, the before/after table and `training.png`.
- `console`: quiet library logging, progress bars and per-stage timings.
"""
