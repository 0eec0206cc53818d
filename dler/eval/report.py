"""`dler report`: the paper's Table 1 and the neighbouring papers' analyses from finished evaluation runs.

Reads `results.json`, the per-problem `generations/<benchmark>.csv` (for paired comparisons and error bands) and
`scaling.json` (test-time scaling, `dler eval --parallel-k`) of each run (`dler.eval.run_folders`), so it works on
runs copied from a GPU cluster. Writes `report.md` (tables) and PNG plots into the output folder:

- Table 1: pass@1 ± standard error per benchmark, average, average length and the length cut against a baseline
  run; with a baseline, a paired comparison per benchmark on the problems both runs share;
- Table 5: Pass@K ± se, mean length and latency per K (test-time scaling), from `scaling.json`;
- length by correctness, truncation and accuracy per 1,000 tokens; pass@k and maj@k; a temperature table
  when a model was evaluated at several temperatures; each run's protocol, with differences flagged;
- plots: accuracy vs length, pass@k curves, the pass@k boundary view (log k, base vs RL), length by correctness,
  maj@k vs tokens spent (parallel thinking), and where the runs hold the data: budget curves, length histograms,
  Pass@K vs latency.

The tables are in `dler.eval.tables`, the protocol warnings in `dler.eval.protocol_warnings`, the figures in
`dler.eval.plots` and `dler.eval.length_plots`.
"""

from __future__ import annotations

from pathlib import Path

from dler.eval.curves import write_curves
from dler.eval.plots import write_plots
from dler.eval.protocol_warnings import protocol_warnings
from dler.eval.run_folders import ReportError, Run, find_runs, label_runs, with_results
from dler.eval.store import RESULTS_FILE
from dler.eval.tables import length_table, paired_table, passk_table, protocol_table, table1, table5, temperature_table
from dler.experiments.report import experiment_report


def build_report(runs: list[Run], baseline: Run | None = None, plots: list[Path] | None = None) -> str:
    """report.md: the tables of `runs` (and the baseline), protocol warnings where they differ, and the plots."""
    everything = _with_baseline(runs, baseline)
    evaluated = with_results(everything)
    parts = ["# Evaluation report", ""]
    warnings = protocol_warnings(everything)
    if evaluated:
        parts += ["## Table 1: accuracy and length", "", table1(runs, baseline if baseline in evaluated else None)]
        if warnings:
            parts += _warning_lines(warnings)
        if baseline is not None and baseline.results is not None and len(evaluated) > 1:
            parts += ["## Paired comparison with the baseline", "", paired_table(evaluated, baseline)]
    t5 = table5(everything, baseline)
    if t5:
        parts += ["## Table 5: test-time scaling", "", t5]
        if warnings and not evaluated:
            parts += _warning_lines(warnings)
    if evaluated:
        temps = temperature_table(evaluated)
        if temps:
            parts += ["## Temperature sweep (overall)", "", temps]
        parts += ["## Length by correctness", "", length_table(evaluated), "## pass@k and majority vote", "",
                  passk_table(evaluated)]  # fmt: skip
    parts += ["## Protocol", "", protocol_table(everything)]
    if plots:
        parts += ["## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots] + [""]
    return "\n".join(parts)


def _with_baseline(runs: list[Run], baseline: Run | None) -> list[Run]:
    """The baseline first when it is not one of `runs`, then `runs`."""
    return ([baseline] if baseline is not None and baseline not in runs else []) + runs


def _warning_lines(warnings: list[str]) -> list[str]:
    return ["**Warning: these runs were not evaluated the same way:**", "", *[f"- {w}" for w in warnings], ""]


def report(
    run_dirs: list[str | Path],
    baseline: str | Path | None = None,
    output: str | Path | None = None,
    plots: bool = True,
) -> Path:
    """Write report.md and the plots for `run_dirs` (and a baseline run) to `output`; returns report.md's path.

    `output` defaults to the single run directory given, or `report/` in the current directory for several.
    """
    if path := experiment_report(run_dirs, output, lambda dirs, out: report(dirs, baseline, out, plots), plots):
        return path  # an experiment folder (experiment.json): its cells, table and accuracy-length plane
    runs = find_runs(list(run_dirs))
    base = None
    if baseline is not None:
        found = find_runs([baseline])
        if len(found) != 1:
            raise ReportError(
                f"--baseline must be one run (a folder with {RESULTS_FILE}); {baseline} holds {len(found)}"
            )
        base = next((r for r in runs if r.path.resolve() == found[0].path.resolve()), found[0])
        if base not in runs:
            label_runs([base, *runs])
    if output is None:
        output = runs[0].path if len(run_dirs) == 1 and len(runs) == 1 else Path("report")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    everything = _with_baseline(runs, base)
    written = write_plots(everything, out, base) if plots else []
    path = out / "report.md"
    path.write_text(build_report(runs, base, written))
    write_curves(everything, out, path, plots)  # checkpoint sweeps: curves over training
    return path
