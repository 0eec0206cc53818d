"""`dler eval` and `dler solve-rate`: their flags (the prompt flags are shared) and how each runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dler.cli_args import EXIT_INTERRUPTED, ks, temperatures


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


def eval_parser(sub) -> argparse.ArgumentParser:
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
    p.add_argument("--temperature", type=temperatures, default=[0.6], help="one value, or a sweep: 0,0.6")
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
    p.add_argument("--parallel-k", type=ks, default=None, metavar="K,K,...",
                   help="test-time scaling mode (the DLER paper's Table 5): for each K, one request for K samples per "
                        "question, questions one at a time, timed; writes scaling.json (Pass@K against latency) "
                        "instead of results.json, e.g. --parallel-k 1,2,4,8,16,32,64,128,256")  # fmt: skip
    p.add_argument("--checkpoints", type=_checkpoint_steps, default=None, metavar="all|N,N,...",
                   help="--model is a training run's output_dir: evaluate each of its checkpoint-N folders (all, or "
                        "these steps) and its final model, oldest first, each into --output-dir/step-N/ with the same "
                        "settings and its own dler_prompt.json; reruns skip finished checkpoints; `dler report "
                        "--output-dir` draws accuracy and length against step (docs/curves.md)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--list-benchmarks", action="store_true", help="print the registry and exit")
    _add_prompt_flags(p)
    return p


def _checkpoint_steps(text: str) -> list[int] | str:
    """`--checkpoints`: "all", or the training steps to evaluate."""
    from dler.eval.checkpoints import parse_selection

    try:
        return parse_selection(text) or "all"
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def solve_rate_parser(sub) -> argparse.ArgumentParser:
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


def _list_benchmarks() -> str:
    from dler.eval.benchmarks import BENCHMARKS

    lines = []
    for b in BENCHMARKS.values():
        fields = f"{b.problem_field} -> {b.answer_field}"
        lines.append(f"{b.name:<10} {b.hf_id} [{b.split}] {fields}  {b.description}")
    return "\n".join(lines)


def run_eval(args, parser) -> int:
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
    if args.checkpoints is not None:
        return _run_checkpoints(config, None if args.checkpoints == "all" else args.checkpoints, parser)
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


def _run_checkpoints(config, steps: list[int] | None, parser) -> int:
    """`dler eval --checkpoints`: every check first (each checkpoint's settings), then each checkpoint in turn."""
    from dler.eval.benchmarks import BenchmarkError
    from dler.eval.checkpoints import evaluate_checkpoints
    from dler.eval.errors import EvalInterrupted, EvalSettingsError, ResumeError
    from dler.eval.run import format_summary

    try:
        results = evaluate_checkpoints(config, steps)  # every checkpoint checked before anything is written
    except EvalInterrupted as exc:
        print(exc.message, file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        print("interrupted: the same command resumes (finished checkpoints are skipped)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except ResumeError as exc:  # a partial checkpoint's folder made with other settings
        print(f"dler eval: error: {exc}", file=sys.stderr)
        return 1
    except (EvalSettingsError, BenchmarkError) as exc:  # bad input, found before anything was written
        parser.fail(str(exc))
    for step, runs in results.items():
        for r in runs.values():
            print(f"step {step}: {format_summary(r)}")
    print(f"written: {config.output_dir}; `dler report {config.output_dir}` draws the curves", file=sys.stderr)
    return 0


def run_solve_rate(args, parser) -> int:
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
