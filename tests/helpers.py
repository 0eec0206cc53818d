"""Small builders shared by the trainer tests and the torchrun scripts."""

from __future__ import annotations

from datasets import Dataset


def addition_dataset(n: int = 64) -> Dataset:
    """Conversational prompts "a + b" with their answers; `a` lets reward functions depend on the prompt."""
    rows = [
        {"prompt": [{"role": "user", "content": f"{a} + {b}"}], "answer": str(a + b), "a": a}
        for a in range(8)
        for b in range(n // 8)
    ]
    return Dataset.from_list(rows)


def always_correct(completions, **kwargs):
    return [1.0] * len(completions)


def even_length(completions, completion_ids, **kwargs):
    """ "Correct" when the response has an even number of tokens: random, mixed groups."""
    return [float(len(ids) % 2 == 0) for ids in completion_ids]


def even_length_if_a_large(completions, completion_ids, a, **kwargs):
    """Prompts with a < 4 are never solved (all-zero groups); the others are mixed."""
    return [float(x >= 4 and len(ids) % 2 == 0) for x, ids in zip(a, completion_ids, strict=True)]


def alternating_if(rule):
    """A reward whose groups are mixed (rollouts alternate 1, 0) exactly for prompts whose `a` satisfies `rule`, and
    all zero otherwise: a known set of groups with signal, whatever the model writes."""

    def reward(completions, a, **kwargs):
        return [float(rule(x) and i % 2 == 0) for i, x in enumerate(a)]

    return reward


def tiny_config(output_dir, **overrides):
    from dler import DLERConfig

    settings = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=8,
        num_generations=4,
        updates_per_generation=2,
        max_completion_length=16,
        truncation_length=8,
        max_steps=2,
        logging_steps=1,
        learning_rate=1e-3,
        report_to=[],
        save_strategy="no",
        gradient_checkpointing=False,
        seed=0,
        data_seed=0,
    )
    settings.update(overrides)
    return DLERConfig(**settings)


TINY_RECIPE = {  # the recipe entry point on the tiny model: 4 prompts x 4 rollouts per generation, 2 per update
    "dtype": "float32",
    "use_vllm": "false",
    "gradient_checkpointing": "false",
    "prompts_per_generation": 4,
    "prompts_per_update": 2,
    "num_generations": 4,
    "per_device_train_batch_size": 8,
    "max_completion_length": 16,
    "truncation_length": 16,
    "max_steps": 1,
    "save_strategy": "no",
    "report_to": "none",
    "reward_workers": 0,
}


def recipe_args(model_dir, data, output_dir, **overrides) -> list[str]:
    """A recipe command line for the tiny model and a local dataset; `overrides` replace or add settings."""
    settings = {
        "model_name_or_path": model_dir,
        "dataset_name": data,
        "output_dir": output_dir,
        **TINY_RECIPE,
        **overrides,
    }
    argv = []
    for key, value in settings.items():
        argv += [f"--{key}", *(map(str, value) if isinstance(value, list | tuple) else [str(value)])]
    return argv
