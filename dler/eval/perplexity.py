"""`dler perplexity`: the perplexity of one run's responses under another model, as "Does RL incentivize reasoning"
(Yue et al. 2025, Sec. 4) measures how likely an RL model's responses are under its base model.

For a response Y = (y_1..y_T) to a prompt x, scored under model M: mean NLL = -(1/T) sum_t log P_M(y_t | x, y_<t),
and the paper's per-response perplexity PPL_M(Y | x) = exp(mean NLL). x is the prompt as the responding run
rendered it (its protocol's prompt format, with the responding model's chat template when it can be loaded, checked
against the protocol's `prompt_example`); Y is the response text, tokenised by M's tokenizer, without an EOS.

Per benchmark, `perplexity.json` holds the token-weighted perplexity exp(sum of NLL / sum of T) over every token
of every response (`ppl`), and the mean and median of the per-response perplexities (the paper plots their
distribution). Each problem's line (`<benchmark>.jsonl`: its responses' token counts and mean NLLs) is written as
soon as it is scored, so a rerun of the same command skips what is done. Details: docs/comparing.md.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

from dler.eval.run_folders import ReportError
from dler.eval.store import GENERATIONS_DIR, PROTOCOL_FILE, RESULTS_FILE, GenerationStore, write_json
from dler.prompts import prompt_settings, render

logger = logging.getLogger(__name__)

SUMMARY_FILE = "perplexity.json"
RESUME_KEYS = ("model", "responses", "prompt", "dtype")  # what a rerun into the same --output-dir must share
LOGIT_CHUNK = 1024  # positions whose log-softmax is taken at once (float32 over the vocabulary)


class PerplexityError(ReportError):
    """Inputs `dler perplexity` cannot use (found before any model loads); the CLI prints it as one line."""


# ------------------------------------------------------------------------------------------------ scoring


def score_batch(model, pairs: list[tuple[list[int], list[int]]], pad_id: int) -> list[tuple[float, int]]:
    """(sum of -log P(response token | everything before it), response tokens) for each (prompt ids, response ids)
    pair, in one forward pass without gradients over the right-padded batch. An empty response gives (0.0, 0)."""
    import torch

    if any(not prompt for prompt, _ in pairs):
        raise ValueError("score_batch: every prompt needs at least one token (the first response token's context)")
    rows = [prompt + response for prompt, response in pairs]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):  # right padding: every real token keeps its position
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    device = next(model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    out = []
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        for i, (prompt, response) in enumerate(pairs):
            total = 0.0
            for s in range(0, len(response), LOGIT_CHUNK):  # logits at t predict token t + 1
                e = min(s + LOGIT_CHUNK, len(response))
                logp = torch.log_softmax(logits[i, len(prompt) - 1 + s : len(prompt) - 1 + e].float(), dim=-1)
                target = ids[i, len(prompt) + s : len(prompt) + e, None]
                total -= float(logp.gather(-1, target).sum())
            out.append((total, len(response)))
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """One benchmark's numbers from its problem lines (`tokens`, `nll`: mean NLL per response): `ppl`
    (token-weighted: exp of the mean NLL over every token), `ppl_response_mean` / `_median` (of the per-response
    perplexities exp(mean NLL)), `mean_nll`, and counts. Empty responses have no NLL and are only counted."""
    pairs = [(t, nll) for r in rows for t, nll in zip(r["tokens"], r["nll"], strict=True) if t > 0]
    tokens = sum(t for t, _ in pairs)
    out: dict[str, Any] = {
        "problems": len(rows),
        "responses": len(pairs),
        "empty_responses": sum(len(r["tokens"]) for r in rows) - len(pairs),
        "tokens": tokens,
    }
    if not pairs:
        return {**out, "mean_nll": None, "ppl": None, "ppl_response_mean": None, "ppl_response_median": None}
    mean_nll = sum(t * nll for t, nll in pairs) / tokens
    per_response = [math.exp(nll) for _, nll in pairs]
    return {**out, "mean_nll": mean_nll, "ppl": math.exp(mean_nll), "ppl_response_mean": statistics.fmean(per_response),
            "ppl_response_median": statistics.median(per_response)}  # fmt: skip


# ------------------------------------------------------------------------------------------------ inputs


def _protocol(run: Path) -> dict[str, Any]:
    for name in (PROTOCOL_FILE, RESULTS_FILE):
        path = run / name
        if path.is_file():
            data = json.loads(path.read_text())
            return data if name == PROTOCOL_FILE else data.get("protocol") or {}
    raise PerplexityError(f"--responses {run} has no {PROTOCOL_FILE} or {RESULTS_FILE}: the prompts its responses "
                          "answered cannot be rebuilt; give the run folder dler eval wrote")  # fmt: skip


def _prompt_format(protocol: dict[str, Any], run: Path):
    from dler.prompts import R1_PROMPT_TEMPLATE, PromptError, from_settings, resolve

    settings = protocol.get("prompt") or prompt_settings(
        resolve("r1", user=protocol.get("prompt_template") or R1_PROMPT_TEMPLATE)
    )  # runs written before the prompt was recorded: the r1 format with their user message
    try:
        return from_settings(settings, f"{run / PROTOCOL_FILE} (prompt)")
    except PromptError as e:
        raise PerplexityError(str(e)) from None


def check_inputs(model: str, responses: str | Path, benchmarks: list[str] | None) -> tuple[Path, list[str]]:
    """The responses run folder and the benchmarks to score, after checking the model and that the run holds
    generations for them; PerplexityError naming the fix otherwise. Loads nothing."""
    from dler.eval.model_id import model_problem

    problem = model_problem(model, "--model")
    if problem:
        raise PerplexityError(problem)
    run = Path(responses)
    if not run.is_dir():
        raise PerplexityError(f"--responses {responses}: no such folder (give a run folder that dler eval wrote)")
    have = sorted(p.stem for p in (run / GENERATIONS_DIR).glob("*.jsonl") if p.stat().st_size > 0)
    if not have:
        subs = sorted(str(p.parent.parent) for p in run.glob(f"*/{GENERATIONS_DIR}/*.jsonl"))
        hint = f"; its subfolders hold some: {', '.join(dict.fromkeys(subs))}" if subs else ""
        raise PerplexityError(f"--responses {responses} holds no {GENERATIONS_DIR}/<benchmark>.jsonl: perplexity "
                              f"scores the responses dler eval writes there{hint}")  # fmt: skip
    missing = [b for b in benchmarks or [] if b not in have]
    if missing:
        raise PerplexityError(f"--benchmarks: {run} has no generations for {', '.join(missing)}; "
                              f"it has {', '.join(have)}")  # fmt: skip
    return run, list(benchmarks or have)


def _records(run: Path, benchmark: str, limit: int | None) -> list[dict[str, Any]]:
    """The responding run's problem lines of `benchmark`, by problem index (the first `limit`)."""
    records = GenerationStore(run / GENERATIONS_DIR / f"{benchmark}.jsonl").load()
    return [records[i] for i in sorted(records)][:limit]


