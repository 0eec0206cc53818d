"""`dler compare`: two evaluated runs compared as "Does RL incentivize reasoning" (Yue et al. 2025) compares a base
and an RL model, on the problems both runs share.

- coverage at n samples: the problems some sample of A solves, of B, of both, of neither (a problem counts as
  solved when at least one of its n samples is correct); whether A's solved set contains B's and vice versa, with
  the problems that break containment;
- per-problem accuracy histograms (the fraction of a problem's n samples that are correct), A and B side by side;
- perplexity tables from the output folders of `dler perplexity` (`dler.eval.perplexity`).

Everything but the figure is pure Python on the per-problem rows `Run.per_problem` reads from
`generations/<benchmark>.csv`, so it is tested on hand-written CSVs. Details: docs/comparing.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from dler.eval.plot_style import figure_legend, panel_grid, save, style_axes
from dler.eval.run_folders import ReportError, Run, find_runs, in_paper_order, label_runs

PerProblem = dict[int, tuple[int, float]]  # problem index -> (samples, mean correctness), as Run.per_problem
COMPARE_FILE = "compare.md"
HISTOGRAM_PLOT = "accuracy_histograms.png"
HISTOGRAM_DATA = "accuracy_histograms.json"
SHOWN_IDS = 5  # problems named per broken containment


def correct_count(samples: int, mean: float) -> int:
    """Correct samples of a problem from its sample count and mean correctness (the CSV stores both)."""
    return round(mean * samples)


@dataclass(frozen=True)
class Coverage:
    """Coverage of one benchmark on the problems both runs have: the problem indices solved (by some sample) by A
    only, B only, both and neither; `samples_a` / `samples_b`: the distinct sample counts per problem of each run;
    `dropped`: problems only one run has (left out)."""

    benchmark: str
    only_a: tuple[int, ...]
    only_b: tuple[int, ...]
    both: tuple[int, ...]
    neither: tuple[int, ...]
    samples_a: tuple[int, ...]
    samples_b: tuple[int, ...]
    dropped: int

    @property
    def shared(self) -> int:
        return len(self.only_a) + len(self.only_b) + len(self.both) + len(self.neither)

    @property
    def solved_a(self) -> int:
        return len(self.only_a) + len(self.both)

    @property
    def solved_b(self) -> int:
        return len(self.only_b) + len(self.both)

    @property
    def a_contains_b(self) -> bool:
        """Every problem B solves, A solves too (the problems in `only_b` break it)."""
        return not self.only_b

    @property
    def b_contains_a(self) -> bool:
        return not self.only_a

    @property
    def same_n(self) -> bool:
        """Both runs drew the same number of samples for every problem: coverage compares like with like."""
        return len(self.samples_a) == 1 and self.samples_a == self.samples_b


def coverage(benchmark: str, a: PerProblem, b: PerProblem) -> Coverage:
    """Coverage of `benchmark` on the problems A and B share (see `Coverage`); CompareError when they share none."""
    shared = sorted(set(a) & set(b))
    if not shared:
        raise CompareError(f"{benchmark}: the two runs share no problem (A has {len(a)}, B has {len(b)})")
    groups: dict[tuple[bool, bool], list[int]] = {(x, y): [] for x in (True, False) for y in (True, False)}
    for i in shared:
        groups[(correct_count(*a[i]) > 0, correct_count(*b[i]) > 0)].append(i)
    return Coverage(
        benchmark,
        only_a=tuple(groups[(True, False)]),
        only_b=tuple(groups[(False, True)]),
        both=tuple(groups[(True, True)]),
        neither=tuple(groups[(False, False)]),
        samples_a=tuple(sorted({a[i][0] for i in shared})),
        samples_b=tuple(sorted({b[i][0] for i in shared})),
        dropped=len(set(a) ^ set(b)),
    )


class CompareError(ReportError):
    """Runs that cannot be compared; the CLI prints it as a usage error."""


# ------------------------------------------------------------------------------------------------ histograms


def accuracy_bin_labels(bins: int = 10) -> list[str]:
    """The histogram's bins: never solved ("0"), `bins` equal intervals of (0, 1), always solved ("1")."""
    inner = [f"[{k / bins:g}, {(k + 1) / bins:g})" for k in range(bins)]
    return ["0", inner[0].replace("[0,", "(0,"), *inner[1:], "1"]


