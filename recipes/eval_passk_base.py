"""Base-model pass@k protocol of "Does Reinforcement Learning Really Incentivize Reasoning Capacity in LLMs Beyond the
Base Model?" (arXiv 2504.13837): many samples per problem, unbiased pass@k for every power of two up to n.

The paper compares a base model with its RL-trained version by pass@k for k up to 256 (1024 on some sets): RL wins
at small k, the base model at large k. Its evaluation code (LeapLabTHU/limit-of-RLVR, math/README.md) samples at
temperature 0.6 and top-p 0.95 with the zero-shot `qwen-boxed` prompt given as raw text (no --apply_chat_template),
so the base model and the RL model see the same prompt; a response ends at <|im_end|>. `dler eval` runs it through
dler's Python API (`dler.eval.EvalConfig`, `evaluate`); `dler report` draws the pass@k curves.

    python recipes/eval_passk_base.py --model Qwen/Qwen2.5-7B --output-dir runs/passk/qwen2.5-7b
    python recipes/eval_passk_base.py --model hkust-nlp/Qwen-2.5-7B-SimpleRL-Zoo --output-dir runs/passk/simplerl-7b
    python recipes/eval_passk_base.py --model Qwen/Qwen2.5-7B --benchmarks aime24 --n 1024 --output-dir runs/passk/a
    dler report runs/passk/qwen2.5-7b runs/passk/simplerl-7b --output runs/passk/report
    python recipes/eval_passk_base.py --dry-run        # the resolved settings with their sources; loads nothing
    make eval-passk MODEL=Qwen/Qwen2.5-7B

Any `dler eval` setting can be changed on the command line: --model, --benchmarks, --n, --output-dir, and
--max-tokens, --prompt-format, --backend, --data-dir, --limit, --seed, --tensor-parallel-size,
--data-parallel-size, --grader-workers. The paper draws its samples as several runs of 32 with different seeds; dler draws n at once
from one seed (the same distribution).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dler.eval.benchmarks import BENCHMARKS, Benchmark, BenchmarkError, register_benchmark

PAPER = "arXiv 2504.13837"
CODE = "LeapLabTHU/limit-of-RLVR math/README.md"


def gsm8k_answer(solution: str) -> str:
    """GSM8K's gold answer: the number after the solution's final '####' (thousands separators dropped)."""
    return str(solution).rsplit("####", 1)[-1].strip().replace(",", "")


if "gsm8k" not in BENCHMARKS:  # one of the paper's math benchmarks, not in dler's default registry
    register_benchmark(
        Benchmark(
            "gsm8k", "openai/gsm8k", config="main", split="test", problem_field="question", answer_fn=gsm8k_answer,
            size=1319, description="GSM8K test set (grade-school math; the gold answer follows '####')",
        )
    )  # fmt: skip

# Each EvalConfig setting of the protocol: (value, source).
PROTOCOL = {
    "model": ("Qwen/Qwen2.5-7B", f"{PAPER} Fig. 2: Qwen2.5-7B base, compared with its SimpleRL-Zoo RL model"),
    "output_dir": (None, "dler: runs/passk/<model folder name>"),
    "benchmarks": (
        ["gsm8k", "math500", "minerva", "olympiad", "aime24", "amc23"],
        f"{PAPER}, math experiments: GSM8K, MATH500, Minerva, Olympiad, AIME24, AMC23",
    ),
    "n": (256, f"{PAPER}: pass@k up to k = 256 needs n >= 256 samples per problem (--n 1024 for k = 1024)"),
    "temperatures": ([0.6], f"{PAPER} math setup and {CODE}: temperature 0.6"),
    "top_p": (0.95, f"{PAPER} math setup and {CODE}: top-p 0.95"),
    "max_tokens": (16384, f"{PAPER} math setup: at most 16,384 generated tokens ({CODE}'s example: 16000)"),
    "prompt_format": ("qwen-boxed", f"{CODE}: --template qwen-boxed, zero-shot, the same for base and RL model"),
    "chat_template": (False, f"{CODE}: no --apply_chat_template, the prompt is given as raw text"),
    "answer_region": ("whole", "a base model writes no </think>: the last \\boxed{} of the response is graded"),
    "seed": (0, f"{CODE} runs 32 samples per seed, seeds 1, 2, ...; dler draws all n from one seed"),
}

# command-line flags: EvalConfig field -> (flag, type); a flag given replaces the protocol's value
OVERRIDES = {
    "model": ("--model", str),
    "benchmarks": ("--benchmarks", lambda text: [b.strip() for b in text.split(",") if b.strip()]),
    "n": ("--n", int),
    "output_dir": ("--output-dir", str),
    "max_tokens": ("--max-tokens", int),
    "prompt_format": ("--prompt-format", str),
    "backend": ("--backend", str),
    "data_dir": ("--data-dir", str),
    "limit": ("--limit", int),
    "seed": ("--seed", int),
    "tensor_parallel_size": ("--tensor-parallel-size", int),
    "data_parallel_size": ("--data-parallel-size", int),
    "grader_workers": ("--grader-workers", int),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, (flag, kind) in OVERRIDES.items():
        parser.add_argument(flag, dest=name, type=kind, default=None, help=f"EvalConfig.{name}")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved settings and sources, load nothing")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> dict[str, tuple]:
    """Every setting of the run as (value, source): the protocol's, with the command line's on top."""
    out = dict(PROTOCOL)
    for name in OVERRIDES:
        value = getattr(args, name)
        if value is not None:
            out[name] = (value, "command line")
    if out["output_dir"][0] is None:
        out["output_dir"] = (f"runs/passk/{Path(out['model'][0]).name}", PROTOCOL["output_dir"][1])
    if out.get("prompt_format", (None, ""))[1] == "command line":  # another format: its own template and region
        for name in ("chat_template", "answer_region"):
            out.pop(name)
    return out


def config_of(resolved: dict[str, tuple], progress: bool = True):
    """The `EvalConfig` of the resolved settings, validated (the model is checked only by a real run)."""
    from dler.eval.settings import EvalConfig

    return EvalConfig(progress=progress, **{name: value for name, (value, _) in resolved.items()})


def main(argv: list[str] | None = None) -> dict | None:
    """Print the plan (`--dry-run`) or run the evaluation; returns `evaluate`'s results (None for a dry run)."""
    args = parse_args(list(sys.argv[1:] if argv is None else argv))
    resolved = settings(args)
    config = config_of(resolved, progress=not args.no_progress)
    if args.dry_run:
        checked = config.validate(check_model=False)
        plan = {name: {"value": value, "source": source} for name, (value, source) in resolved.items()}
        shown = "raw text" if not checked.chat_template else "user message, in the model's chat template"
        plan["prompt"] = {"value": checked.prompt_template, "source": f"format {checked.prompt_format!r}: {shown}"}
        if "backend" not in resolved:
            plan["backend"] = {"value": checked.backend, "source": "dler eval --backend auto: vLLM when installed"}
        print(json.dumps(plan, indent=2))
        return None
    from dler.eval.run import evaluate, format_summary

    results = evaluate(config.validate())
    for run_dir, result in results.items():
        print(f"{run_dir}:\n{format_summary(result)}")
    return results


if __name__ == "__main__":
    from dler.eval.errors import EvalInterrupted

    try:
        main()
    except (BenchmarkError, ValueError) as error:  # settings, data, a run with other settings in --output-dir
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    except EvalInterrupted as interrupted:
        print(interrupted.message, file=sys.stderr)
        raise SystemExit(130) from None
