"""`make demo`: DLER makes a tiny model think shorter without losing accuracy, on CPU, offline, in minutes.

1. Builds the toy task (`dler.toy`): two-digit additions solved column by column (necessary steps), followed by a
   random number of "wait, let me verify the sum again" lines (removable filler).
2. Builds a tiny Qwen2 model and tokenizer from scratch and warm-starts it with TRL's `SFTTrainer` on verbose
   solutions, until it solves most problems with long answers.
3. Evaluates it on held-out problems (accuracy, mean length in tokens).
4. Trains it with `DLERTrainer` (truncation budget, batch-wise normalisation, clip-higher, dynamic sampling)
   through `recipes/dler_tiny.py`, on R1 prompts graded by the real math reward.
5. Evaluates it again on the same held-out problems, prints a before/after table, and writes `report.json`,
   `training.png` (accuracy and mean length over the DLER steps) and both models under `--output-dir`.

    python -m dler.demo [--seed 0] [--output-dir runs/demo]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import statistics
import time
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DS_ACCELERATOR", "cpu")  # DeepSpeed, when installed, otherwise warns that it found no GPU

TARGET_LENGTH_REDUCTION = 0.40  # the demo's targets: answers at least 40% shorter ...
TARGET_MAX_ACCURACY_DROP = 0.02  # ... and accuracy within 2 points of before
MAX_NEW_TOKENS = 128  # the generation cap, in evaluation as in training (`max_completion_length`)


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
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads [torch's default]")
    return p.parse_args(argv)


# ---------------------------------------------------------------- console output
@contextlib.contextmanager
def quiet_libraries(threads: int | None = None):
    """Keep the console to progress bars and the demo's own lines (and use `threads` torch threads); everything
    is restored on exit, so calling the demo from Python leaves the caller's logging as it was."""
    import datasets
    import torch
    import transformers

    loggers = [logging.getLogger(name) for name in ("trl", "accelerate", "dler", "DeepSpeed")]
    saved = (
        [lg.level for lg in loggers],
        transformers.logging.get_verbosity(),
        transformers.utils.logging.is_progress_bar_enabled(),
        datasets.logging.get_verbosity(),
        datasets.is_progress_bar_enabled(),
        torch.get_num_threads(),
    )
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # "Loading weights", "Writing model shards"
    datasets.disable_progress_bars()  # "Tokenizing train dataset", ...
    datasets.logging.set_verbosity_error()
    # the trainer warns at each partial batch of dynamic sampling; the plot and report.json show the rounds instead
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    if threads:
        torch.set_num_threads(threads)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        levels, verbosity, bars, ds_verbosity, ds_bars, num_threads = saved
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)
        transformers.logging.set_verbosity(verbosity)
        (transformers.logging.enable_progress_bar if bars else transformers.logging.disable_progress_bar)()
        datasets.logging.set_verbosity(ds_verbosity)
        (datasets.enable_progress_bars if ds_bars else datasets.disable_progress_bars)()
        torch.set_num_threads(num_threads)


