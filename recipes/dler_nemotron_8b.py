"""DLER on Llama-3.1-Nemotron-Nano-8B-v1, then update-selective merging (DLER paper Sec. 4.6, Table 2).

The paper's strong-model case: DLER with a 6000-token truncation and clip-high 0.36 shortened Nemotron-8B from 5996 to
2735 tokens but cost AIME-24 accuracy (66.40 -> 63.54); merging back the top 25% of its updates by |delta|, scaled
by 0.7, kept most of the shortening and the accuracy (3237 tokens, 66.66). Nemotron reasons only when its system
prompt says "detailed thinking on" (model card), then closes its thinking with </think>: prompt format
`nemotron-think` (that system prompt, the DLER user prompt, the answer after </think>). Every other setting is the
DLER recipe's (paper Table 4, through `--preset paper`), as for the R1 models.

    accelerate launch --config_file launch/accelerate/zero3_offload.yaml recipes/dler_nemotron_8b.py
    dler merge --base nvidia/Llama-3.1-Nemotron-Nano-8B-v1 --tuned runs/dler-nemotron-8b \
        --output runs/dler-nemotron-8b-merged --top-fraction 0.25 --scale 0.7
    dler eval --model nvidia/Llama-3.1-Nemotron-Nano-8B-v1 --output-dir runs/eval/nemotron-8b \
        --prompt-format nemotron-think
    dler eval --model runs/dler-nemotron-8b --output-dir runs/eval/dler-nemotron-8b --prompt-format nemotron-think
    dler eval --model runs/dler-nemotron-8b-merged --output-dir runs/eval/dler-nemotron-8b-merged \
        --prompt-format nemotron-think
    dler report runs/eval/dler-nemotron-8b runs/eval/dler-nemotron-8b-merged --baseline runs/eval/nemotron-8b
    make reproduce-nemotron-merge        # the same six steps
    python recipes/dler_nemotron_8b.py --dry-run --num_processes 64

Not stated by the paper for this model, and what dler uses: the training data, batch and step count (DLER's:
DeepScaleR-Preview, 512 x 16 rollouts, 450 generation steps as for R1-7B), the generation cap (= the 6000-token
budget, the paper's budget = cap relation for R1), the user prompt (DLER's R1 prompt) and whether the top 25% is
global or per tensor (`dler merge --selection global`, the paper's wording; docs/merge.md).
"""

from dler.recipe import main

DEFAULTS = {
    "model_name_or_path": "nvidia/Llama-3.1-Nemotron-Nano-8B-v1",  # paper Sec. 4.6 / Table 2
    "dtype": "bfloat16",  # as recipes/dler_r1_7b.py
    "output_dir": "runs/dler-nemotron-8b",  # not stated; dler's runs/ layout
    "prompt_format": "nemotron-think",  # model card: reasoning on with system prompt "detailed thinking on"
    "truncation_length": 6000,  # paper Sec. 4.6 / Table 2: truncation length 6000
    "max_completion_length": 6000,  # not stated; = the budget, as budget = cap = 4000 for R1 (Table 4)
    "epsilon_high": 0.36,  # paper Sec. 4.6 / Table 2: clip-high 0.36 (R1: 0.28)
    "per_device_train_batch_size": 8,  # 64 GPUs x 8 x 2 accumulation = 1024 samples per update (Table 4)
    "max_steps": 450 * 8,  # not stated for Nemotron; the 7B run's 450 generation steps x 8 updates
    "eval_dataset_name": "HuggingFaceH4/aime_2024",  # validation as the released run: AIME-24 (split train)
    "use_vllm": True,  # as the released run
    "vllm_mode": "colocate",  # as recipes/dler_r1_7b.py
    "vllm_tensor_parallel_size": 2,  # as the released 7B run: vLLM tensor parallel 2
    "bf16": True,  # as the released run
    "gradient_checkpointing": True,  # as recipes/dler_r1_7b.py
    "save_steps": 40,  # every 5 generation steps, as the released run checkpoints
    "logging_steps": 1,  # every optimizer update
}

if __name__ == "__main__":
    main(DEFAULTS)