def accuracy_bin(correct: int, samples: int, bins: int = 10) -> int:
    """The bin of a problem with `correct` of `samples` samples correct: 0 for none, bins + 1 for all, else
    1 + floor(bins x correct / samples), in integers (0.3 is not put in [0.2, 0.3) by rounding)."""
    if not 0 <= correct <= samples or samples < 1:
        raise ValueError(f"accuracy_bin: need 0 <= correct <= samples and samples >= 1, got {correct}/{samples}")
    if correct == 0:
        return 0
    if correct == samples:
        return bins + 1
    return 1 + correct * bins // samples


def accuracy_histogram(rows: PerProblem, problems: list[int], bins: int = 10) -> list[int]:
    """Problems per bin (`accuracy_bin_labels`) among `problems`, from a run's per-problem rows."""
    counts = [0] * (bins + 2)
    for i in problems:
        samples, mean = rows[i]
        counts[accuracy_bin(correct_count(samples, mean), samples, bins)] += 1
    return counts


def plot_accuracy_histograms(hists: dict[str, tuple[list[int], list[int]]], labels: tuple[str, str], path: Path):
    """One panel per benchmark (and all benchmarks pooled when there are several): problems per accuracy bin, A's
    bars left of B's in each bin."""
    from matplotlib.ticker import MaxNLocator

    panels = dict(hists)
    if len(hists) > 1:
        panels["all benchmarks"] = tuple([sum(col) for col in zip(*(h[j] for h in hists.values()), strict=True)]
                                         for j in (0, 1))  # fmt: skip
    fig, axes = panel_grid(len(panels), 5.2, 3.6, 0.6)
    names = accuracy_bin_labels(len(next(iter(hists.values()))[0]) - 2)
    width = 0.4
    for ax, (name, (ha, hb)) in zip(axes, panels.items(), strict=True):
        xs = range(len(names))
        ax.bar([x - width / 2 for x in xs], ha, width, color="tab:blue", label=labels[0])
        ax.bar([x + width / 2 for x in xs], hb, width, color="tab:orange", label=labels[1])
        ax.set_xticks(list(xs), names, rotation=60, ha="right")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        style_axes(
            ax,
            f"{name} ({sum(ha)} problem{'' if sum(ha) == 1 else 's'})",
            "fraction of a problem's samples that are correct",
            "problems",
        )
    figure_legend(fig, axes, ncol=2)
    return save(fig, path)


# ------------------------------------------------------------------------------------------------ the report


def _one_run(path: str | Path, which: str) -> Run:
    runs = find_runs([path])
    if len(runs) != 1 or runs[0].results is None:
        found = ", ".join(str(r.path) for r in runs)
        raise CompareError(f"RUN_{which} {path} must be one evaluated run (a folder with results.json); found {found}")
    return runs[0]


def compare_runs(a: Run, b: Run) -> list[Coverage]:
    """Coverage of every benchmark both runs hold per-problem data for, in paper order."""
    names = in_paper_order([a.benchmarks, b.benchmarks])
    rows = [(n, a.per_problem(n), b.per_problem(n)) for n in names]
    out = [coverage(n, pa, pb) for n, pa, pb in rows if pa and pb and set(pa) & set(pb)]
    if not out:
        raise CompareError(
            f"{a.path} and {b.path} share no benchmark with per-problem generations (generations/<benchmark>.csv); "
            f"benchmarks: {', '.join(a.benchmarks) or 'none'} and {', '.join(b.benchmarks) or 'none'}"
        )
    return out


def _ids(ids: tuple[int, ...]) -> str:
    shown = ", ".join(map(str, ids[:SHOWN_IDS]))
    return shown + (", ..." if len(ids) > SHOWN_IDS else "")


def _containment(holds: bool, breakers: tuple[int, ...]) -> str:
    return "yes" if holds else f"no ({len(breakers)}: {_ids(breakers)})"


def _n(samples: tuple[int, ...]) -> str:
    return "/".join(map(str, samples)) if len(samples) <= 2 else f"{samples[0]}-{samples[-1]}"


