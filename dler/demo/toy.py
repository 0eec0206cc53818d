"""The demo's toy reasoning task: problems, verbose solutions, grading, and a tokenizer and model for it.

Problems are additions of two numbers of `digits` digits ("57+68"). A worked solution has two kinds of lines:

- *necessary* steps: one line per column, right to left, with the carry written out (`5+6+1=12`: 2 is the
  digit, 1 is carried into the next column), then the digits gathered into the sum. The tiny model only ever learns
  to add this way, column by column; a solution that skips these lines has nothing to read its answer from;
- *removable* filler: a loop of "wait, let me verify the sum again" lines, repeated a random number of times (0 to
  5). They never change the answer, so a much shorter solution is possible.

```
<think>
7+8+0=15
5+6+1=12
so 125
wait, let me verify the sum again: 125
wait, let me verify the sum again: 125
</think>
\\boxed{125}
```

Everything is generated offline from a seed. Held-out problems never appear in training data: a problem belongs to
the held-out split when a hash of "a+b" falls in one bucket of ten (`is_held_out`). The tokenizer is a byte-level
BPE trained in memory on solutions, with every digit its own token.

Prompts are the R1 prompts of the real recipes (`dler.data.r1_prompt`), and the DLER stage of `make demo` trains
with the tiny recipe's settings (`dler.demo.tiny.DEFAULTS`) on a JSONL file of problems written by `write_problems`,
graded by the real math reward (`dler.rewards.MathReward`).
"""

from __future__ import annotations

import json
import random
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

from dler.data import r1_prompt

PAD, EOS, IM_START = "<|pad|>", "<|im_end|>", "<|im_start|>"
SPECIAL_TOKENS = [PAD, "<|endoftext|>", IM_START, EOS]
THINK_TAGS = ["<think>", "</think>"]  # ordinary added tokens: decoding keeps them, and the grader needs `</think>`
VERIFY = "wait, let me verify the sum again: "
_BOXED = re.compile(r"\\boxed\{\s*(-?\d+)\s*\}")
_STEP = re.compile(r"^\d\+\d\+[01]=\d\d$", re.M)


@dataclass(frozen=True)
class ToyTask:
    """How problems and their verbose solutions are drawn.

    `digits`: both numbers of a problem have this many digits (2: 10+10 to 99+99).
    `verifies`: probabilities of 0, 1, 2, ... "wait, let me verify" lines before the answer (mean 2.45).
    `think_tags`: False writes the solution without `<think>` / `</think>`, as a model that does not think aloud
    answers (the lines, then the boxed answer): what `--answer_region whole` is for.
    """

    digits: int = 2
    verifies: tuple[float, ...] = (0.15, 0.15, 0.2, 0.2, 0.15, 0.15)
    think_tags: bool = True

    def problem(self, rng: random.Random, held_out: bool = False) -> tuple[int, int]:
        """A random problem (a, b) from the training split, or from the held-out split."""
        low, high = 10 ** (self.digits - 1), 10**self.digits - 1
        while True:
            a, b = rng.randint(low, high), rng.randint(low, high)
            if is_held_out(a, b) == held_out:
                return a, b

    def problems(self, n: int, seed: int, held_out: bool = False) -> list[tuple[int, int]]:
        rng = random.Random(seed)
        return [self.problem(rng, held_out) for _ in range(n)]

    def held_out_problems(self, n: int, seed: int) -> list[tuple[int, int]]:
        """`n` distinct held-out problems (all of them when there are fewer), in a seeded order."""
        low, high = 10 ** (self.digits - 1), 10**self.digits - 1
        rng = random.Random(seed)
        if (high - low + 1) ** 2 <= 20 * n:  # a small space: list it
            pool = [(a, b) for a in range(low, high + 1) for b in range(low, high + 1) if is_held_out(a, b)]
            return rng.sample(pool, min(n, len(pool)))
        found: dict[tuple[int, int], None] = {}
        while len(found) < n:
            found[self.problem(rng, held_out=True)] = None
        return list(found)

    def num_training_problems(self) -> int:
        low, high = 10 ** (self.digits - 1), 10**self.digits - 1
        return sum(not is_held_out(a, b) for a in range(low, high + 1) for b in range(low, high + 1))

    def solution(self, a: int, b: int, rng: random.Random | None = None) -> str:
        """The worked solution: the necessary lines, then (with `rng`) a random number of verify lines."""
        lines = [*column_steps(a, b), f"so {a + b}"]
        if rng is not None:
            lines += [f"{VERIFY}{a + b}"] * rng.choices(range(len(self.verifies)), weights=self.verifies)[0]
        if self.think_tags:
            lines = ["<think>", *lines, "</think>"]
        return "\n".join([*lines, f"\\boxed{{{a + b}}}"])


