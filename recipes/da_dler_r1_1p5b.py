"""DA-DLER on R1-Distill-Qwen-1.5B: difficulty-aware budgets, continued from the DLER checkpoint for 150 steps.

A prompt whose group is right at least half the time gets 2000 tokens, the others 4000; generation still runs to
4000 and the short budget acts through the reward (paper section on DA-DLER; no released code).

    accelerate launch recipes/da_dler_r1_1p5b.py --model_name_or_path runs/dler-r1-1p5b
    python recipes/da_dler_r1_1p5b.py --dry-run --num_processes 64
"""

from dler.recipe import main

DEFAULTS = {
    "model_name_or_path": "runs/dler-r1-1p5b",  # the DLER run's output
    "dtype": "bfloat16",
    "output_dir": "runs/da-dler-r1-1p5b",
    "per_device_train_batch_size": 16,
    "max_steps": 150 * 8,  # 150 generation steps x 8 updates
    "truncation_length": 4000,
    "eval_dataset_name": "HuggingFaceH4/aime_2024",  # validation as the released run: AIME-24 (split train)
    "length_budgets": ["0.5:2000"],
    "max_completion_length": 4000,
    "use_vllm": True,
    "vllm_mode": "colocate",
    "bf16": True,
    "gradient_checkpointing": True,
    "save_steps": 40,
    "logging_steps": 1,
}

if __name__ == "__main__":
    main(DEFAULTS)