def coverage_table(covs: list[Coverage]) -> str:
    """Markdown: one row per benchmark (and a total): shared problems, samples per problem, solved by each, by A
    only, B only, both, neither, and whether each solved set contains the other (the problems that break it)."""
    header = ["benchmark", "problems", "n (A / B)", "solved A", "solved B", "A only", "B only", "both", "neither",
              "A ⊇ B", "B ⊇ A"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * 8 + "|---|---|"]
    for c in covs:
        lines.append("| " + " | ".join([
            c.benchmark, str(c.shared), f"{_n(c.samples_a)} / {_n(c.samples_b)}", str(c.solved_a), str(c.solved_b),
            str(len(c.only_a)), str(len(c.only_b)), str(len(c.both)), str(len(c.neither)),
            _containment(c.a_contains_b, c.only_b), _containment(c.b_contains_a, c.only_a),
        ]) + " |")  # fmt: skip
    if len(covs) > 1:
        total = [sum(len(getattr(c, k)) for c in covs) for k in ("only_a", "only_b", "both", "neither")]
        holds = [all(c.a_contains_b for c in covs), all(c.b_contains_a for c in covs)]
        lines.append("| " + " | ".join([
            "**all**", str(sum(total)), "", str(total[0] + total[2]), str(total[1] + total[2]), *map(str, total),
            "yes" if holds[0] else f"no ({total[1]})", "yes" if holds[1] else f"no ({total[0]})",
        ]) + " |")  # fmt: skip
    return "\n".join(lines)


def compare_markdown(a: Run, b: Run, covs: list[Coverage], perplexity: str | None, plot: str | None) -> str:
    """compare.md: which run is A and B, the coverage table with its caveats, the histograms, the perplexities."""
    parts = ["# Comparing two runs", "", f"- **A**: {a.label} ({a.model}, `{a.path}`)",
             f"- **B**: {b.label} ({b.model}, `{b.path}`)", "",
             "## Coverage at n samples", "",
             "A problem counts as solved when at least one of its n samples is correct; only the problems both runs "
             "hold are counted. \"A ⊇ B\": every problem B solves, A solves too; where not, the problems that break "
             "it (their indices in the benchmark).", "", coverage_table(covs), ""]  # fmt: skip
    uneven = [c.benchmark for c in covs if not c.same_n]
    if uneven:
        parts += [f"**Warning:** the runs drew different numbers of samples on {', '.join(uneven)}: coverage grows "
                  "with n, so it favours the run with more samples there.", ""]  # fmt: skip
    dropped = [f"{c.benchmark} ({c.dropped})" for c in covs if c.dropped]
    if dropped:
        parts += [f"Problems only one run holds, left out: {', '.join(dropped)}.", ""]
    if plot:
        parts += ["## Per-problem accuracy", "", f"![accuracy histograms]({plot})", ""]
    if perplexity:
        parts += ["## Perplexity", "", perplexity, ""]
    return "\n".join(parts)


def compare(
    run_a: str | Path,
    run_b: str | Path,
    output: str | Path,
    perplexity_dirs: list[str | Path] | None = None,
    plots: bool = True,
    bins: int = 10,
) -> Path:
    """Write compare.md (and the histograms, with their data as JSON) for two runs into `output`; returns its path.
    Perplexity folders: those given, and any `*/perplexity.json` inside either run or `output`."""
    from dler.eval.perplexity import find_perplexity_dirs, perplexity_table

    a, b = _one_run(run_a, "A"), _one_run(run_b, "B")
    if a.path.resolve() == b.path.resolve():
        raise CompareError(f"RUN_A and RUN_B are the same folder ({a.path}); give two runs")
    label_runs([a, b])
    covs = compare_runs(a, b)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    plot = None
    if plots:
        hists = {}
        for c in covs:
            ids = sorted(c.only_a + c.only_b + c.both + c.neither)
            pa, pb = a.per_problem(c.benchmark), b.per_problem(c.benchmark)
            hists[c.benchmark] = (accuracy_histogram(pa, ids, bins), accuracy_histogram(pb, ids, bins))
        plot_accuracy_histograms(hists, (f"A: {a.label}", f"B: {b.label}"), out / HISTOGRAM_PLOT)
        data = {"bins": accuracy_bin_labels(bins), "A": a.label, "B": b.label,
                "benchmarks": {k: {"A": v[0], "B": v[1]} for k, v in hists.items()}}  # fmt: skip
        (out / HISTOGRAM_DATA).write_text(json.dumps(data, indent=2) + "\n")
        plot = HISTOGRAM_PLOT
    folders = find_perplexity_dirs(perplexity_dirs or [], [a.path, b.path, out])
    names = {str(r.path.resolve()): f"{which}: {r.label}" for which, r in (("A", a), ("B", b))}
    table = perplexity_table(folders, names) if folders else None
    path = out / COMPARE_FILE
    path.write_text(compare_markdown(a, b, covs, table, plot))
    return path