def _check_resume(path: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """The summary already in the output folder when it was made with the same settings (else an error), or a new
    one holding `settings`."""
    if not path.is_file():
        return {**settings, "benchmarks": {}}
    old = json.loads(path.read_text())
    diff = [f"{k}: {old.get(k)!r} there, {settings[k]!r} now" for k in RESUME_KEYS if old.get(k) != settings[k]]
    if diff:
        raise PerplexityError(f"{path.parent} holds perplexities computed otherwise ({'; '.join(diff)}); rerun with "
                              "those settings or give another --output-dir")  # fmt: skip
    return {**old, **settings}


def _render_tokenizer(protocol: dict[str, Any], fmt, scorer_tokenizer, model: str):
    """The tokenizer whose chat template renders the prompts: the responding model's when it can be loaded (it
    rendered them), else the scoring model's; and which one it was."""
    from dler.eval.model_id import model_problem

    source = protocol.get("model")
    if fmt.chat_template and source and source != model and model_problem(source, "model") is None:
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(source), source
        except (OSError, ValueError) as e:
            logger.warning("cannot load the tokenizer of %s (%s); rendering prompts with %s's", source, e, model)
    return scorer_tokenizer, model


def _check_example(protocol: dict[str, Any], fmt, tokenizer, who: str, records: dict[str, list[dict]]) -> None:
    """The prompt rebuilt for the protocol's `prompt_example` problem must be the text the run recorded."""
    example = protocol.get("prompt_example") or {}
    record = next((r for r in records.get(example.get("benchmark"), []) if r["index"] == example.get("index")), None)
    if record is None:
        return
    if render(fmt, record["problem"], tokenizer, who) != example["text"]:
        raise PerplexityError(f"the prompt rebuilt with {who}'s tokenizer differs from the one the run recorded in "
                              f"its protocol ({example['benchmark']}[{example['index']}]); make the responding "
                              f"model ({protocol.get('model')}) loadable here so its chat template renders them")  # fmt: skip


# ------------------------------------------------------------------------------------------------ the run


def perplexity(
    model: str,
    responses: str | Path,
    output_dir: str | Path,
    benchmarks: list[str] | None = None,
    batch_size: int = 8,
    limit: int | None = None,
    dtype: str = "auto",
) -> dict[str, Any]:
    """Score every response of the run `responses` under `model` into `output_dir` (resumable) and return the
    summary written to `perplexity.json`. Every input is checked before the model loads."""
    from dler.eval.generate import TransformersBackend

    run, names = check_inputs(model, responses, benchmarks)
    protocol = _protocol(run)
    fmt = _prompt_format(protocol, run)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"model": model, "responses": str(run.resolve()), "responses_model": protocol.get("model"),
                "prompt": prompt_settings(fmt), "dtype": dtype}  # fmt: skip
    summary = _check_resume(out / SUMMARY_FILE, settings)
    records = {b: _records(run, b, limit) for b in names}
    backend = TransformersBackend(model, dtype=dtype)
    render_tok, who = _render_tokenizer(protocol, fmt, backend.tokenizer, model)
    _check_example(protocol, fmt, render_tok, who, records)
    summary["prompt_rendered_by"] = who
    write_json(out / SUMMARY_FILE, summary)
    for b in names:
        store = GenerationStore(out / f"{b}.jsonl")
        done = store.load()
        todo = [r for r in records[b] if r["index"] not in done]
        logger.info("%s: %d problems scored, %d to score", b, len(records[b]) - len(todo), len(todo))
        try:
            for line in _score_problems(backend, todo, lambda p: render(fmt, p, render_tok, who), fmt, batch_size):
                store.append({"benchmark": b, **line})
                done[line["index"]] = line
        finally:
            store.close()
        summary["benchmarks"][b] = summarize([done[r["index"]] for r in records[b] if r["index"] in done])
        write_json(out / SUMMARY_FILE, summary)
    return summary


