"""`EvalConfig`: everything `dler eval` does, and its validation into the settings a run actually uses."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from dler.eval.benchmarks import DEFAULT_BENCHMARKS, check_local_files, parse_benchmarks
from dler.eval.generate import SamplingSettings, resolve_backend
from dler.eval.model_id import check_model_id
from dler.eval.vllm_backend import check_engine_settings
from dler.prompts import PROMPT_FILE, PromptFormat, from_settings, get_format, override, read_prompt_file
from dler.rewards import check_grader

logger = logging.getLogger(__name__)
# the prompt settings of EvalConfig, as `dler.prompts.override` names them, and their command-line flags
_PROMPT_FIELDS = {
    "prompt_template": ("user", "--prompt-template"),
    "system_prompt": ("system_prompt", "--system-prompt"),
    "chat_template": ("chat_template", "--[no-]chat-template"),
    "chat_template_kwargs": ("chat_template_kwargs", "--chat-template-kwargs"),
    "answer_region": ("answer_region", "--answer-region"),
}


@dataclass
class EvalConfig:
    """Everything `dler eval` does. Defaults are the DLER paper's protocol (vLLM, T=0.6, top_p=0.95, 32k, n=16)."""

    model: str
    output_dir: str
    benchmarks: list[str] = field(default_factory=lambda: list(DEFAULT_BENCHMARKS))
    n: int = 16
    temperatures: list[float] = field(default_factory=lambda: [0.6])
    top_p: float = 0.95
    max_tokens: int = 32768
    backend: str = "auto"
    seed: int = 0
    data_dir: str | None = None
    limit: int | None = None
    chunk_size: int | None = None  # transformers: problems per generation call; None: max(1, 32 // n)
    # the prompt (dler.prompts): a named format and overrides; None: the trained model's dler_prompt.json, else r1
    prompt_format: str | None = None
    prompt_template: str | None = None  # the user message, {problem} replaced; None: the format's
    system_prompt: str | None = None  # None: the format's; "": none
    chat_template: bool | None = None  # None: the format's; False: the prompt is raw text
    chat_template_kwargs: dict[str, Any] | str | None = None  # apply_chat_template's; a dict or a JSON object
    answer_region: str | None = None  # "after-think" or "whole"; None: the format's
    prompt_origin: str | None = None  # set by validate(): where the prompt settings came from
    tensor_parallel_size: int = 1
    data_parallel_size: int = 1
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.9
    dtype: str = "auto"
    enforce_eager: bool = False
    grader_workers: int | None = None  # None: the math reward's default pool; 0: grade in this process
    grader: str = "dler"  # "dler" or "released" (DLER's released reward); see dler.rewards.MathReward
    progress: bool = True
    # test-time scaling mode (evaluate_scaling): for each K, one request with n=K per question, timed
    parallel_k: list[int] | None = None
    seed_per_request: bool = False  # vLLM: SamplingParams(seed=) per problem (slower sampling path)
    reproducible: bool = False  # vLLM: VLLM_BATCH_INVARIANT=1 and per-request seeds
    auto_backend: bool = False  # set by validate(): the backend was chosen by --backend auto

    def validate(self, check_model: bool = True) -> EvalConfig:
        """Check every setting, benchmark file and (with `check_model`) the model path or hub id, before anything
        is written or any model is loaded. Returns the resolved copy a run uses: the backend chosen for
        `--backend auto`, the K values sorted, every prompt setting explicit. Resolving a resolved config changes
        nothing."""
        fmt, origin = self._resolve_prompt()
        if self.prompt_origin is None:
            logger.info("prompt: %s (format %r, answer region %r)", origin, fmt.name, fmt.answer_region)
        benchmarks = parse_benchmarks(self.benchmarks)
        check_grader(self.grader, "--grader")
        if self.data_dir is not None:
            check_local_files(benchmarks, self.data_dir)
        if not self.temperatures:
            raise ValueError("give at least one temperature")
        if len(set(self.temperatures)) != len(self.temperatures):
            raise ValueError(f"duplicate temperatures: {self.temperatures}")
        for t in self.temperatures:
            SamplingSettings(self.n, t, self.top_p, self.max_tokens)  # raises on a bad value
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.chunk_size is not None and self.chunk_size < 1:
            raise ValueError(f"--chunk-size must be >= 1, got {self.chunk_size}")
        check_engine_settings(self.tensor_parallel_size, self.data_parallel_size, self.gpu_memory_utilization)
        if self.max_model_len is not None and self.max_model_len < 1:
            raise ValueError(f"--max-model-len must be >= 1, got {self.max_model_len}")
        if Path(self.output_dir).exists() and not Path(self.output_dir).is_dir():
            raise ValueError(f"--output-dir {self.output_dir} exists and is not a directory")
        parallel_k = self._check_scaling() if self.parallel_k is not None else None
        backend = resolve_backend(self.backend)
        if backend != "vllm" and (self.tensor_parallel_size > 1 or self.data_parallel_size > 1):
            raise ValueError("--tensor-parallel-size / --data-parallel-size need --backend vllm")
        if check_model:
            check_model_id(self.model)
        return replace(
            self, backend=backend, auto_backend=self.auto_backend or self.backend == "auto", parallel_k=parallel_k,
            prompt_format=fmt.name, prompt_template=fmt.user, system_prompt=fmt.system or "",
            chat_template=fmt.chat_template, chat_template_kwargs=dict(fmt.chat_template_kwargs),
            answer_region=fmt.answer_region, prompt_origin=self.prompt_origin or origin,
        )  # fmt: skip

    def _resolve_prompt(self) -> tuple[PromptFormat, str]:
        """The prompt format this run uses and where it came from: `prompt_format`, else the settings a trained
        model folder holds (dler_prompt.json), else r1; the other prompt settings given override it."""
        given = {
            name: getattr(self, key) for key, (name, _) in _PROMPT_FIELDS.items() if getattr(self, key) is not None
        }
        flags = [flag for key, (_, flag) in _PROMPT_FIELDS.items() if getattr(self, key) is not None]
        trained = read_prompt_file(self.model) if self.prompt_format is None else None
        if self.prompt_format is not None:
            base, origin = get_format(self.prompt_format, "--prompt-format"), "--prompt-format"
        elif trained is not None:
            path = Path(self.model) / PROMPT_FILE
            base, origin = from_settings(trained, str(path)), f"as the model was trained ({path})"
        else:
            base, origin = get_format("r1"), "the default format"
        return override(base, **given), origin + (f", with {', '.join(flags)}" if flags else "")

    def prompt(self) -> PromptFormat:
        """The prompt format of this config (with its overrides)."""
        return self._resolve_prompt()[0]

    def _check_scaling(self) -> list[int]:
        """The K values of the test-time scaling mode, checked and sorted."""
        ks = self.parallel_k
        if not ks or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in ks):
            raise ValueError(f"--parallel-k takes positive integers, e.g. 1,2,4,8; got {ks}")
        if len(set(ks)) != len(ks):
            raise ValueError(f"duplicate values in --parallel-k: {ks}")
        if len(self.temperatures) != 1 or self.temperatures[0] == 0:
            raise ValueError(
                "--parallel-k samples K responses at one temperature > 0 (greedy decoding would repeat one "
                f"response K times); got --temperature {','.join(f'{t:g}' for t in self.temperatures)}"
            )
        if self.data_parallel_size != 1:
            raise ValueError("--parallel-k times one question at a time on one engine: use --data-parallel-size 1")
        return sorted(ks)

    def chunk(self) -> int:
        if self.chunk_size is not None:
            return self.chunk_size
        return 256 if self.backend == "vllm" else max(1, 32 // self.n)

    def run_dirs(self) -> list[tuple[float, Path]]:
        """(temperature, directory) per run: the output directory itself, or one `t<T>` folder per temperature."""
        root = Path(self.output_dir)
        if len(self.temperatures) == 1:
            return [(self.temperatures[0], root)]
        return [(t, root / f"t{t:g}") for t in self.temperatures]


def seeding(config: EvalConfig, backend=None) -> str:
    """How the samples are seeded: "request", "call" or "engine" (see dler.eval.generate)."""
    if backend is not None:
        named = getattr(backend, "seeding", None)
        if named:
            return named
        return "request" if getattr(backend, "per_request_seed", False) else "call"
    if config.backend == "vllm":
        return "request" if (config.seed_per_request or config.reproducible) else "engine"
    return "call"
