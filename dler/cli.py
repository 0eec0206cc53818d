"""The `dler` command: `dler eval` (generate, grade, score) and `dler report` (tables and plots).

    dler eval --model PATH --output-dir DIR [--benchmarks math500,aime24,amc,minerva,olympiad] [--n 16]
              [--temperature 0.6 | 0,0.6] [--top-p 0.95] [--max-tokens 32768] [--backend auto|vllm|transformers]
              [--grader dler|released] [--seed-per-request] [--reproducible]
    dler eval --model PATH --output-dir DIR --benchmarks aime24 --max-tokens 32000 --parallel-k 1,2,4,...,256
    dler eval --model BASE --output-dir DIR --prompt-format qwen-boxed --n 256    # prompts: docs/prompts.md
    dler report RUN_DIR... [--baseline RUN_DIR] [--output DIR]
    dler solve-rate --model PATH --data TRAIN.jsonl --output OUT.jsonl [--n 16] [--temperature 0.6]

Every setting is checked (benchmark names, local files, values, the model path or hub id, prompt lengths against
the context) before anything is written or a model is loaded. Ctrl-C keeps what was written and exits with 130;
the same command resumes. `python -m dler` works the same way.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (`dler eval: error: ...`, and where `--help` lists the settings) and exit
    2, without the usage block in front of the one useful line."""

    def error(self, message):
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (`{self.prog} --help` lists the settings)\n")

    def fail(self, message) -> None:
        """A setting that cannot work, named with its fix by `message`: one line, exit 2."""
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")

    def unknown_flags(self, unknown: list[str]) -> None:
        """Refuse flags this parser does not know, with the closest known flag for each misspelled one."""
        import difflib

        known = [s for a in self._actions for s in a.option_strings if s.startswith("--")]
        close = {u: difflib.get_close_matches(u.split("=", 1)[0], known, n=1) for u in unknown if u.startswith("-")}
        hints = [f"{u.split('=', 1)[0]} -> {c[0]}" for u, c in close.items() if c]
        self.error(
            f"unrecognized arguments: {' '.join(unknown)}" + (f" (did you mean {', '.join(hints)}?)" if hints else "")
        )


