"""Prompt formats: one definition of what a model is shown, used by training, `dler eval` and `dler solve-rate`.

A `PromptFormat` says how one problem becomes a prompt: the user message (`{problem}` is replaced), an optional
system prompt, whether the model's chat template is applied (or the text is given raw, as to a base model), its
keyword arguments (e.g. Qwen3's `{"enable_thinking": false}`), optional worked examples (few-shot), where the answer
is read (`answer_region`), strings that end a response, and where the format comes from (`source`).

    from dler.prompts import get_format, resolve, render
    fmt = resolve("qwen25-math-cot")                        # a named format
    fmt = resolve("r1", chat_template_kwargs='{"enable_thinking": false}', answer_region="whole")
    text = render(fmt, "What is 1+1?", tokenizer)           # what generation starts from

The pure functions here do no I/O except `write_prompt_file` / `read_prompt_file` (the settings a training run
saves next to its model, so that `dler eval` evaluates the model as it was trained). Every bad input raises
`PromptError` naming the setting and the fix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ANSWER_REGIONS = ("after-think", "whole")  # after the first </think> (a thinking model), or the whole response
PROMPT_FILE = "dler_prompt.json"  # written next to a trained model: the prompt settings it was trained with

R1_INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."
# DeepScaleR's evaluation (the DLER paper's test sets and prompt): the problem, a space, the instruction.
R1_PROMPT_TEMPLATE = "{problem} " + R1_INSTRUCTION
QWEN_MATH_COT = "Please reason step by step, and put your final answer within \\boxed{}."


class PromptError(ValueError):
    """A prompt setting that cannot be used; the message names the setting and the fix."""


def check_answer_region(region: str, where: str = "answer_region") -> str:
    """`region` itself if it is one of `ANSWER_REGIONS`, else a PromptError naming `where` and the choices."""
    if region not in ANSWER_REGIONS:
        raise PromptError(f"{where} must be one of {', '.join(map(repr, ANSWER_REGIONS))}; got {region!r}")
    return region


@dataclass(frozen=True)
class PromptFormat:
    """How one problem becomes a prompt.

    Attributes:
        name: the registry name (`--prompt-format` / `--prompt_format`).
        user: the user message (chat) or the text (raw); `{problem}` is replaced by the problem (plain replacement:
            `\\boxed{}` needs no escaping).
        system: the system prompt (chat only), or None.
        chat_template: True: the model's chat template renders the messages with the generation prompt; False: the
            text is the prompt itself (base models).
        chat_template_kwargs: extra keyword arguments of `apply_chat_template` (e.g. `{"enable_thinking": False}`).
        shots: worked examples (problem, solution): user/assistant turns before the problem with the chat template,
            else `shot_template` texts joined by `shot_separator` before the user text.
        answer_region: "after-think" (the answer follows the first `</think>`; a response that never closes its
            thinking scores 0) or "whole" (the last box anywhere in the response).
        stop: strings that end a response (a base model runs on into a next question); the response is cut before
            the first of them. Applied by `dler eval`; training refuses such formats (TRL's generation does not stop
            at strings).
        source: where the texts come from (paper, model card, evaluation code).
    """

    name: str
    user: str
    system: str | None = None
    chat_template: bool = True
    chat_template_kwargs: dict[str, Any] = field(default_factory=dict)
    shots: tuple[tuple[str, str], ...] = ()
    shot_template: str = "{problem}\n{solution}"
    shot_separator: str = "\n\n"
    answer_region: str = "after-think"
    stop: tuple[str, ...] = ()
    source: str = ""

    def __post_init__(self):
        if "{problem}" not in self.user:
            raise PromptError(
                f"prompt format {self.name!r}: the user message {_short(self.user)!r} must contain {{problem}}, where "
                "the problem goes (--prompt-template); without it the model would never see the problem"
            )
        check_answer_region(self.answer_region, f"prompt format {self.name!r}: answer_region")
        if self.system and not self.chat_template:
            raise PromptError(
                f"prompt format {self.name!r}: a system prompt needs the chat template (raw text has no system "
                "role); drop --system-prompt, or put the instruction in the user message (--prompt-template)"
            )
        if not isinstance(self.chat_template_kwargs, dict):
            raise PromptError(f"prompt format {self.name!r}: chat_template_kwargs must be a dict")
        if self.chat_template_kwargs and not self.chat_template:
            raise PromptError(
                f"prompt format {self.name!r}: chat_template_kwargs {self.chat_template_kwargs} are arguments of "
                "the chat template, which is off (raw text): they would be ignored; drop them or use the template"
            )
        if (
            self.shots
            and not self.chat_template
            and not all(k in self.shot_template for k in ("{problem}", "{solution}"))
        ):
            raise PromptError(f"prompt format {self.name!r}: shot_template needs {{problem}} and {{solution}}")


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


FORMATS: dict[str, PromptFormat] = {}


def register_format(fmt: PromptFormat, overwrite: bool = False) -> PromptFormat:
    """Add a format to the registry (by name); an existing name needs `overwrite=True`."""
    if not fmt.name or fmt.name in FORMATS and not overwrite:
        raise PromptError(f"prompt format {fmt.name!r} is {'already registered' if fmt.name else 'unnamed'}")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str, where: str = "prompt format") -> PromptFormat:
    """The registered format `name`; an unknown name raises naming the close ones and every choice."""
    if name in FORMATS:
        return FORMATS[name]
    close = difflib.get_close_matches(str(name), list(FORMATS), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise PromptError(f"unknown {where} {name!r}{hint} Formats: {', '.join(FORMATS)} (docs/prompts.md).")


def parse_chat_template_kwargs(value: Any, where: str = "--chat-template-kwargs") -> dict[str, Any]:
    """A dict of chat-template keyword arguments from a dict, a JSON object string, or None / "" (none)."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError as e:
            raise PromptError(
                f"{where} is not valid JSON ({e.msg} at column {e.colno}): {value!r}. Give a JSON object, e.g. "
                """'{"enable_thinking": false}' (double quotes inside, single quotes around it in a shell)."""
            ) from None
        if isinstance(parsed, dict):
            return parsed
        value = parsed
    raise PromptError(f'{where} must be a JSON object such as {{"enable_thinking": false}}; got {value!r}')


