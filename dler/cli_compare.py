"""`dler compare` and `dler perplexity`: two evaluated runs compared as "Does RL incentivize reasoning" does
(coverage, per-problem accuracy histograms, perplexity of one model's responses under another); docs/comparing.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dler.cli_args import EXIT_INTERRUPTED


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def _names(text: str) -> list[str]:
    names = [x.strip() for x in text.split(",") if x.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give benchmark names separated by commas, e.g. math500,aime24")
    return names


def compare_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "compare",
        help="coverage, per-problem accuracy histograms and perplexities of two evaluated runs",
        description="Compare two runs of dler eval as 'Does RL incentivize reasoning' compares a base and an RL "
        "model: problems solved by A only, B only, both, neither (at the runs' n samples), whether one solved set "
        "contains the other, per-problem accuracy histograms side by side, and the perplexity tables of "
        "dler perplexity. Writes compare.md and accuracy_histograms.png to --output.",
    )
    p.add_argument("run_a", metavar="RUN_A", help="run folder of model A (holds results.json and generations/)")
    p.add_argument("run_b", metavar="RUN_B", help="run folder of model B")
    p.add_argument("--output", required=True, metavar="DIR", help="where compare.md and the plot go")
    p.add_argument("--perplexity", type=_names, default=[], metavar="DIR[,DIR...]",
                   help="output folders of dler perplexity to tabulate (those inside RUN_A, RUN_B or --output "
                        "are found without it)")  # fmt: skip
    p.add_argument("--bins", type=_positive_int, default=10, help="equal accuracy bins between 0 and 1 (exclusive)")
    p.add_argument("--no-plots", action="store_true", help="tables only")
    return p


def run_compare(args, parser) -> int:
    from dler.eval.compare import compare
    from dler.eval.run_folders import ReportError

    try:
        path = compare(args.run_a, args.run_b, args.output, args.perplexity, plots=not args.no_plots, bins=args.bins)
    except ReportError as exc:
        parser.fail(str(exc))
    print(path.read_text())
    print(f"written: {path}", file=sys.stderr)
    return 0


def perplexity_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "perplexity",
        help="perplexity of one run's responses under a model (e.g. an RL model's responses under its base)",
        description="Score every response of a dler eval run under --model (transformers, batched, no gradients): "
        "each response's mean negative log-likelihood given its prompt, as the run rendered it. Writes "
        "<benchmark>.jsonl (resumable: a rerun skips the problems done) and perplexity.json (token-weighted "
        "perplexity, and the median and mean of the per-response ones) to --output-dir.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="the scoring model: a path or hub id")
    p.add_argument("--responses", required=True, metavar="RUN_DIR", help="the run whose responses are scored")
    p.add_argument("--output-dir", required=True, help="where the scores go (rerunning it resumes)")
    p.add_argument("--benchmarks", type=_names, default=None, help="comma-separated (default: every one the run has)")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="responses per forward pass")
    p.add_argument("--limit", type=_positive_int, default=None, help="first N problems of each benchmark")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto",
                   help="auto: bfloat16 on GPU, float32 on CPU")  # fmt: skip
    return p


def run_perplexity(args, parser) -> int:
    from dler.eval.errors import ResumeError
    from dler.eval.perplexity import perplexity, perplexity_table
    from dler.eval.run_folders import ReportError

    try:
        perplexity(args.model, args.responses, args.output_dir, args.benchmarks, args.batch_size, args.limit,
                   args.dtype)  # fmt: skip
    except (ReportError, ResumeError) as exc:
        parser.fail(str(exc))
    except KeyboardInterrupt:
        print(f"interrupted; rerun the same command to resume (scored problems are in {args.output_dir})",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    print(perplexity_table([Path(args.output_dir)]))
    return 0
