"""Concise Reasoning via RL (arXiv 2504.05185), stage 2: RL on occasionally solvable problems shortens answers.

With mostly negative rewards, policy-gradient losses favour longer responses; a second stage on problems the model
solves only sometimes (0 < p < 1) shortens them while keeping accuracy, even with 4-8 problems. No length penalty:
the reward is correctness (truncation with truncated_reward_scale=1), the optimiser is plain GRPO (the paper used
PPO; GRPO is dler's stand-in). Estimate the solve rates first:

    dler solve-rate --model deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B --data train.jsonl --output runs/concise/rated.jsonl
    accelerate launch recipes/concise_two_stage.py --dataset_name runs/concise/rated.jsonl
    python recipes/concise_two_stage.py --dry-run --num_processes 8
"""

from dler.recipe import main

DEFAULTS = {
    "model_name_or_path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "dtype": "bfloat16",
    "output_dir": "runs/concise-stage2-r1-1p5b",
    "dataset_name": "runs/concise/rated.jsonl",
    "preset": "none",  # DLER's paper/released presets do not apply to this paper's recipe
    "solve_rate_column": "solve_rate",
    "max_problems": 8,
    "prompts_per_generation": 8,  # the whole (tiny) training set per generation batch
    "prompts_per_update": 4,
    "per_device_train_batch_size": 8,
    "optimizer_recipe": "grpo",
    "penalty": "truncation",
    "truncated_reward_scale": 1.0,  # reward = correctness: the shortening comes from the loss, not a penalty
    "truncation_length": 8192,
    "max_completion_length": 8192,
    "max_steps": 100 * 2,
    "use_vllm": True,
    "vllm_mode": "colocate",
    "bf16": True,
    "gradient_checkpointing": True,
    "save_steps": 50,
    "logging_steps": 1,
}

if __name__ == "__main__":
    main(DEFAULTS)
