"""The `dler` command: evaluate, report, compare, score solve rates and perplexities, merge.

    dler eval --model PATH --output-dir DIR [--benchmarks math500,aime24,amc,minerva,olympiad] [--n 16]
              [--temperature 0.6 | 0,0.6] [--top-p 0.95] [--max-tokens 32768] [--backend auto|vllm|transformers]
              [--grader dler|released] [--seed-per-request] [--reproducible]
    dler eval --model PATH --output-dir DIR --benchmarks aime24 --max-tokens 32000 --parallel-k 1,2,4,...,256
    dler eval --model BASE --output-dir DIR --prompt-format qwen-boxed --n 256    # prompts: docs/prompts.md
    dler report RUN_DIR... [--baseline RUN_DIR] [--output DIR]
    dler solve-rate --model PATH --data TRAIN.jsonl --output OUT.jsonl [--n 16] [--temperature 0.6]
    dler compare RUN_A RUN_B --output DIR                  # coverage, per-problem accuracy: docs/comparing.md
    dler perplexity --model M --responses RUN_DIR --output-dir DIR
    dler merge --base BASE --tuned TUNED --output DIR [--top-fraction 0.25] [--scale 0.7]   # docs/merge.md

Every setting is checked (benchmark names, local files, values, the model path or hub id, prompt lengths against
the context) before anything is written or a model is loaded. Ctrl-C keeps what was written and exits with 130;
the same command resumes. `python -m dler` works the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys

from dler import cli_compare, cli_eval, cli_tools
from dler.cli_args import OneLineParser

# name -> (adds its parser to the subparsers, runs it with (args, its parser) and returns the exit status)
COMMANDS = {
    "eval": (cli_eval.eval_parser, cli_eval.run_eval),
    "report": (cli_tools.report_parser, cli_tools.run_report),
    "solve-rate": (cli_eval.solve_rate_parser, cli_eval.run_solve_rate),
    "merge": (cli_tools.merge_parser, cli_tools.run_merge),
    "compare": (cli_compare.compare_parser, cli_compare.run_compare),
    "perplexity": (cli_compare.perplexity_parser, cli_compare.run_perplexity),
}


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dler", description="DLER: evaluation, reports, model comparisons, solve rates and merging."
    )
    sub = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    sub.required = True
    for add_parser, _ in COMMANDS.values():
        add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    sub = parser._subparsers._group_actions[0].choices[args.command]  # the subcommand's parser, for its errors
    if unknown:  # name the subcommand's usage, not the top-level one
        sub.unknown_flags(unknown)
    return COMMANDS[args.command][1](args, sub)


if __name__ == "__main__":
    sys.exit(main())
