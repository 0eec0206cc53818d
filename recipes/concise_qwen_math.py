"""Concise Reasoning via RL (arXiv 2504.05185), the second RL stage on a non-thinking math model: Qwen2.5-Math-7B.

The paper's released run for a non-reasoning model (ai-wand/concise-reasoning, train/examples/script/qwen_on_math.sh
on its OpenRLHF fork; README: "Qwen2.5-Math-7B base-model on MATH data") trains on 4 MATH problems with PPO. On
occasionally solvable problems (0 < p < 1) the loss favours shorter responses, so no length penalty is needed: the
reward is correctness alone (truncation with truncated_reward_scale=1 leaves it unchanged). PPO (critic, GAE) is not
in dler: plain GRPO stands in, as in recipes/concise_two_stage.py. Qwen2.5-Math writes no </think>: the prompt is its
CoT system prompt in its chat template and the last \\boxed{} of the whole response is graded.

    dler solve-rate --model Qwen/Qwen2.5-Math-7B --data math_train.jsonl --output runs/concise/qwen_rated.jsonl \
        --prompt-format qwen25-math-cot --temperature 0.6 --max-tokens 3000
    accelerate launch recipes/concise_qwen_math.py --dataset_name runs/concise/qwen_rated.jsonl
    python recipes/concise_qwen_math.py --dry-run --num_processes 2

math_train.jsonl holds MATH training problems, one {"problem": ..., "answer": ...} per line (the released run's 8 are
in its train/data/math_level5_data_processed_with_qwen_prompt.json, fields question / gt_answer).

Where the released run differs and dler cannot follow (each is said once, here):
- reward: +1 correct, -0.5 wrong, -1 no \\boxed{} (its experience_maker.py); dler's reward is 1/0. GRPO centres and
  scales rewards per group, which makes 1/-0.5 and 1/0 the same; the extra -1 for a missing box is not reproduced.
- KL: OpenRLHF adds 0.01 x the k1 estimate to the per-token reward; dler adds 0.01 x k3 (TRL's term) to the loss.
- prompt: the released data ends its hand-written ChatML at "<|im_start|>assistant" without the newline the
  tokenizer's template adds; dler applies the template.
- problems: the run takes the first 4 of its 8 MATH level-5 problems (--max_samples 4); dler keeps the first 4 with
  0 < solve rate < 1, the paper's criterion, from `dler solve-rate`.

"run:" in a comment below cites that script (or the OpenRLHF default it leaves in place).
"""

from dler.recipe import main

DEFAULTS = {
    "model_name_or_path": "Qwen/Qwen2.5-Math-7B",  # run: --pretrain Qwen/Qwen2.5-Math-7B
    "dtype": "bfloat16",  # run: --bf16
    "output_dir": "runs/concise-qwen-math-7b",  # not stated; dler's runs/ layout
    "dataset_name": "runs/concise/qwen_rated.jsonl",  # `dler solve-rate` output (see above)
    "preset": "none",  # the DLER paper's presets do not describe this paper's run
    "prompt_format": "qwen25-math-cot",  # run: data/math_level5_data_processed_with_qwen_prompt.json (system prompt)
    "answer_region": "whole",  # Qwen2.5-Math has no thinking tags: grade the last \boxed{} of the response
    "solve_rate_column": "solve_rate",  # paper: occasionally solvable problems, 0 < p < 1
    "max_problems": 4,  # run: --max_samples 4
    "prompts_per_generation": 4,  # run: --rollout_batch_size 4 (the whole training set per generation)
    "num_generations": 8,  # run: --n_samples_per_prompt 8
    "prompts_per_update": 1,  # run: --train_batch_size 8 samples = 1 prompt x 8 (4 updates per generation)
    "per_device_train_batch_size": 2,  # run: --micro_train_batch_size 2
    "max_steps": 150 * 4,  # run: --num_episodes 150 x 4 updates (--max_epochs 1)
    "optimizer_recipe": "grpo",  # run: PPO (not in dler); GRPO stands in: group advantages, symmetric clip
    "epsilon": 0.2,  # run: --eps_clip default 0.2
    "delta": None,  # run: OpenRLHF PolicyLoss has no dual clip (DLERConfig's default is the DLER run's 10)
    "loss_type": "grpo",  # run: OpenRLHF PolicyLoss, token mean per response, then mean over responses
    "beta": 0.01,  # run: --init_kl_coef 0.01 (fixed: no --kl_target)
    "kl_estimator": "k3",  # run: k1 in the reward; not in dler, TRL's own k3 stands in
    "penalty": "truncation",  # with scale 1 below it changes nothing: paper, no length penalty
    "truncated_reward_scale": 1.0,  # reward = correctness: the shortening comes from the loss, not a penalty
    "max_completion_length": 3000,  # run: --generate_max_len 3000 (Qwen2.5-Math's context is 4096 tokens)
    "truncation_length": 3000,  # = the generation cap: no budget below it
    "max_prompt_length": 1024,  # run: --prompt_max_len 1024
    "temperature": 0.6,  # run: --temperature 0.6
    "top_p": 1.0,  # run: OpenRLHF default --top_p 1.0
    "learning_rate": 5e-7,  # run: --actor_learning_rate 5e-7
    "lr_scheduler_type": "cosine_with_min_lr",  # run: ppo_actor.py get_scheduler("cosine_with_min_lr", ...)
    "lr_scheduler_kwargs": {"min_lr_rate": 0.1},  # run: min_lr = 0.1 x actor_learning_rate
    "warmup_steps": 0.03,  # run: num_warmup_steps = ceil(0.03 x max_steps)
    "adam_beta2": 0.95,  # run: OpenRLHF default --adam_betas 0.9 0.95
    "weight_decay": 0.0,  # run: OpenRLHF default --l2 0
    "max_grad_norm": 1.0,  # run: OpenRLHF default --max_norm 1.0
    "use_vllm": True,  # run: --vllm_num_engines 2
    "vllm_mode": "colocate",  # not stated (run: separate engines); dler's one-node layout
    "bf16": True,  # run: --bf16
    "gradient_checkpointing": True,  # run: --gradient_checkpointing
    "save_steps": 4 * 4,  # run: --save_steps 4 (generation steps) x 4 updates
    "logging_steps": 1,  # run: --logging_steps default 1
}

if __name__ == "__main__":
    main(DEFAULTS)