def progress_callback(desc: str, metrics: dict[str, str]):
    """A tqdm bar for a `Trainer` that shows a few metrics beside it instead of printing every log dict."""
    from tqdm.auto import tqdm
    from transformers.trainer_callback import ProgressCallback

    class QuietProgress(ProgressCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                self.training_bar = tqdm(total=state.max_steps, desc=desc, unit="step", dynamic_ncols=True)
            self.current_step = 0

        def on_log(self, args, state, control, logs=None, **kwargs):
            shown = {label: f"{logs[key]:.3g}" for key, label in metrics.items() if key in (logs or {})}
            if self.training_bar is not None and shown:
                self.training_bar.set_postfix(shown, refresh=False)

    return QuietProgress()


def use_progress(trainer, callback) -> None:
    """Replace the trainer's default progress bar (or log printer, with quiet logging) with `callback`."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    for default in (ProgressCallback, PrinterCallback):
        trainer.remove_callback(default)
    trainer.add_callback(callback)


class Clock:
    """Seconds per stage, printed as each one ends."""

    def __init__(self):
        self.start = time.perf_counter()
        self.stages: dict[str, float] = {}
        self._since = self.start

    def begin(self, text: str) -> None:
        print(f"\n{text}", flush=True)
        self._since = time.perf_counter()

    def end(self, name: str) -> None:
        self.stages[name] = round(time.perf_counter() - self._since, 1)
        print(f"   ({self.stages[name]:.0f} s)", flush=True)

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 1)


# ---------------------------------------------------------------- evaluation
def evaluate(model, tokenizer, task, problems, *, temperature, top_p, seed, desc="eval", batch_size=256) -> dict:
    """One sampled answer per held-out problem, generated by the evaluation harness's transformers backend:
    accuracy, mean length in tokens (EOS included, as the trainer counts), and what the answers contain."""
    from tqdm.auto import tqdm

    from dler.eval.benchmarks import build_prompt, prompt_ids
    from dler.eval.generate import Request, SamplingSettings, TransformersBackend
    from dler.toy import count_verify_lines, has_all_steps, is_correct, problem_text

    backend = TransformersBackend(model, tokenizer, device="cpu")
    settings = SamplingSettings(n=1, temperature=temperature, top_p=top_p, max_tokens=MAX_NEW_TOKENS)
    samples = []
    for start in tqdm(range(0, len(problems), batch_size), desc=desc, unit="batch", dynamic_ncols=True):
        chunk = problems[start : start + batch_size]
        requests = [Request(prompt_ids(tokenizer, build_prompt(tokenizer, problem_text(a, b))), seed + start)
                    for a, b in chunk]  # fmt: skip
        samples += [s for (s,) in backend.generate(requests, settings)]
    texts = [s.text for s in samples]
    return {
        "accuracy": statistics.fmean(is_correct(t, a + b) for t, (a, b) in zip(texts, problems, strict=True)),
        "mean_length": statistics.fmean(s.tokens for s in samples),
        "problems": len(problems),
        "mean_verify_lines": statistics.fmean(count_verify_lines(t) for t in texts),
        "all_column_steps": statistics.fmean(has_all_steps(t, task.digits) for t in texts),
        "finished": statistics.fmean(not s.truncated for s in samples),
        "example": f"{problem_text(*problems[0])}\n{texts[0]}",
    }


# ---------------------------------------------------------------- stages
def warm_start(args, task, tokenizer, model, output_dir: Path):
    """SFT on verbose solutions with TRL's `SFTTrainer`; the model and tokenizer are saved to `output_dir`."""
    from trl import SFTConfig, SFTTrainer

    from dler.toy import sft_dataset

    config = SFTConfig(
        output_dir=str(output_dir),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=args.sft_batch,
        max_steps=args.sft_steps,
        learning_rate=args.sft_lr,
        # warm up, hold the learning rate while the column look-ups are being learnt, then decay to consolidate
        lr_scheduler_type="warmup_stable_decay",
        lr_scheduler_kwargs={"num_decay_steps": args.sft_steps // 4},
        warmup_steps=0.05,
        weight_decay=0.0,
        max_length=256,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        seed=args.seed,
        data_seed=args.seed,
    )
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=sft_dataset(task, args.sft_problems, seed=args.seed + 1),
        processing_class=tokenizer,
    )
    use_progress(trainer, progress_callback("SFT ", {"loss": "loss", "mean_token_accuracy": "token acc"}))
    trainer.train()
    trainer.save_model(str(output_dir))
    return trainer.model


def recipe_command(args, budget: int, sft_dir: Path, data: Path, output_dir: Path) -> list[str]:
    """The command-line overrides of `recipes/dler_tiny.py` for the demo's DLER stage (also printed, to rerun it)."""
    return [
        "--model_name_or_path", str(sft_dir),
        "--dataset_name", str(data),
        "--output_dir", str(output_dir),
        "--prompts_per_generation", "8",  # 8 prompts x 8 rollouts per generation batch ...
        "--prompts_per_update", "4",  # ... feeding 2 optimizer updates, so clip-higher can act
        "--num_generations", "8",
        "--per_device_train_batch_size", "32",
        "--max_completion_length", str(MAX_NEW_TOKENS),
        "--truncation_length", str(budget),
        "--temperature", "1.0",
        "--dynamic_sampling", "true",
        "--max_sampling_rounds", "4",  # once most groups are all correct and short, train on what was kept
        "--dynamic_sampling_exhausted", "partial",
        "--learning_rate", str(args.rl_lr),
        "--max_steps", str(args.rl_steps),
        "--save_strategy", "no",
        "--seed", str(args.seed),
        "--data_seed", str(args.seed),
    ]  # fmt: skip


def load_recipe(name: str = "dler_tiny"):
    """Import `recipes/<name>.py` of this checkout (recipes are scripts, not a package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "recipes" / f"{name}.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the demo from a checkout of dler (pip install -e .)")
    spec = importlib.util.spec_from_file_location(f"recipes.{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def train_dler(command: list[str]):
    """The DLER stage: `recipes/dler_tiny.py` with the demo's overrides, in this process (for the progress bar)."""
    from dler.recipe import run

    recipe = load_recipe("dler_tiny")
    metrics = {"dler/correctness": "acc", "completions/mean_length": "len", "dler/over_budget_frac": "over budget"}
    return run(recipe.DEFAULTS, command, callbacks=[progress_callback("DLER", metrics)])


def history_of(trainer) -> list[dict]:
    """Accuracy and mean length of the rollouts DLER generated (temperature 1, every sampling round), per step."""
    return [
        {
            "step": h["step"],
            "accuracy": h["dler/correctness"],
            "mean_length": h["completions/mean_length"],
            "over_budget": h.get("dler/over_budget_frac"),
            "sampling_rounds": h.get("dynamic_sampling/rounds"),
        }
        for h in trainer.state.log_history
        if "dler/correctness" in h and "completions/mean_length" in h
    ]


def plot(history, before, after, budget, last_step, temperature, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"   matplotlib is not installed, so there is no {path.name} (pip install matplotlib)")
        return False
    steps = [h["step"] for h in history]
    held_out = f"held-out problems, T={temperature} (before / after)"
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    left.plot(steps, [100 * h["accuracy"] for h in history], color="tab:blue", label="DLER rollouts, T=1")
    left.scatter([0, last_step], [100 * before["accuracy"], 100 * after["accuracy"]], color="black", zorder=3,
                 label=held_out)  # fmt: skip
    left.set(xlabel="DLER step", ylabel="accuracy (%)", title="Accuracy", ylim=(0, 102))
    right.plot(steps, [h["mean_length"] for h in history], color="tab:orange", label="DLER rollouts, T=1")
    right.scatter([0, last_step], [before["mean_length"], after["mean_length"]], color="black", zorder=3,
                  label=held_out)  # fmt: skip
    right.axhline(budget, color="tab:red", linestyle="--", label=f"truncation budget ({budget} tokens)")
    right.set(xlabel="DLER step", ylabel="tokens", title="Mean answer length", ylim=(0, None))
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def print_table(before, after, reduction, change) -> None:
    def pct(x):
        return f"{100 * x:.1f}%"

    rows = [
        ("accuracy", pct(before["accuracy"]), pct(after["accuracy"])),
        ("mean length (tokens)", f"{before['mean_length']:.1f}", f"{after['mean_length']:.1f}"),
        ("verify lines per answer", f"{before['mean_verify_lines']:.2f}", f"{after['mean_verify_lines']:.2f}"),
        ("all column steps kept", pct(before["all_column_steps"]), pct(after["all_column_steps"])),
    ]
    print(f"\n{'':26}{'before DLER':>13}{'after DLER':>13}")
    for name, b, a in rows:
        print(f"{name:26}{b:>13}{a:>13}")
    print(f"\nAnswers are {100 * reduction:.0f}% shorter; accuracy changed by {100 * change:+.1f} points.")


# ---------------------------------------------------------------- main
def main(argv=None) -> dict:
    args = parse_args(argv)
    clock = Clock()
    print("DLER demo: a tiny model learns to add with long answers, then DLER teaches it to answer shorter.")
    print("Loading libraries...", flush=True)
    with quiet_libraries(args.threads):
        return run_demo(args, clock)


def run_demo(args: argparse.Namespace, clock: Clock) -> dict:
    """The five stages; returns the report (also written to `output_dir`/report.json)."""
    import torch
    from transformers import set_seed

    from dler.toy import ToyTask, build_toy_model, build_toy_tokenizer, necessary_length, write_problems

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    set_seed(args.seed)

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

    evaluation = dict(temperature=args.eval_temperature, top_p=args.eval_top_p, seed=args.seed + 3)
    clock.begin(f"[3/5] Evaluate the warm-started model (T={args.eval_temperature}, top-p {args.eval_top_p})")
    before = evaluate(model, tokenizer, task, held_out, **evaluation)
    print(f"   accuracy {100 * before['accuracy']:.1f}%, mean length {before['mean_length']:.1f} tokens")
    clock.end("eval_before")

    clock.begin(f"[4/5] DLER: {args.rl_steps} steps with a truncation budget of {budget} tokens")
    command = recipe_command(args, budget, out / "sft", data, out / "dler")
    print("   python recipes/dler_tiny.py " + " ".join(command))
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
            "dler_command": ["python", "recipes/dler_tiny.py", *command],
            "torch_threads": torch.get_num_threads(),
        },
        "history": history,
        "elapsed_s": {**clock.stages, "total": clock.total()},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nWrote {out / 'report.json'}" + (f" and {out / 'training.png'}" if plotted else ""))
    print(f"Total time: {report['elapsed_s']['total']:.0f} s")
    return report


if __name__ == "__main__":
    main()