def _number_list(cast, what: str, example: str, minimum: float | None = None):
    """An argparse type: comma-separated numbers, each read by `cast`, at least one, each >= `minimum` if given."""

    def parse(text: str) -> list:
        kind = "integers" if cast is int else "numbers"
        try:
            values = [cast(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{what} are {kind} separated by commas, e.g. {example}; got {text!r}"
            ) from None
        if not values:
            raise argparse.ArgumentTypeError(f"give at least one of the {what}, e.g. {example}")
        if minimum is not None and any(v < minimum for v in values):
            raise argparse.ArgumentTypeError(f"{what} must be >= {minimum:g}, e.g. {example}; got {text!r}")
        return values

    return parse


_temperatures = _number_list(float, "temperatures", "0,0.6")
_ks = _number_list(int, "K values", "1,2,4,8", minimum=1)
_floats = _number_list(float, "values", "0.25,0.5")


def _add_prompt_flags(p: argparse.ArgumentParser) -> None:
    """The prompt settings of `dler eval` and `dler solve-rate` (dler.prompts; docs/prompts.md)."""
    from dler.prompts import ANSWER_REGIONS, FORMATS

    g = p.add_argument_group("prompt (default: as the model was trained, from its dler_prompt.json, else r1)")
    g.add_argument("--prompt-format", default=None, metavar="NAME", help=f"a named format: {', '.join(FORMATS)}")
    g.add_argument("--prompt-template", default=None, help="the user message (or raw text); {problem} is replaced")
    g.add_argument("--system-prompt", default=None, help='the system prompt ("" for none)')
    g.add_argument("--chat-template", action=argparse.BooleanOptionalAction, default=None,
                   help="apply the model's chat template (--no-chat-template: the prompt is raw text)")  # fmt: skip
    g.add_argument("--chat-template-kwargs", default=None, metavar="JSON",
                   help="""apply_chat_template's keyword arguments, e.g. '{"enable_thinking": false}'""")  # fmt: skip
    g.add_argument("--answer-region", choices=ANSWER_REGIONS, default=None,
                   help="where the answer is read: after the first </think>, or the last box of the whole "
                        "response (models that answer without thinking tags)")  # fmt: skip


def _prompt_settings(args) -> dict:
    """The EvalConfig fields of the prompt flags."""
    return {
        "prompt_format": args.prompt_format,
        "prompt_template": args.prompt_template,
        "system_prompt": args.system_prompt,
        "chat_template": args.chat_template,
        "chat_template_kwargs": args.chat_template_kwargs,
        "answer_region": args.answer_region,
    }


def _eval_parser(sub) -> argparse.ArgumentParser:
    from dler.eval.benchmarks import DEFAULT_BENCHMARKS
    from dler.eval.generate import BACKENDS
    from dler.rewards import GRADERS

    p = sub.add_parser(
        "eval",
        help="generate, grade and score a model on math benchmarks (the DLER paper's protocol by default)",
        description="Generate n samples per problem, grade them with dler's math reward, and write generations "
        "(resumable JSONL) and results.json to --output-dir. Defaults are the DLER paper's protocol.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", help="model path or hub id")
    p.add_argument("--output-dir", help="run directory (rerunning it resumes; a sweep writes DIR/t<T>/)")
    p.add_argument("--benchmarks", default=",".join(DEFAULT_BENCHMARKS), help="comma-separated registry names")
    p.add_argument("--data-dir", default=None, help="read DIR/<benchmark>.jsonl instead of the hub")
    p.add_argument("--n", type=int, default=16, help="samples per problem (1 at temperature 0)")
    p.add_argument("--temperature", type=_temperatures, default=[0.6], help="one value, or a sweep: 0,0.6")
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--max-tokens", type=int, default=32768, help="generation cap per response")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto: vLLM when installed, else transformers")  # fmt: skip
    p.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark (smoke runs)")
    p.add_argument("--chunk-size", type=int, default=None,
                   help="transformers: problems per generation call, and how often results are written "
                        "(default: max(1, 32 // n)); vLLM takes every problem at once and writes each as it "
                        "finishes")  # fmt: skip
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM: GPUs per engine")
    p.add_argument("--data-parallel-size", type=int, default=1, help="vLLM: engines (processes), each on its own GPUs")
    p.add_argument("--max-model-len", type=int, default=None, help="vLLM: context length (default: the model's)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vLLM")
    p.add_argument("--enforce-eager", action="store_true", help="vLLM: no CUDA graphs")
    p.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32")
    p.add_argument("--grader-workers", type=int, default=None, help="grading processes (0: in this process)")
    p.add_argument("--grader", choices=GRADERS, default="dler",
                   help="dler: the last \\boxed{} after </think>, math-verify with dler's reading rules; released: "
                        "DLER's released reward (math-verify OR normalised strings OR sympy). Recorded in the "
                        "protocol; a run resumes only with its own grader")  # fmt: skip
    p.add_argument("--seed-per-request", action="store_true",
                   help="vLLM: seed every problem's request (SamplingParams(seed=)) instead of only the engine: a "
                        "problem's samples then do not depend on the others, at the cost of vLLM's slower per-request "
                        "sampling path")  # fmt: skip
    p.add_argument("--reproducible", action="store_true",
                   help="vLLM: --seed-per-request plus VLLM_BATCH_INVARIANT=1 (batch-invariant kernels): the same "
                        "samples on the same GPU type and vLLM version, slower (see docs/evaluation.md)")  # fmt: skip
    p.add_argument("--parallel-k", type=_ks, default=None, metavar="K,K,...",
                   help="test-time scaling mode (the DLER paper's Table 5): for each K, one request for K samples per "
                        "question, questions one at a time, timed; writes scaling.json (Pass@K against latency) "
                        "instead of results.json, e.g. --parallel-k 1,2,4,8,16,32,64,128,256")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--list-benchmarks", action="store_true", help="print the registry and exit")
    _add_prompt_flags(p)
    return p


def _report_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "report",
        help="Table 1, length analyses, pass@k and plots from finished runs",
        description="Write report.md (the paper's Table 1, length by correctness, pass@k / maj@k, temperature "
        "sweep, protocol) and PNG plots from one or more run directories.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories (or sweep folders)")
    p.add_argument("--baseline", default=None, metavar="RUN_DIR", help="run the length cut is measured against")
    p.add_argument("--output", default=None, metavar="DIR",
                   help="where report.md and the plots go (default: the run directory, or ./report for several)")  # fmt: skip
    p.add_argument("--no-plots", action="store_true", help="tables only")
    return p


def _solve_rate_parser(sub) -> argparse.ArgumentParser:
    from dler.eval.generate import BACKENDS

    p = sub.add_parser(
        "solve-rate",
        help="estimate each training problem's solve rate by sampling, and write it as a column",
        description="Sample --n responses per problem of a JSONL file, grade them, and write the rows with a "
        "solve_rate column (Concise Reasoning via RL keeps 0 < p < 1). Resumable: generations stay in "
        "OUTPUT.work/.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--model", required=True, help="model path or hub id")
    p.add_argument("--data", required=True, help="JSONL file with a problem and an answer column")
    p.add_argument("--output", required=True, help="JSONL file to write")
    p.add_argument("--n", type=int, default=16, help="samples per problem")
    p.add_argument("--temperature", type=float, default=0.6, help="sampling temperature")
    p.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling: keep the tokens of this much mass")
    p.add_argument("--max-tokens", type=int, default=8192, help="longest response, in tokens (longer ones are cut)")
    p.add_argument("--problem-column", default="problem", help="column of --data with the problem text")
    p.add_argument("--answer-column", default="answer", help="column of --data with the gold answer")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="auto: vLLM when installed, else transformers")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    _add_prompt_flags(p)
    return p


