"""`make demo`, stage by stage: DLER makes a tiny model think shorter without losing accuracy, on CPU, offline.

1. Builds the toy task (`dler.demo.toy`): two-digit additions solved column by column (necessary steps), followed by
   a random number of "wait, let me verify the sum again" lines (removable filler).
2. Builds a tiny Qwen2 model and tokenizer from scratch and warm-starts it with TRL's `SFTTrainer` on verbose
   solutions, until it solves most problems with long answers.
3. Evaluates it on held-out problems (accuracy, mean length in tokens).
4. Trains it with `DLERTrainer` (truncation budget, batch-wise normalisation, clip-higher, dynamic sampling)
   with the settings of `recipes/dler_tiny.py`, on R1 prompts graded by the real math reward.
5. Evaluates it again on the same held-out problems, prints a before/after table, and writes `report.json`,
   `training.png` (accuracy and mean length over the DLER steps) and both models under `--output-dir`.

    python -m dler.demo [--seed 0] [--output-dir runs/demo]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

from dler.cpu_threads import set_threads, set_wait_policy
from dler.demo.console import Clock, quiet_libraries

TARGET_LENGTH_REDUCTION = 0.40  # the demo's targets: answers at least 40% shorter ...
TARGET_MAX_ACCURACY_DROP = 0.02  # ... and accuracy within 2 points of before
MAX_NEW_TOKENS = 128  # the generation cap, in evaluation as in training (`max_completion_length`)
ENVIRONMENT = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "DS_ACCELERATOR": "cpu",  # DeepSpeed, when installed, otherwise warns that it found no GPU
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m dler.demo",
        description="DLER on CPU: warm-start a tiny model on verbose solutions, then train it to answer shorter.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--seed", type=int, default=0, help="one seed for data, model, training and evaluation")
    p.add_argument("--output-dir", default="runs/demo", help="report.json, training.png, sft/ and dler/ go here")
    p.add_argument("--digits", type=int, default=2, help="digits of each number in a problem")
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--sft-steps", type=int, default=600, help="SFT optimizer steps")
    p.add_argument("--sft-batch", type=int, default=32, help="SFT batch size")
    p.add_argument("--sft-problems", type=int, default=6400, help="verbose solutions to warm-start on")
    p.add_argument("--sft-lr", type=float, default=3e-3)
    p.add_argument("--rl-problems", type=int, default=2000, help="training problems for the DLER stage")
    p.add_argument("--rl-steps", type=int, default=80, help="DLER optimizer steps (two per generation batch)")
    p.add_argument("--rl-lr", type=float, default=5e-5, help="DLER learning rate (1e-4 costs up to 2 accuracy points)")
    p.add_argument("--budget", type=int, default=None, help="truncation length in tokens [necessary steps + 4]")
    p.add_argument("--eval-problems", type=int, default=1000, help="held-out problems (two digits: there are 821)")
    p.add_argument("--eval-temperature", type=float, default=0.6, help="sampling temperature (paper: 0.6)")
    p.add_argument("--eval-top-p", type=float, default=0.95, help="nucleus sampling (paper: 0.95)")
    p.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads [one per free core, or OMP_NUM_THREADS]"
    )
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    # The demo runs offline and quietly. Set here, not at import, so importing the module changes nothing; and before
    # the libraries load, because some read them only once (huggingface_hub when it is first imported).
    for name, value in ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    # OpenMP reads its wait policy once, when torch loads it: set before quiet_libraries imports torch
    torch_was_loaded, wait = "torch" in sys.modules, set_wait_policy()
    clock = Clock()
    print("DLER demo: a tiny model learns to add with long answers, then DLER teaches it to answer shorter.")
    print("Loading libraries...", flush=True)
    with quiet_libraries():  # the caller's thread count is given back too
        print("   " + set_threads(args.threads, torch_was_loaded, wait).line, flush=True)
        return run_demo(args, clock)


def run_demo(args: argparse.Namespace, clock: Clock) -> dict:
    """The five stages; returns the report (also written to `output_dir`/report.json)."""
    import torch
    from transformers import set_seed

    from dler.demo.report import evaluate, history_of, plot, print_table
    from dler.demo.toy import ToyTask, build_toy_model, build_toy_tokenizer, necessary_length, write_problems
    from dler.demo.training import RERUN, recipe_command, train_dler, warm_start

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)
    clock.end("libraries", quiet=True)

    clock.begin("[1/5] Toy task, tokenizer and tiny model, built offline")
    task = ToyTask(digits=args.digits)
    tokenizer = build_toy_tokenizer(task, seed=args.seed)
    model = build_toy_model(tokenizer, hidden_size=args.hidden_size, num_layers=args.layers, seed=args.seed)
    necessary = necessary_length(task, tokenizer, seed=args.seed)
    budget = args.budget or necessary + 4
    held_out = task.held_out_problems(args.eval_problems, seed=args.seed + 2)
    data = write_problems(out / "train.jsonl", task, args.rl_problems, seed=args.seed + 4)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"   {args.digits}-digit additions; {len(held_out)} held-out problems, never seen in training")
    print(f"   {args.rl_problems} training problems for DLER in {data}")
    print(f"   Qwen2 model with {params:.2f} M parameters, vocabulary of {len(tokenizer)} tokens")
    print(f"   necessary steps: at most {necessary} tokens; DLER's truncation budget: {budget} tokens")
    clock.end("setup")

    clock.begin(f"[2/5] Warm start: SFT on verbose solutions ({args.sft_steps} steps of {args.sft_batch})")
    model = warm_start(args, task, tokenizer, model, out / "sft")
    clock.end("sft")

    evaluation = dict(
        temperature=args.eval_temperature, top_p=args.eval_top_p, max_new_tokens=MAX_NEW_TOKENS, seed=args.seed + 3
    )
    clock.begin(f"[3/5] Evaluate the warm-started model (T={args.eval_temperature}, top-p {args.eval_top_p})")
    before = evaluate(model, tokenizer, task, held_out, **evaluation)
    print(f"   accuracy {100 * before['accuracy']:.1f}%, mean length {before['mean_length']:.1f} tokens")
    clock.end("eval_before")

    clock.begin(f"[4/5] DLER: {args.rl_steps} steps with a truncation budget of {budget} tokens")
    command = recipe_command(args, budget, MAX_NEW_TOKENS, out / "sft", data, out / "dler")
    print("   " + " ".join([*RERUN, *command]))
    shutil.rmtree(out / "dler", ignore_errors=True)  # the recipe resumes from checkpoints it finds there
    trainer = train_dler(command)
    clock.end("dler")

    clock.begin("[5/5] Evaluate the DLER model on the same held-out problems")
    after = evaluate(trainer.model, tokenizer, task, held_out, **evaluation)
    clock.end("eval_after")

    reduction = 1 - after["mean_length"] / before["mean_length"]
    change = after["accuracy"] - before["accuracy"]
    met = reduction >= TARGET_LENGTH_REDUCTION and change >= -TARGET_MAX_ACCURACY_DROP
    print_table(before, after, reduction, change)
    print(
        f"Targets (at least {TARGET_LENGTH_REDUCTION:.0%} shorter, accuracy within "
        f"{100 * TARGET_MAX_ACCURACY_DROP:.0f} points of before): {'met' if met else 'NOT met'}."
    )
    for name, result in (("before", before), ("after", after)):
        print(f"\nA held-out answer {name} DLER:\n   " + result["example"].replace("\n", "\n   "))

    history = history_of(trainer)
    plotted = plot(
        history, before, after, budget, trainer.state.global_step, args.eval_temperature, out / "training.png"
    )
    report = {
        "before": {k: v for k, v in before.items() if k != "example"},
        "after": {k: v for k, v in after.items() if k != "example"},
        "length_reduction": reduction,
        "accuracy_change": change,
        "targets": {
            "length_reduction_at_least": TARGET_LENGTH_REDUCTION,
            "accuracy_drop_at_most": TARGET_MAX_ACCURACY_DROP,
            "met": met,
        },
        "settings": {
            **vars(args),
            "budget": budget,
            "necessary_length": necessary,
            "max_new_tokens": MAX_NEW_TOKENS,
            "dler_command": [*RERUN, *command],
            "torch_threads": torch.get_num_threads(),
        },
        "history": history,
        "elapsed_s": None,
    }
    clock.end("report", quiet=True)
    report["elapsed_s"] = clock.elapsed()  # the stages add up to the total
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nWrote {out / 'report.json'}" + (f" and {out / 'training.png'}" if plotted else ""))
    print(clock.summary())
    return report
