"""What dynamic sampling pays outside generation: log-prob forwards, time and memory per trained row.

Three contenders on the tiny offline model, each in a process of its own (for its peak memory), same seeds, same
reward (signal on a quarter of the prompts, so dynamic sampling drops most groups):
  grpo      trl.GRPOTrainer, no dynamic sampling: the reference cost of scoring a batch;
  dler      DLERTrainer with dynamic sampling, as installed (decide, then score);
  baseline  the same run with `dler` imported from --baseline-src (e.g. a checkout of an earlier design).

Measured at TRL's own functions, so any design is counted the same way: rows through no-grad log-prob forwards
(old policy + reference) per trained row (target: at most 2.0), time outside TRL's `_generate` per trained row
against grpo (target: within 1.1x), and peak resident memory.

    python benchmarks/scoring.py [--steps 24] [--baseline-src /path/to/old/checkout]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TARGET_ROWS, TARGET_TIME = 2.0, 1.1


def worker(name: str, model_dir: str, steps: int, src: str | None) -> dict:
    """One training run, instrumented at TRL's functions; returns its counts, times and peak memory."""
    if src:
        sys.path.insert(0, src)
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import torch
    from helpers import addition_dataset, alternating_if
    from trl import GRPOConfig, GRPOTrainer

    import dler
    from dler import DLERConfig, DLERTrainer

    counts = {"logprob_rows": 0, "generate_s": 0.0}
    logps, generate = GRPOTrainer._get_per_token_logps_and_entropies, GRPOTrainer._generate

    def counting_logps(self, model, input_ids, *args, **kwargs):
        if not torch.is_grad_enabled():
            counts["logprob_rows"] += input_ids.size(0)
        return logps(self, model, input_ids, *args, **kwargs)

    def timed_generate(self, prompts):
        start = time.perf_counter()
        try:
            return generate(self, prompts)
        finally:
            counts["generate_s"] += time.perf_counter() - start

    GRPOTrainer._get_per_token_logps_and_entropies = counting_logps
    GRPOTrainer._generate = timed_generate
    torch.set_num_threads(1)
    settings = dict(
        output_dir=tempfile.mkdtemp(),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=8,
        num_generations=4,
        gradient_accumulation_steps=2,  # 16 rows per optimizer update
        steps_per_generation=4,  # 8 prompts x 4 rollouts per generation batch, 2 updates: old log-probs computed
        max_completion_length=16,
        max_steps=steps,
        learning_rate=1e-5,
        beta=0.0005,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        seed=0,
        data_seed=0,
    )
    reward = alternating_if(lambda a: a % 4 == 0)
    if name == "grpo":
        config, trainer_cls = GRPOConfig(**settings), GRPOTrainer
    else:
        config = DLERConfig(**settings, truncation_length=16, dynamic_sampling_metric="correctness")
        trainer_cls = DLERTrainer
    trainer = trainer_cls(model=model_dir, reward_funcs=reward, args=config, train_dataset=addition_dataset(64))
    start = time.perf_counter()
    trainer.train()
    total = time.perf_counter() - start
    trained = steps * 16
    generated = trained * next(
        (
            h["dynamic_sampling/run_prompts_generated_per_kept"]
            for h in reversed(trainer.state.log_history)
            if "dynamic_sampling/run_prompts_generated_per_kept" in h
        ),
        1.0,
    )
    return {
        "name": name,
        "dler": os.path.dirname(dler.__file__),
        "trained_rows": trained,
        "generated_rows": generated,
        "logprob_rows_per_trained": counts["logprob_rows"] / trained,
        "non_generation_ms_per_trained": 1000 * (total - counts["generate_s"]) / trained,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run(name, model_dir, steps, src=None) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, "--model", model_dir, "--steps", str(steps)]
    cmd += ["--baseline-src", src] if src else []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{name} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=24, help="optimizer steps per run, 16 rows each")
    parser.add_argument("--baseline-src", help="a directory holding another `dler` package to compare against")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.steps, args.baseline_src)))
        return
    sys.path.insert(0, ROOT)
    from dler.demo.tiny import save_tiny

    model_dir = str(save_tiny(os.path.join(tempfile.mkdtemp(), "model")))
    results = [run("grpo", model_dir, args.steps), run("dler", model_dir, args.steps)]
    if args.baseline_src:
        results.append(run("baseline", model_dir, args.steps, args.baseline_src))
    print(
        f"{'run':10} {'generated/trained':>18} {'logprob rows/trained':>21} {'non-gen ms/trained':>19} {'peak MB':>8}"
    )
    for r in results:
        print(
            f"{r['name']:10} {r['generated_rows'] / r['trained_rows']:18.2f} {r['logprob_rows_per_trained']:21.2f} "
            f"{r['non_generation_ms_per_trained']:19.2f} {r['peak_rss_mb']:8.0f}"
        )
    grpo, new = results[0], results[1]
    ratio = new["non_generation_ms_per_trained"] / grpo["non_generation_ms_per_trained"]
    print(f"log-prob rows per trained row, dler: {new['logprob_rows_per_trained']:.2f} (target <= {TARGET_ROWS})")
    print(f"non-generation time per trained row, dler / grpo: {ratio:.3f} (target <= {TARGET_TIME})")
    if args.baseline_src:
        old = results[2]
        print(
            f"baseline / dler: log-prob rows {old['logprob_rows_per_trained'] / new['logprob_rows_per_trained']:.2f}x,"
            f" non-generation time {old['non_generation_ms_per_trained'] / new['non_generation_ms_per_trained']:.2f}x,"
            f" peak memory {old['peak_rss_mb']:.0f} -> {new['peak_rss_mb']:.0f} MB"
        )


if __name__ == "__main__":
    main()