def _merge_parser(sub) -> argparse.ArgumentParser:
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
    p.add_argument("--top-fraction", type=_floats, default=[0.25], help="fraction(s) of parameters kept (paper: 0.25)")
    p.add_argument("--scale", type=_floats, default=[0.7], help="scale(s) of the kept updates (paper: 0.7)")
    p.add_argument(
        "--selection",
        choices=["global", "tensor"],
        default="global",
        help="rank |delta| over the whole model (global, the paper's wording) or within each tensor",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --output")
    return p


def _run_merge(args, parser) -> int:
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


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="dler", description="DLER: evaluation, reports, solve rates and update-selective merging."
    )
    sub = parser.add_subparsers(dest="command", metavar="{eval,report,solve-rate,merge}")
    sub.required = True
    _eval_parser(sub)
    _report_parser(sub)
    _solve_rate_parser(sub)
    _merge_parser(sub)
    return parser


def _list_benchmarks() -> str:
    from dler.eval.benchmarks import BENCHMARKS

    lines = []
    for b in BENCHMARKS.values():
        fields = f"{b.problem_field} -> {b.answer_field}"
        lines.append(f"{b.name:<10} {b.hf_id} [{b.split}] {fields}  {b.description}")
    return "\n".join(lines)


def _run_eval(args, parser) -> int:
    from dler.eval.benchmarks import BenchmarkError
    from dler.eval.errors import EvalInterrupted, EvalSettingsError, ResumeError
    from dler.eval.run import evaluate, format_summary
    from dler.eval.scaling import evaluate_scaling, format_scaling_summary
    from dler.eval.settings import EvalConfig

    if args.list_benchmarks:
        print(_list_benchmarks())
        return 0
    missing = [flag for flag, value in (("--model", args.model), ("--output-dir", args.output_dir)) if not value]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    config = EvalConfig(
        model=args.model,
        output_dir=args.output_dir,
        benchmarks=args.benchmarks.split(","),
        n=args.n,
        temperatures=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        backend=args.backend,
        seed=args.seed,
        data_dir=args.data_dir,
        limit=args.limit,
        chunk_size=args.chunk_size,
        **_prompt_settings(args),
        tensor_parallel_size=args.tensor_parallel_size,
        data_parallel_size=args.data_parallel_size,
        max_model_len=args.max_model_len,
        gpu_memory_utilization=args.gpu_memory_utilization,
        dtype=args.dtype,
        enforce_eager=args.enforce_eager,
        grader_workers=args.grader_workers,
        grader=args.grader,
        progress=not args.no_progress,
        parallel_k=args.parallel_k,
        seed_per_request=args.seed_per_request,
        reproducible=args.reproducible,
    )
    try:
        config = config.validate()
    except (BenchmarkError, ValueError) as exc:
        parser.fail(str(exc))
    except KeyboardInterrupt:
        print("interrupted before anything was written", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        if config.parallel_k:
            results = evaluate_scaling(config)
        else:
            results = evaluate(config)
    except EvalInterrupted as exc:
        print(exc.message, file=sys.stderr)
        return EXIT_INTERRUPTED
    except (EvalSettingsError, BenchmarkError) as exc:  # bad input, found before anything was written
        parser.fail(str(exc))
    except ResumeError as exc:
        print(f"dler eval: error: {exc}", file=sys.stderr)
        return 1
    if config.parallel_k:
        print(format_scaling_summary(results))
        print(f"written: {Path(config.output_dir) / 'scaling.json'}", file=sys.stderr)
        return 0
    for run_dir, r in results.items():
        print(f"{run_dir}:")
        print(format_summary(r))
    return 0


def _run_report(args, parser) -> int:
    from dler.eval.report import report
    from dler.eval.run_folders import ReportError

    try:
        path = report(args.runs, baseline=args.baseline, output=args.output, plots=not args.no_plots)
    except ReportError as exc:
        parser.fail(str(exc))
    print(path.read_text())
    print(f"written: {path}", file=sys.stderr)
    return 0


def _run_solve_rate(args, parser) -> int:
    from dler.solve_rate import solve_rates

    if not Path(args.data).is_file():
        parser.fail(f"--data {args.data}: no such file")
    try:
        solve_rates(
            args.model,
            args.data,
            args.output,
            n=args.n,
            temperature=args.temperature,
            problem_column=args.problem_column,
            answer_column=args.answer_column,
            top_p=args.top_p,
            max_tokens=args.max_tokens,
            backend=args.backend,
            seed=args.seed,
            **_prompt_settings(args),
        )
    except ValueError as exc:
        parser.fail(str(exc))
    return 0


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    sub = parser._subparsers._group_actions[0].choices[args.command]  # the subcommand's parser, for its errors
    if unknown:  # name the subcommand's usage, not the top-level one
        sub.unknown_flags(unknown)
    if args.command == "eval":
        return _run_eval(args, sub)
    if args.command == "solve-rate":
        return _run_solve_rate(args, sub)
    if args.command == "merge":
        return _run_merge(args, sub)
    return _run_report(args, sub)


if __name__ == "__main__":
    sys.exit(main())