def override(
    fmt: PromptFormat,
    *,
    user: str | None = None,
    system_prompt: str | None = None,
    chat_template: bool | None = None,
    chat_template_kwargs: Any = None,
    answer_region: str | None = None,
) -> PromptFormat:
    """`fmt` with the given settings changed (None keeps the format's; `system_prompt=""` removes its system prompt).
    `chat_template_kwargs` is a dict or a JSON object string; given, it replaces the format's."""
    changes: dict[str, Any] = {}
    if user is not None:
        changes["user"] = user
    if system_prompt is not None:
        changes["system"] = system_prompt or None
    if chat_template is not None:
        changes["chat_template"] = bool(chat_template)
    if chat_template_kwargs is not None:
        changes["chat_template_kwargs"] = parse_chat_template_kwargs(chat_template_kwargs)
    if answer_region is not None:
        changes["answer_region"] = check_answer_region(answer_region, "--answer-region")
    return replace(fmt, **changes) if changes else fmt


def resolve(name: str = "r1", **overrides) -> PromptFormat:
    """The registered format `name` with `overrides` (the keywords of `override`)."""
    return override(get_format(name), **overrides)


# ------------------------------------------------------------------------------------------------ rendering


def messages(fmt: PromptFormat, problem: str) -> list[dict[str, str]]:
    """The conversation of one problem: the system prompt, the worked examples as turns, the user message."""
    out = [{"role": "system", "content": fmt.system}] if fmt.system else []
    for q, a in fmt.shots:
        out += [{"role": "user", "content": fmt.user.replace("{problem}", q)}, {"role": "assistant", "content": a}]
    return out + [{"role": "user", "content": fmt.user.replace("{problem}", problem)}]


