"""What the protocols of compared runs say, and the warnings where they were evaluated differently: backend,
prompt (template, format, system prompt, chat template, answer region, the rendered text), temperature, grader, max
tokens, samples per problem, top_p, problems, and the GPUs that timed Table 5."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from dler.eval.run_folders import Run, benchmark_columns, protocol_temperature, with_results


def grader_name(protocol: dict[str, Any]) -> str | None:
    """The grader a protocol names (`dler`, `released`, ...), also from the resume key of older runs."""
    g = protocol.get("grader")
    if isinstance(g, dict):
        return g.get("grader") or g.get("reward")
    if g is None:
        g = (protocol.get("resume_key") or {}).get("grader")
    return None if g is None else str(g)


def _grader_settings(protocol: dict[str, Any]) -> str | None:
    """The grader's settings as canonical JSON, its description left out."""
    g = protocol.get("grader")
    if not isinstance(g, dict):
        return None
    return json.dumps({k: v for k, v in g.items() if k != "description"}, sort_keys=True)


def template_id(protocol: dict[str, Any]) -> str | None:
    """The first 8 hex digits of the prompt template's sha256: short enough for a table cell."""
    t = protocol.get("prompt_template")
    return None if t is None else _short_hash(str(t))


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _prompt(key: str):
    """A protocol's prompt setting `key` (None for runs recorded before prompts were settings)."""
    return lambda p: (p.get("prompt") or {}).get(key) if isinstance(p.get("prompt"), dict) else None


def _system(p: dict[str, Any]) -> str | None:
    return (p["prompt"].get("system") or "") if isinstance(p.get("prompt"), dict) else None


def _chat_template(p: dict[str, Any]) -> str | None:
    """ "on", "on {kwargs}" or "off (raw text)"; None for older runs."""
    if not isinstance(p.get("prompt"), dict):
        return None
    if not p["prompt"].get("chat_template"):
        return "off (raw text)"
    kwargs = p["prompt"].get("chat_template_kwargs") or {}
    return "on" + (f" {json.dumps(kwargs, sort_keys=True)}" if kwargs else "")


def _prompt_texts(items: list[tuple[str, dict[str, Any]]]) -> list[str]:
    """Runs whose recorded prompt of the same problem differs (the rendered text: chat template included)."""
    by_problem: dict[tuple, dict[str, list[str]]] = {}
    for label, p in items:
        example = p.get("prompt_example")
        if isinstance(example, dict) and example.get("text") is not None:
            where = (example.get("benchmark"), example.get("index"))
            by_problem.setdefault(where, {}).setdefault(_short_hash(example["text"]), []).append(label)
    return [
        f"runs differ in the prompt text of {b}[{i}]: "
        + "; ".join(f"`{h}` ({', '.join(labels)})" for h, labels in sorted(texts.items()))
        for (b, i), texts in by_problem.items()
        if len(texts) > 1
    ]


def _gpus(protocol: dict[str, Any]) -> tuple | None:
    gpus = (protocol.get("hardware") or {}).get("gpus") or (protocol.get("resume_key") or {}).get("gpus")
    return tuple(gpus) if gpus else None


def _differences(items: list[tuple[str, dict[str, Any]]], latency: bool = False) -> list[str]:
    """What differs between the protocols of (label, protocol) pairs; `latency` adds the GPUs (timings)."""
    sampled = [(label, p) for label, p in items if protocol_temperature(p) != 0]
    sampling = lambda key: lambda p: (p.get("sampling") or {}).get(key)  # noqa: E731
    checks = [
        ("backend", items, lambda p: p.get("backend"), str),
        ("prompt template", items, lambda p: p.get("prompt_template"), lambda t: f"`{_short_hash(str(t))}`"),
        ("prompt format", items, _prompt("format"), str),
        ("system prompt", items, _system, lambda t: f"`{_short_hash(t)}`" if t else "none"),
        ("chat template", items, _chat_template, str),
        ("answer region", items, _prompt("answer_region"), str),
        ("temperature", items, protocol_temperature, lambda t: f"{t:g}"),
        ("grader", items, grader_name, str),
        ("grader settings", items, _grader_settings, lambda s: f"`{_short_hash(s)}`"),
        ("max_tokens", items, sampling("max_tokens"), str),
        ("n (samples per problem)", sampled, sampling("n"), str),
        ("top_p", sampled, sampling("top_p"), lambda x: f"{x:g}"),
    ]  # fmt: skip
    if latency:
        checks.append(("GPUs (latencies are not comparable)", items, _gpus, lambda g: " + ".join(g)))
    out = []
    for what, group, get, show in checks:
        by_value: dict[Any, list[str]] = {}
        for label, p in group:
            value = get(p)
            if value is not None:
                by_value.setdefault(value, []).append(label)
        if len(by_value) > 1:
            if what == "grader settings" and len({grader_name(p) for _, p in group} - {None}) > 1:
                continue  # already reported as different graders
            listed = "; ".join(f"{show(v)} ({', '.join(labels)})" for v, labels in _sorted_items(by_value))
            text = f"runs differ in {what}: {listed}"
            if what == "temperature" and any(protocol_temperature(p) == 0 for _, p in group):
                text += " — T=0 is greedy decoding with one sample per problem"
            out.append(text)
    return out + _prompt_texts(items)


def protocol_warnings(runs: list[Run]) -> list[str]:
    """Differences in how the compared runs were evaluated: backend, prompt (template, format, system prompt, chat
    template and its arguments, answer region, the rendered text of the same problem), temperature, grader, max
    tokens, samples per problem and top_p (the last two among sampled runs: greedy runs take one sample), and the
    problems; for the test-time scaling runs (scaling.json) also the GPUs their latencies were measured on."""
    evaluated = with_results(runs)
    warnings = _differences([(r.label, r.results.get("protocol") or {}) for r in evaluated])
    for b in benchmark_columns(evaluated):
        counts = {r.benchmarks[b]["num_problems"] for r in evaluated if b in r.benchmarks}
        hashes = {
            r.protocol.get("benchmarks", {}).get(b, {}).get("content_sha256") for r in evaluated if b in r.benchmarks
        }
        if len(counts) > 1:
            warnings.append(f"runs evaluated different numbers of {b} problems: {sorted(counts)}")
        elif len(hashes - {None}) > 1:
            warnings.append(f"runs evaluated different {b} problems (content hashes differ)")
    scaled = [(r.label, r.scaling.get("protocol") or {}) for r in runs if r.scaling]
    warnings += [f"Table 5: {w}" for w in _differences(scaled, latency=True)]
    return warnings


def _sorted_items(d: dict[Any, list[str]]) -> list[tuple[Any, list[str]]]:
    try:
        return sorted(d.items())
    except TypeError:
        return list(d.items())
