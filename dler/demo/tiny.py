"""A tiny Qwen2-architecture model and tokenizer built entirely offline, for tests, benchmarks and the demo, and the
settings of `recipes/dler_tiny.py` that train it.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in memory on a small math-flavoured corpus, the
model is a randomly initialised `Qwen2ForCausalLM` with a chat template. A random model never emits EOS, so
`warm_up_eos` teaches it, in a second or two of plain next-token training, to end answers after a few tokens.
`save_tiny` writes both to a folder that loads through the real paths (`from_pretrained`, TRL's model strings).

`DEFAULTS` are the tiny recipe's `dler.recipe` settings; they live here, in the package, so the demo's DLER stage
uses them from any install, and `prepare()` builds the model and data they name under `runs/tiny/`.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: `recipes/dler_tiny.py --help` reads DEFAULTS without loading torch
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast, Qwen2ForCausalLM

EOS, PAD = "<|endoftext|>", "<|pad|>"
SPECIAL_TOKENS = [PAD, EOS, "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
TINY_ROOT = "runs/tiny"  # where `prepare()` builds the model and data that `DEFAULTS` train on
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus(seed: int = 0, n: int = 2000) -> list[str]:
    rng = random.Random(seed)
    words = "let us think step by step the answer is so wait check again carry add sum digit final".split()
    lines = []
    for _ in range(n):
        a, b = rng.randint(0, 999), rng.randint(0, 999)
        filler = " ".join(rng.choice(words) for _ in range(rng.randint(2, 8)))
        lines.append(f"<think> {a} + {b} : {filler} </think> \\boxed{{{a + b}}} = {a + b}.")
    return lines


def train_bpe(corpus, vocab_size: int, special_tokens: list[str], individual_digits: bool = False) -> Tokenizer:
    """A byte-level BPE (any text encodes) trained in memory on `corpus`; optionally every digit its own token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if individual_digits
        else byte_level
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return tokenizer


def build_tiny_tokenizer(vocab_size: int = 512, seed: int = 0) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with pad/EOS tokens and a chat template."""
    from transformers import PreTrainedTokenizerFast

    tokenizer = train_bpe(_corpus(seed), vocab_size, SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=PAD)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    tokenizer: PreTrainedTokenizerFast,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
    num_key_value_heads: int = 2,
    rope_theta: float = 10000.0,
) -> Qwen2ForCausalLM:
    """A randomly initialised Qwen2 causal LM sized for CPU tests (about 0.1 M parameters)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=num_key_value_heads,
        max_position_embeddings=2048,
        rope_parameters={"rope_type": "default", "rope_theta": rope_theta},
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def warm_up_eos(
    model: Qwen2ForCausalLM,
    tokenizer: PreTrainedTokenizerFast,
    mean_length: int = 8,
    steps: int = 60,
    seed: int = 0,
) -> Qwen2ForCausalLM:
    """Teach a random model to stop: train on random answers of geometric length (mean `mean_length`) + EOS.

    Afterwards sampled completions have varied lengths and most end with EOS, which length-penalty tests need.
    """
    import torch

    rng = random.Random(seed)
    torch.manual_seed(seed)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "1 + 1"}], add_generation_prompt=True, tokenize=False
    )
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    vocab = [i for i in range(len(tokenizer)) if i not in tokenizer.all_special_ids]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        batch, labels = [], []
        for _ in range(16):
            length = 1
            while rng.random() > 1 / mean_length and length < 4 * mean_length:
                length += 1
            answer = [rng.choice(vocab) for _ in range(length)] + [tokenizer.eos_token_id]
            width = len(prompt_ids) + 4 * mean_length + 1
            ids = prompt_ids + answer
            pad = width - len(ids)
            batch.append(ids + [tokenizer.pad_token_id] * pad)
            labels.append([-100] * len(prompt_ids) + answer + [-100] * pad)
        loss = model(input_ids=torch.tensor(batch), labels=torch.tensor(labels)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    return model


def save_tiny(path: str | Path, seed: int = 0, warm_up: bool = True) -> Path:
    """Build the tiny tokenizer and model (EOS warm-up on by default) and save both to `path`."""
    path = Path(path)
    tokenizer = build_tiny_tokenizer(seed=seed)
    model = build_tiny_model(tokenizer, seed=seed)
    if warm_up:
        warm_up_eos(model, tokenizer, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def ensure_tiny_assets(root: str | Path = TINY_ROOT, problems: int = 256, seed: int = 0) -> tuple[Path, Path]:
    """The tiny model and an offline training file of addition problems under `root`, built on first use."""
    import json

    root = Path(root)
    model_dir, data = root / "model", root / "train.jsonl"
    if not (model_dir / "config.json").exists():
        save_tiny(model_dir, seed=seed)
    if not data.exists():
        rng = random.Random(seed)
        with open(data, "w") as f:
            for _ in range(problems):
                a, b = rng.randint(0, 99), rng.randint(0, 99)
                f.write(json.dumps({"problem": f"What is {a} + {b}?", "answer": str(a + b)}) + "\n")
    return model_dir, data


def prepare() -> None:
    """Build the tiny model and the training file that `DEFAULTS` name, if they are not there yet."""
    ensure_tiny_assets()


DEFAULTS = {
    "model_name_or_path": f"{TINY_ROOT}/model",
    "dataset_name": f"{TINY_ROOT}/train.jsonl",
    "output_dir": "runs/dler-tiny",
    "use_cpu": True,
    "bf16": False,
    "dtype": "float32",
    "gradient_checkpointing": False,
    "use_vllm": False,
    "prompts_per_generation": 4,
    "prompts_per_update": 2,
    "num_generations": 4,
    "per_device_train_batch_size": 4,
    "max_completion_length": 32,
    "truncation_length": 24,
    "dynamic_sampling": False,  # the untrained model never scores: no group would ever carry signal
    "learning_rate": 1e-4,
    "max_steps": 4,
    "save_steps": 2,
    "logging_steps": 1,
    "report_to": "none",
    "reward_workers": 1,
}