def is_held_out(a: int, b: int) -> bool:
    """One problem in ten is held out for evaluation, decided by a hash of the problem (stable across runs)."""
    return zlib.crc32(f"{a}+{b}".encode()) % 10 == 0


def column_steps(a: int, b: int) -> list[str]:
    """One line per column, right to left, all the same width: `x+y+carry=two-digit sum`."""
    steps, carry = [], 0
    xs, ys = str(a)[::-1], str(b)[::-1]
    for i in range(max(len(xs), len(ys))):
        x = int(xs[i]) if i < len(xs) else 0
        y = int(ys[i]) if i < len(ys) else 0
        total = x + y + carry
        steps.append(f"{x}+{y}+{carry}={total:02d}")
        carry = total // 10
    return steps


def problem_text(a: int, b: int) -> str:
    return f"{a}+{b}"


def prompt_messages(a: int, b: int) -> list[dict]:
    """The R1 prompt of the training recipes, so the warm start sees what DLER training will show it."""
    return r1_prompt(problem_text(a, b))


def sft_dataset(task: ToyTask, n: int, seed: int):
    """Conversational prompt-completion rows with verbose solutions, for TRL's `SFTTrainer`."""
    from datasets import Dataset

    rng = random.Random(seed)
    rows = [
        {
            "prompt": prompt_messages(a, b),
            "completion": [{"role": "assistant", "content": task.solution(a, b, rng)}],
        }
        for a, b in task.problems(n, seed)
    ]
    return Dataset.from_list(rows)


def write_problems(path, task: ToyTask, n: int, seed: int) -> Path:
    """`n` distinct training problems as JSONL rows {"problem", "answer"}: the file a recipe's `dataset_name` reads."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng, seen = random.Random(seed), {}
    if n > task.num_training_problems():
        raise ValueError(f"{n} distinct problems asked, the training split has {task.num_training_problems()}")
    while len(seen) < n:
        seen.setdefault(task.problem(rng), None)
    with open(path, "w") as f:
        for a, b in seen:
            f.write(json.dumps({"problem": problem_text(a, b), "answer": str(a + b)}) + "\n")
    return path


# ---------------------------------------------------------------- grading and reading solutions
def extract_answer(text: str) -> str | None:
    """The integer in the last `\\boxed{}` after `</think>`; None when thinking never ends or nothing is boxed."""
    if "</think>" not in text:
        return None
    found = _BOXED.findall(text.rsplit("</think>", 1)[1])
    return found[-1] if found else None


def is_correct(text: str, answer: str | int) -> bool:
    found = extract_answer(text)
    return found is not None and int(found) == int(answer)


def count_verify_lines(text: str) -> int:
    return text.count(VERIFY.split(":")[0])


def has_all_steps(text: str, digits: int) -> bool:
    """Whether the solution still writes one column line per digit (the necessary steps)."""
    return len(_STEP.findall(text.split("</think>")[0])) >= digits


# ---------------------------------------------------------------- tokenizer and model
def build_toy_tokenizer(task: ToyTask | None = None, vocab_size: int = 400, seed: int = 0):
    """A byte-level BPE trained on toy solutions: every digit is its own token, words like " verify" are one.

    EOS is `<|im_end|>`, the token that closes each chat turn, so generation stops where the assistant's turn ends.
    """
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast

    from dler.demo.tiny import CHAT_TEMPLATE, train_bpe

    task = task or ToyTask()
    rng = random.Random(seed)
    corpus = [
        "user\n" + prompt_messages(a, b)[0]["content"] + "\nassistant\n" + task.solution(a, b, rng)
        for a, b in task.problems(2000, seed=seed + 1)
    ]
    tokenizer = train_bpe(corpus, vocab_size, SPECIAL_TOKENS, individual_digits=True)
    tokenizer.add_tokens([AddedToken(tag, normalized=False, special=False) for tag in THINK_TAGS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=EOS, pad_token=PAD)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_toy_model(tokenizer, hidden_size: int = 64, num_layers: int = 2, seed: int = 0):
    """`dler.demo.tiny.build_tiny_model` with one key/value head per attention head and a short RoPE wavelength (theta
    500): the column steps read digits at fixed distances, and this variant learnt those look-ups in fewer steps."""
    from dler.demo.tiny import build_tiny_model

    return build_tiny_model(tokenizer, hidden_size, num_layers, seed, num_key_value_heads=4, rope_theta=500.0)


def necessary_length(task: ToyTask, tokenizer, n: int = 500, seed: int = 0) -> int:
    """The longest filler-free solution over `n` training problems, in tokens with EOS (what the trainer counts)."""
    return max(
        len(tokenizer(task.solution(a, b), add_special_tokens=False)["input_ids"]) + 1
        for a, b in task.problems(n, seed)
    )
