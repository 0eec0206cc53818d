"""A one-minute CPU tour of DLER on the tiny offline model: the truncation budget shortens answers.

The tiny model cannot do arithmetic, so its grader is a stand-in: an answer "is correct" when it has an even number
of tokens, a coin flip for the starting model. The length budget does the rest: a correct answer that finishes
within the budget keeps its reward, a longer one earns 0. Dynamic sampling keeps only prompts whose
rollouts differ, batch-wise normalisation scales their advantages, and the mean answer length falls step by step.
The full demo (a toy task where shorter must not cost accuracy) is `make demo` once issue 5 lands.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def coin_flip_grader(completions, completion_ids, **kwargs):
    return [float(len(ids) % 2 == 0) for ids in completion_ids]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--budget", type=int, default=6, help="truncation length in tokens")
    parser.add_argument("--output-dir", default="runs/tour")
    args = parser.parse_args(argv)

    from datasets import Dataset
    from transformers import PrinterCallback

    from dler import DLERConfig, DLERTrainer
    from dler.tiny import save_tiny

    with tempfile.TemporaryDirectory() as tmp:
        print("Building the tiny model and tokenizer offline...")
        model_dir = str(save_tiny(os.path.join(tmp, "model"), warm_up=True))
        prompts = [{"prompt": [{"role": "user", "content": f"{a} + {b}"}]} for a in range(16) for b in range(16)]
        config = DLERConfig(
            output_dir=args.output_dir,
            use_cpu=True,
            bf16=False,
            per_device_train_batch_size=16,
            num_generations=8,
            updates_per_generation=2,
            max_completion_length=32,
            truncation_length=args.budget,
            learning_rate=2e-3,
            max_steps=args.steps,
            logging_steps=2,
            save_strategy="no",
            report_to=[],
            gradient_checkpointing=False,
            max_sampling_rounds=4,
            dynamic_sampling_exhausted="partial",
            seed=0,
            disable_tqdm=True,
        )
        trainer = DLERTrainer(
            model=model_dir, reward_funcs=coin_flip_grader, args=config, train_dataset=Dataset.from_list(prompts)
        )
        trainer.remove_callback(PrinterCallback)  # the table below says it more briefly
        trainer.train()

    rows = [h for h in trainer.state.log_history if "completions/mean_length" in h]
    print(f"\nTruncation budget: {args.budget} tokens. An answer 'is correct' when its token count is even.")
    print(f"{'step':>5} {'mean length':>12} {'over budget':>12} {'sampling rounds':>16}")
    for h in rows:
        print(
            f"{h['step']:>5} {h['completions/mean_length']:>12.2f} {h['dler/over_budget_frac']:>12.2f} "
            f"{h['dynamic_sampling/rounds']:>16.1f}"
        )
    first, last = rows[0]["completions/mean_length"], rows[-1]["completions/mean_length"]
    print(f"\nMean answer length: {first:.2f} -> {last:.2f} tokens ({100 * (1 - last / first):.0f}% shorter).")
    return {"first_mean_length": first, "last_mean_length": last}


if __name__ == "__main__":
    main()
