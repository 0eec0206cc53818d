"""DLER on DeepSeek-R1-Distill-Qwen-1.5B with DeepScaleR-Preview (paper Table 1 / Table 4).

accelerate launch --config_file launch/accelerate/zero2.yaml recipes/dler_r1_1p5b.py
python recipes/dler_r1_1p5b.py --dry-run --num_processes 64   # the resolved settings and batch arithmetic
"""

from dler.recipe import main

DEFAULTS = {
    "model_name_or_path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "dtype": "bfloat16",
    "output_dir": "runs/dler-r1-1p5b",
    "per_device_train_batch_size": 16,  # 64 GPUs x 16 = 1024 samples = 64 prompts x 16 rollouts per update
    "max_steps": 450 * 8,  # 450 generation steps x 8 updates (the paper's 7B count; it gives none for 1.5B)
    "truncation_length": 4000,
    "eval_dataset_name": "HuggingFaceH4/aime_2024",  # validation as the released run: AIME-24 (split train)
    "max_completion_length": 4000,
    "use_vllm": True,
    "vllm_mode": "colocate",
    "bf16": True,
    "gradient_checkpointing": True,
    "save_steps": 40,  # every 5 generation steps, as the released run checkpoints
    "logging_steps": 1,
}

if __name__ == "__main__":
    main(DEFAULTS)