def _score_problems(backend, todo: list[dict[str, Any]], prompt_text, fmt, batch_size: int):
    """Yield each problem's line ({"index", "tokens", "nll"}) as soon as all its responses are scored, scoring
    `batch_size` responses (of one or several problems) per forward pass."""
    from tqdm.auto import tqdm

    from dler.eval.benchmarks import prompt_ids

    tok = backend.tokenizer
    items = []  # (problem index, sample, prompt ids, response ids)
    for r in todo:
        prompt = prompt_ids(tok, prompt_text(r["problem"]), add_special_tokens=not fmt.chat_template)
        items += [(r["index"], j, prompt, tok(text, add_special_tokens=False)["input_ids"])
                  for j, text in enumerate(r["responses"])]  # fmt: skip
    sizes = {r["index"]: len(r["responses"]) for r in todo}
    pending: dict[int, dict[int, tuple[float, int]]] = {}
    for s in tqdm(range(0, len(items), batch_size), desc="batches", disable=None, leave=False):
        batch = items[s : s + batch_size]
        for (index, j, _, _), scored in zip(batch, score_batch(backend.model, [x[2:] for x in batch],
                                                               backend.pad_id), strict=True):  # fmt: skip
            pending.setdefault(index, {})[j] = scored
            if len(pending[index]) == sizes[index]:
                scores = [v for _, v in sorted(pending.pop(index).items())]
                yield {"index": index, "tokens": [t for _, t in scores],
                       "nll": [total / t if t else None for total, t in scores]}  # fmt: skip


# ------------------------------------------------------------------------------------------------ tables


def find_perplexity_dirs(given: list[str | Path], search: list[str | Path]) -> list[Path]:
    """The folders `given` (each must hold perplexity.json) and those found one level inside the `search` folders."""
    found = []
    for p in map(Path, given):
        if not (p / SUMMARY_FILE).is_file():
            raise PerplexityError(f"--perplexity {p}: no {SUMMARY_FILE} there (the --output-dir of dler perplexity)")
        found.append(p)
    for p in map(Path, search):
        found += sorted(c.parent for c in p.glob(f"*/{SUMMARY_FILE}"))
    unique = {p.resolve(): p for p in found}
    return list(unique.values())


def perplexity_table(folders: list[Path], names: dict[str, str] | None = None) -> str:
    """Markdown: one row per (folder, benchmark): whose responses, scored by which model, counts, the token-weighted
    perplexity and the median and mean of the per-response ones. `names`: run path -> label for the responses."""
    header = ["responses of", "scored by", "benchmark", "responses", "tokens", "PPL (token-weighted)",
              "per-response PPL: median", "mean"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|---|---|---" + "|---:" * 5 + "|"]
    for folder in folders:
        s = json.loads((folder / SUMMARY_FILE).read_text())
        who = (names or {}).get(s.get("responses"), s.get("responses_model") or s.get("responses"))
        for b, m in s.get("benchmarks", {}).items():
            cells = [str(who), str(s.get("model")), b, str(m["responses"]), f"{m['tokens']:,}"]
            cells += [
                "—" if m[k] is None else f"{m[k]:.3f}" for k in ("ppl", "ppl_response_median", "ppl_response_mean")
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
