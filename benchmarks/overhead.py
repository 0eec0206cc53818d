"""DLERTrainer's per-step overhead against plain GRPOTrainer, measured in one run on the tiny model.

Both trainers use the same model, data, seed and generation settings; DLER runs with dynamic sampling off so both
generate the same number of rollouts, and the learning rate is 0 so neither policy drifts: both generate the very
same completions, and the difference in step time is DLER's bookkeeping alone. Prints the median optimizer-step time of each (averaged over each generation cycle: one step that generates plus
the steps that reuse its batch) and their ratio.
Target: ratio <= 1.05.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from transformers import TrainerCallback  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from dler import DLERConfig, DLERTrainer  # noqa: E402
from dler.demo.tiny import save_tiny  # noqa: E402


class StepTimer(TrainerCallback):
    def __init__(self):
        self.times, self._start = [], None

    def on_step_begin(self, args, state, control, **kwargs):
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._start)


def even_length(completions, completion_ids, **kwargs):
    return [float(len(ids) % 2 == 0) for ids in completion_ids]


def run(trainer_cls, config_cls, model_dir, dataset, steps, out, **dler):
    common = dict(
        output_dir=out,
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=16,
        num_generations=8,
        steps_per_generation=2,
        max_completion_length=32,
        max_steps=steps,
        learning_rate=0.0,  # frozen policies: both trainers generate identical rollouts
        beta=0.0005,
        epsilon=0.2,
        epsilon_high=0.28,
        loss_type="dapo",
        temperature=1.0,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        gradient_checkpointing=False,
        seed=0,
        disable_tqdm=True,
    )
    timer = StepTimer()
    trainer = trainer_cls(
        model=model_dir,
        reward_funcs=even_length,
        args=config_cls(**common, **dler),
        train_dataset=dataset,
        callbacks=[timer],
    )
    trainer.train()
    lengths = [h["completions/mean_length"] for h in trainer.state.log_history if "completions/mean_length" in h]
    # Steps alternate: one generates, the next reuses its batch. Time whole cycles (a bimodal per-step median is
    # meaningless) and skip the first, which warms up.
    steps = common["steps_per_generation"]
    cycles = [sum(timer.times[i : i + steps]) / steps for i in range(0, len(timer.times) - steps + 1, steps)]
    return cycles[1:], lengths


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=4, help="alternate the two trainers this many times")
    args = parser.parse_args()
    from helpers import addition_dataset

    times = {"GRPO": [], "DLER": []}
    lengths = {"GRPO": [], "DLER": []}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(save_tiny(os.path.join(tmp, "model")))
        dataset = addition_dataset(256)
        contenders = [
            ("GRPO", GRPOTrainer, GRPOConfig, {}),
            ("DLER", DLERTrainer, DLERConfig, {"dynamic_sampling": False, "truncation_length": 32}),
        ]
        for repeat in range(args.repeats):  # interleaved, order alternating: load drift and warm caches hit both
            for name, trainer_cls, config_cls, extra in contenders[:: 1 if repeat % 2 == 0 else -1]:
                step_times, step_lengths = run(
                    trainer_cls, config_cls, model_dir, dataset, args.steps, os.path.join(tmp, name), **extra
                )
                times[name] += step_times
                print(f"  {name} run {repeat}: median {statistics.median(step_times) * 1000:.1f} ms", flush=True)
                lengths[name] += step_lengths
    g, d = statistics.median(times["GRPO"]), statistics.median(times["DLER"])
    print(
        f"mean completion length: GRPO {statistics.fmean(lengths['GRPO']):.3f}, "
        f"DLER {statistics.fmean(lengths['DLER']):.3f} (equal: both generated the same rollouts)"
    )
    print(f"GRPOTrainer median step: {g * 1000:.2f} ms over {len(times['GRPO'])} generation cycles")
    print(f"DLERTrainer median step: {d * 1000:.2f} ms over {len(times['DLER'])} generation cycles (no dyn. sampling)")
    print(f"ratio DLER / GRPO: {d / g:.3f} (target <= 1.05)")


if __name__ == "__main__":
    main()