def raw_text(fmt: PromptFormat, problem: str) -> str:
    """The raw prompt of one problem: the worked examples, then the user text, joined by `shot_separator`."""
    shots = [fmt.shot_template.replace("{problem}", q).replace("{solution}", a) for q, a in fmt.shots]
    return fmt.shot_separator.join([*shots, fmt.user.replace("{problem}", problem)])


def prompt_of(fmt: PromptFormat, problem: str) -> list[dict[str, str]] | str:
    """A dataset's `prompt` value for TRL: a conversation with the chat template, a plain string without (TRL then
    tokenises the text as it is)."""
    return messages(fmt, problem) if fmt.chat_template else raw_text(fmt, problem)


def check_tokenizer(fmt: PromptFormat, tokenizer, model: str = "the model") -> None:
    """A format that applies the chat template needs a tokenizer that has one."""
    if fmt.chat_template and not getattr(tokenizer, "chat_template", None):
        raise PromptError(
            f"the tokenizer of {model} has no chat template, but prompt format {fmt.name!r} applies one. Give the "
            "prompt as raw text (--no-chat-template, recipes: --no_chat_template) or use a format for base models "
            "(--prompt-format boxed); docs/prompts.md"
        )


def render(fmt: PromptFormat, problem: str, tokenizer=None, model: str = "the model") -> str:
    """The text generation starts from: the chat template applied with the generation prompt (and the format's
    keyword arguments, as TRL passes `chat_template_kwargs`), or the raw text (no tokenizer needed)."""
    if not fmt.chat_template:
        return raw_text(fmt, problem)
    check_tokenizer(fmt, tokenizer, model)
    return tokenizer.apply_chat_template(
        messages(fmt, problem), tokenize=False, add_generation_prompt=True, **fmt.chat_template_kwargs
    )


def check_trainable(fmt: PromptFormat) -> PromptFormat:
    """`fmt` itself if a training run can use it: formats whose responses end at stop strings are refused (TRL's
    generation does not stop at strings, so every response would run on to the length cap)."""
    if fmt.stop:
        raise PromptError(
            f"--prompt_format {fmt.name}: its responses end at {list(fmt.stop)}, which TRL's generation does not "
            "apply (every response would run on to the length cap and be graded there); it is an evaluation format "
            "(dler eval). Train with a format without stop strings, e.g. boxed or r1 (docs/prompts.md)."
        )
    return fmt


def cut_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> str | None:
    """`text` up to the first of the `stop` strings, or None when none occurs."""
    ends = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(ends)] if ends else None


# ------------------------------------------------------------------------------------------------ records


def prompt_settings(fmt: PromptFormat) -> dict[str, Any]:
    """What a protocol, a run file and `dler_prompt.json` record: every setting that changes what the model sees or
    how it is graded (the worked examples by count and hash)."""
    shots = json.dumps(fmt.shots, ensure_ascii=False)
    return {
        "format": fmt.name,
        "user": fmt.user,
        "system": fmt.system,
        "chat_template": fmt.chat_template,
        "chat_template_kwargs": dict(fmt.chat_template_kwargs),
        "shots": len(fmt.shots),
        "shots_sha256": hashlib.sha256(shots.encode()).hexdigest()[:16] if fmt.shots else None,
        "stop": list(fmt.stop),
        "answer_region": fmt.answer_region,
        "source": fmt.source,
    }


def from_settings(settings: dict[str, Any], where: str = PROMPT_FILE) -> PromptFormat:
    """The format recorded by `prompt_settings` (its worked examples and stop strings from the registry)."""
    try:
        fmt = resolve(
            settings["format"],
            user=settings["user"],
            system_prompt=settings.get("system") or "",
            chat_template=settings["chat_template"],
            chat_template_kwargs=settings.get("chat_template_kwargs") or {},
            answer_region=settings["answer_region"],
        )
    except KeyError as e:
        raise PromptError(f"{where}: no {e.args[0]!r}; it is not a prompt settings file of dler") from None
    except PromptError as e:
        raise PromptError(f"{where}: {e} Name the prompt with --prompt-format and its flags instead.") from None
    if settings.get("shots_sha256") != prompt_settings(fmt)["shots_sha256"]:
        raise PromptError(f"{where}: the worked examples of prompt format {fmt.name!r} differ from the registry's")
    return fmt


