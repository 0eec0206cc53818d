"""DLER on DeepSeek-R1-Distill-Qwen-7B with DeepScaleR-Preview (paper Table 1 / Table 4: 450 generation steps).

accelerate launch --config_file launch/accelerate/zero3_offload.yaml recipes/dler_r1_7b.py
python recipes/dler_r1_7b.py --dry-run --num_processes 64
"""

from dler.recipe import main

DEFAULTS = {
    "model_name_or_path": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B",
    "dtype": "bfloat16",
    "output_dir": "runs/dler-r1-7b",
    "per_device_train_batch_size": 8,  # 64 GPUs x 8 x 2 accumulation = 1024 samples per update
    "max_steps": 450 * 8,  # 450 generation steps x 8 optimizer updates each
    "truncation_length": 4000,
    "eval_dataset_name": "HuggingFaceH4/aime_2024",  # validation as the released run: AIME-24 (split train)
    "max_completion_length": 4000,
    "use_vllm": True,
    "vllm_mode": "colocate",
    "vllm_tensor_parallel_size": 2,
    "bf16": True,
    "gradient_checkpointing": True,
    "save_steps": 40,  # every 5 generation steps, as the released run checkpoints
    "logging_steps": 1,
}

if __name__ == "__main__":
    main(DEFAULTS)
