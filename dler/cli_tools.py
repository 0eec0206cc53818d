"""`dler report` and `dler merge`: their flags and how each runs."""

from __future__ import annotations

import argparse
import sys

from dler.cli_args import floats


def report_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help="Table 1, length analyses, pass@k and plots from finished runs",
        description="Write report.md (the paper's Table 1, length by correctness, pass@k / maj@k, temperature "
        "sweep, protocol) and PNG plots from one or more run directories; a checkpoint sweep (`dler eval "
        "--checkpoints`) adds accuracy, length and truncation against training step, and --training a training "
        "run's logged metrics against step (docs/curves.md).",
    )
    p.add_argument("runs", nargs="*", metavar="RUN_DIR",
                   help="run directories, sweep folders (a checkpoint sweep adds curves over training), or "
                        "training runs' output_dirs (a folder with metrics.jsonl and no results.json is read as "
                        "--training)")  # fmt: skip
    p.add_argument("--training", action="append", default=[], metavar="RUN_DIR",
                   help="a training run's output_dir (or its metrics.jsonl): plot its logged metrics against step "
                        "(repeat to compare runs; docs/curves.md)")  # fmt: skip
    p.add_argument("--baseline", default=None, metavar="RUN_DIR", help="run the length cut is measured against")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="where report.md and the plots go (default: the run directory, or ./report for several)")  # fmt: skip
    p.add_argument("--no-plots", action="store_true", help="tables only")
    return p


def merge_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "merge",
        help="update-selective merging (paper Sec. 4.6): keep the largest updates of a tuned model",
        description="Merge back the largest updates of a tuned model: the top --top-fraction of parameters by "
        "|tuned - base| get base + scale * (tuned - base), every other one keeps the base's value. Lists of "
        "fractions and scales write one model per cell (a sweep). Streams safetensors shards one tensor at a "
        "time. Details: docs/merge.md.",
    )
    p.add_argument("--base", required=True, help="the base model: a folder or a hub id")
    p.add_argument(
        "--tuned", required=True, help="the tuned model (a folder, a hub id, or a PEFT LoRA adapter folder)"
    )
    p.add_argument("--output", required=True, help="the merged model's folder (a sweep: one sub-folder per cell)")
    p.add_argument("--top-fraction", type=floats, default=[0.25], help="fraction(s) of parameters kept (paper: 0.25)")
    p.add_argument("--scale", type=floats, default=[0.7], help="scale(s) of the kept updates (paper: 0.7)")
    p.add_argument(
        "--selection",
        choices=["global", "tensor"],
        default="global",
        help="rank |delta| over the whole model (global, the paper's wording) or within each tensor",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return p


def run_merge(args, parser) -> int:
    from dler.merge import MergeError, merge_checkpoints, merge_sweep

    try:
        if len(args.top_fraction) == 1 and len(args.scale) == 1:
            report = merge_checkpoints(
                args.base, args.tuned, args.output, args.top_fraction[0], args.scale[0], args.selection, args.overwrite
            )
            print(
                f"merged into {args.output}: {report['fraction_kept']:.2%} of {report['parameters']} parameters updated"
            )
        else:
            reports = merge_sweep(
                args.base, args.tuned, args.output, args.top_fraction, args.scale, args.selection, args.overwrite
            )
            print(f"{len(reports)} merged models in {args.output}")
    except MergeError as exc:
        parser.fail(str(exc))
    return 0


def run_report(args, parser) -> int:
    from pathlib import Path

    from dler.eval.report import report
    from dler.eval.run_folders import ReportError
    from dler.eval.training_plots import is_training_run, write_training

    training = [*args.training, *(d for d in args.runs if is_training_run(d))]
    evaluated = [d for d in args.runs if not is_training_run(d)]
    if not evaluated and not training:
        parser.error("give run directories (RUN_DIR ...) or --training RUN_DIR")
    if args.baseline is not None and not evaluated:
        parser.fail("--baseline compares evaluation runs: give the runs to compare as RUN_DIR ...")
    try:
        if evaluated:
            path = report(evaluated, baseline=args.baseline, output=args.output, plots=not args.no_plots)
        else:  # training curves only: a fresh report.md
            path = Path(args.output or (training[0] if len(training) == 1 else "report")) / "report.md"
            if Path(training[0]).is_file() and args.output is None:  # --training given as the metrics.jsonl
                path = Path(training[0]).parent / "report.md"
            path.unlink(missing_ok=True)
        if training:
            write_training(training, path.parent, path, plots=not args.no_plots)
    except ReportError as exc:
        parser.fail(str(exc))
    print(path.read_text())
    print(f"written: {path}", file=sys.stderr)
    return 0