def write_prompt_file(folder: str | Path, fmt: PromptFormat) -> Path:
    """Write `folder/dler_prompt.json` (the prompt settings a model was trained with)."""
    path = Path(folder) / PROMPT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(prompt_settings(fmt), indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def read_prompt_file(model: str | Path) -> dict[str, Any] | None:
    """The prompt settings saved in a local model folder by training, or None (no folder, no file)."""
    path = Path(model).expanduser() / PROMPT_FILE
    if not path.is_file():
        return None
    try:
        settings = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise PromptError(f"{path} cannot be read ({e}); delete it or fix it") from None
    if not isinstance(settings, dict):
        raise PromptError(f"{path} is not a JSON object of prompt settings; delete it or fix it")
    return settings


# ------------------------------------------------------------------------------------------------ registry

# The first 4 worked examples of the MATH chain-of-thought prompt of QwenLM/Qwen2.5-Math's evaluation
# (evaluation/examples.py "math"; the first version of ZubinGou/math-evaluation-harness prompts/cot/math.md),
# verbatim, its stray closing brace included.
_HARNESS_MATH_SHOTS = (
    (
        "Kevin Kangaroo begins hopping on a number line at 0. He wants to get to 1, but he can hop only "
        "$\\frac{1}{3}$ of the distance. Each hop tires him out so that he continues to hop $\\frac{1}{3}$ of the "
        "remaining distance. How far has he hopped after five hops? Express your answer as a common fraction.",
        "Let's think step by step\nKevin hops $1/3$ of the remaining distance with every hop.\nHis first hop takes "
        "$1/3$ closer.\nFor his second hop, he has $2/3$ left to travel, so he hops forward $(2/3)(1/3)$.\nFor his "
        "third hop, he has $(2/3)^2$ left to travel, so he hops forward $(2/3)^2(1/3)$.\nIn general, Kevin hops "
        "forward $(2/3)^{k-1}(1/3)$ on his $k$th hop.\nWe want to find how far he has hopped after five hops.\nThis "
        "is a finite geometric series with first term $1/3$, common ratio $2/3$, and five terms.\nThus, Kevin has "
        "hopped $\\frac{\\frac{1}{3}\\left(1-\\left(\\frac{2}{3}\\right)^5\\right)}{1-\\frac{2}{3}} = "
        "\\boxed{\\frac{211}{243}}$.\nThe answer is \\frac{211}{243}}",
    ),
    (
        "What is the area of the region defined by the equation $x^2+y^2 - 7 = 4y-14x+3$?",
        "Let's think step by step\nWe rewrite the equation as $x^2 + 14x + y^2 - 4y = 10$ and then complete the "
        "square,\nresulting in  $(x+7)^2-49 + (y-2)^2-4=10$,\nor $(x+7)^2+(y-2)^2=63$.\nThis is the equation of a "
        "circle with center $(-7, 2)$ and radius $\\sqrt{63},$\nso the area of this region is $\\pi r^2 = "
        "\\boxed{63\\pi}$.\nThe answer is 63\\pi",
    ),
    (
        "If $x^2+y^2=1$, what is the largest possible value of $|x|+|y|$?",
        "Let's think step by step\nIf $(x,y)$ lies on the circle,\nso does $(x,-y),$ $(-x,-y),$ and $(-x,-y),$ "
        "(which all give the same value of $|x| + |y|$),\nso we can assume that $x \\ge 0$ and $y \\ge 0.$\nThen "
        "$|x| + |y| = x + y.$  Squaring, we get\n\\[(x + y)^2 = x^2 + 2xy + y^2 = 1 + 2xy.\\]\nNote that $(x - y)^2 "
        "\\ge 0.$\nExpanding, we get $x^2 - 2xy + y^2 \\ge 0,$ so $2xy \\le x^2 + y^2 = 1.$\nHence,\\[1 + 2xy \\le "
        "2,\\]which means $x + y \\le \\sqrt{2}.$\nEquality occurs when $x = y = \\frac{1}{\\sqrt{2}},$\nso the "
        "maximum value of $|x| + |y|$ is $\\boxed{\\sqrt{2}}.$\nThe answer is \\sqrt{2}",
    ),
    (
        "If $f(x)=\\frac{ax+b}{cx+d}, abcd\\not=0$ and $f(f(x))=x$ for all $x$ in the domain of $f$, what is the "
        "value of $a+d$?",
        "Let's think step by step\nThe condition $f(f(x))$ means that $f$ is the inverse of itself,\nso its graph is "
        "symmetrical about the line $y = x$.\nWith a rational function of this form, we will have two asymptotes:\na "
        "vertical one at $x=-d/c$ if $cx+d$ does not divide $ax+b$,\nand a horizontal one at $y=a/c$,\nif we take "
        "the limit of $f(x)$ as $x$ goes to $\\pm\\infty$.\nIn order for $f$ to be its own inverse, the intersection "
        "of the asymptotes must lie on the line $y=x$\nso that it and its asymptotes reflect onto themselves.\nThis "
        "means that $-d/c=a/c$,\nand therefore $-d=a$ and $a+d=\\boxed{0}$.\nThe answer is 0",
    ),
)

for _fmt in (
    PromptFormat(
        "r1", R1_PROMPT_TEMPLATE,
        source="DLER paper (arXiv 2510.15110) and DeepScaleR's evaluation: the problem, a space and the R1 "
        "instruction as the user message, in the model's chat template; the answer follows </think>",
    ),
    PromptFormat(
        "boxed", "{problem}\n" + QWEN_MATH_COT, chat_template=False, answer_region="whole",
        source="raw text for base models: the problem, a newline and Qwen2.5-Math's CoT instruction "
        "(math-evaluation-harness / QwenLM/Qwen2.5-Math evaluation/utils.py, template 'mathstral')",
    ),
    PromptFormat(
        "qwen-boxed",
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{problem}\n" + QWEN_MATH_COT
        + "<|im_end|>\n<|im_start|>assistant\n",
        chat_template=False, answer_region="whole", stop=("<|im_end|>",),
        source="'Does Reinforcement Learning Really Incentivize Reasoning Capacity in LLMs Beyond the Base Model?' "
        "(arXiv 2504.13837; LeapLabTHU/limit-of-RLVR, --template qwen-boxed) on base models: Qwen's chat markup "
        "written as raw text (QwenLM/Qwen2.5-Math evaluation/utils.py 'qwen-boxed'); a response ends at <|im_end|>",
    ),
    PromptFormat(
        "fewshot-cot", "Question: {problem}\nAnswer:", chat_template=False, shots=_HARNESS_MATH_SHOTS,
        shot_template="Question: {problem}\nAnswer: {solution}", shot_separator="\n\n\n", answer_region="whole",
        stop=("\n\nQuestion:",),
        source="4-shot chain of thought for base models: the 'cot' layout and MATH examples of QwenLM/Qwen2.5-Math's "
        "evaluation (evaluation/utils.py, examples.py; from math-evaluation-harness); a response ends at the next "
        "'\\n\\nQuestion:', that evaluation's stop word",
    ),
    PromptFormat(
        "qwen25-math-cot", "{problem}", system=QWEN_MATH_COT, answer_region="whole",
        source="Qwen2.5-Math-Instruct's CoT prompt (QwenLM/Qwen2.5-Math README): the instruction as the system "
        "prompt, the problem as the user message, in the chat template; no thinking tags",
    ),
    PromptFormat(
        "nemotron-think", R1_PROMPT_TEMPLATE, system="detailed thinking on",
        source="Llama-Nemotron reasoning mode (nvidia/Llama-3.1-Nemotron-Nano-8B-v1 model card, NVIDIA NIM "
        "reasoning-model docs): system prompt 'detailed thinking on', reasoning closed by </think>; the user "
        "message is dler's R1 prompt",
    ),
):  # fmt: skip
    register_format(_fmt)
