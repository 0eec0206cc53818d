"""A new user's first mistakes, through the commands they type (issue 24): no network, a mistyped model, `dler eval`'s
one-line errors, its resume line and an empty benchmark file. Each: one line naming the fix, exit 2, nothing written."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "eval"
TINY = str(ROOT / "recipes" / "dler_tiny.py")


def closed_port() -> int:
    """A local port nothing listens on: a hub there refuses every connection, as with no network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_network_env(**extra) -> dict:
    """The environment of a machine without network on which HF_HUB_OFFLINE was not set (only `make` sets it)."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    return {**env, "HF_ENDPOINT": f"http://127.0.0.1:{closed_port()}", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT),
            **extra}  # fmt: skip


def dler(*args, env=None, cwd=None) -> tuple[subprocess.CompletedProcess, float]:
    """`python -m dler ...` as a user runs it; returns the process and how long it took."""
    start = time.monotonic()
    env = env or {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "dler", *map(str, args)], env=env, cwd=cwd or ROOT,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    return proc, time.monotonic() - start


def error_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not log lines (`INFO ...`, `WARNING ...`)."""
    return [line for line in stderr.splitlines() if line and not line.startswith(("INFO ", "WARNING ", "DEBUG "))]


def fake_model(folder: Path) -> Path:
    """A folder that passes the model check (config.json), for errors that must come before any model loads."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


# ---------------------------------------------------------------- the hub probe
def test_the_hub_probe_answers_in_seconds_and_once_per_process(monkeypatch):
    import dler.eval.model_id as M

    monkeypatch.setattr(M, "_PROBED", {})
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    start = time.monotonic()
    assert M.hub_reachable() is False
    assert time.monotonic() - start < M.PROBE_TIMEOUT_S + 1
    with socket.socket() as server:  # a hub that listens is reachable
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert M.hub_reachable() is True
    calls = []
    monkeypatch.setattr(M, "_connects", lambda address, timeout: calls.append(address) or False)
    assert M.hub_reachable() is True and calls == []  # the answer is kept for the process
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")
    assert M.hub_reachable() is False and M.hub_reachable() is False and len(calls) == 1


def test_a_proxy_is_probed_instead_of_the_hub(monkeypatch):
    import dler.eval.model_id as M

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert M._probe_address("https://huggingface.co") == ("proxy.example", 3128)
    monkeypatch.delenv("HTTPS_PROXY")
    monkeypatch.delenv("https_proxy", raising=False)
    assert M._probe_address("https://huggingface.co") == ("huggingface.co", 443)
    assert M._probe_address("http://127.0.0.1:5000") == ("127.0.0.1", 5000)


def test_without_the_probe_a_hub_id_would_be_asked_of_the_hub(monkeypatch):
    """The mechanism: an unreachable hub is found by the probe, not by the hub client's retries."""
    import huggingface_hub

    import dler.eval.model_id as M

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(M, "_HUB_MODELS_SEEN", set())
    asked = []
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo, **kw: asked.append(repo))
    monkeypatch.setattr(M, "hub_reachable", lambda: False)
    assert "cannot be reached" in M.model_problem("owner/model", "--model")
    assert asked == []
    monkeypatch.setattr(M, "hub_reachable", lambda: True)
    assert M.model_problem("owner/model", "--model") is None and asked == ["owner/model"]


# ---------------------------------------------------------------- no network: eval, merge, recipes
def test_eval_without_network_fails_in_seconds_naming_the_id_and_the_offline_switch(tmp_path):
    out = tmp_path / "out"
    proc, took = dler("eval", "--model", "nvidia/not-a-model", "--output-dir", out, env=no_network_env())
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc.stderr)
    assert line.startswith("dler eval: error: --model nvidia/not-a-model: no such local folder, and the hub")
    assert "cannot be reached" in line and "HF_HUB_OFFLINE=1" in line and "local model folder" in line
    assert took < 20 and not out.exists()


def test_eval_without_network_says_when_the_model_is_in_the_cache(tmp_path):
    cache = tmp_path / "hub"
    snapshot = cache / "models--owner--cached" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (cache / "models--owner--cached" / "refs").mkdir()
    (cache / "models--owner--cached" / "refs" / "main").write_text("0" * 40)
    proc, _ = dler("eval", "--model", "owner/cached", "--output-dir", tmp_path / "out",
                   env=no_network_env(HF_HUB_CACHE=str(cache)))  # fmt: skip
    assert proc.returncode == 2
    assert "the model is in the Hugging Face cache: rerun with HF_HUB_OFFLINE=1" in error_lines(proc.stderr)[0]


def test_merge_without_network_fails_in_seconds_naming_the_id(tmp_path):
    out = tmp_path / "merged"
    proc, took = dler("merge", "--base", "nvidia/not-a-model", "--tuned", tmp_path, "--output", out,
                      env=no_network_env())  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc.stderr)
    assert line.startswith("dler merge: error: --base nvidia/not-a-model: no such local folder, and the hub (http")
    assert line.endswith(
        "cannot be reached (no network?): set HF_HUB_OFFLINE=1 with the model already in the Hugging Face cache, "
        "or give a local model folder"
    )
    assert took < 20 and not out.exists()


def test_merge_offline_names_a_mistyped_folder(tmp_path):
    fake_model(tmp_path / "runs" / "tuned")
    proc, _ = dler("merge", "--base", tmp_path / "runs" / "tund", "--tuned", tmp_path / "runs" / "tuned",
                   "--output", tmp_path / "m")  # fmt: skip
    assert proc.returncode == 2
    assert error_lines(proc.stderr) == [
        f"dler merge: error: --base {tmp_path}/runs/tund: no such file or folder (and not a hub id such as "
        f"owner/name); did you mean {tmp_path}/runs/tuned?"
    ]


def recipe(tmp_path, *args, env=None):
    """`python recipes/dler_tiny.py ...` with its output in tmp_path; returns the process and how long it took."""
    start = time.monotonic()
    env = env or {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, TINY, "--output_dir", str(tmp_path / "out"), *map(str, args)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)  # fmt: skip
    return proc, time.monotonic() - start


@pytest.mark.slow
def test_a_recipe_without_network_fails_before_the_data_loads(tmp_path):
    """The model is checked first: the missing data file is not what is reported, and no output_dir is left."""
    proc, took = recipe(tmp_path, "--model_name_or_path", "nvidia/not-a-model", "--dataset_name",
                        tmp_path / "missing.jsonl", env=no_network_env())  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error: --model_name_or_path nvidia/not-a-model: no such local folder, and the hub" in proc.stderr
    assert "HF_HUB_OFFLINE=1" in proc.stderr and "missing.jsonl" not in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()
    assert took < 60


@pytest.mark.slow
def test_a_mistyped_model_in_a_recipe_says_did_you_mean_before_anything_loads(tmp_path):
    fake_model(tmp_path / "models" / "tiny-model")
    proc, _ = recipe(tmp_path, "--model_name_or_path", tmp_path / "models" / "tiny-modl", "--dataset_name",
                     tmp_path / "missing.jsonl")  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert (
        f"error: --model_name_or_path {tmp_path}/models/tiny-modl: no such file or folder (and not a hub id such as "
        f"owner/name); did you mean {tmp_path}/models/tiny-model?" in proc.stderr
    )
    assert "Repo id must be in the form" not in proc.stderr and not (tmp_path / "out").exists()
    assert "Traceback" not in proc.stderr


def test_the_recipe_check_names_a_hub_id_typo_from_the_cache(tmp_path, monkeypatch):
    """Offline, a hub id one letter off a cached model is named (the check `dler.training.train` runs first: the
    same as `dler eval --model`'s, with adapter folders accepted)."""
    from dler.eval.model_id import model_problem

    (tmp_path / "models--Qwen--Qwen2.5-0.5B-Instruct").mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    flag = "--model_name_or_path"
    assert model_problem("Qwen/Qwen2.5-0.5B-Instruc", flag, adapters=True) == (
        "--model_name_or_path Qwen/Qwen2.5-0.5B-Instruc: no such local folder, and HF_HUB_OFFLINE=1 while the hub "
        "model Qwen/Qwen2.5-0.5B-Instruc is not in the Hugging Face cache; did you mean Qwen/Qwen2.5-0.5B-Instruct "
        "(in the cache)?"
    )
    assert model_problem("", flag, adapters=True) == "--model_name_or_path is empty"
    (tmp_path / "adapter").mkdir()
    assert "no config.json or adapter_config.json" in model_problem(str(tmp_path / "adapter"), flag, adapters=True)
    (tmp_path / "adapter" / "adapter_config.json").write_text("{}")
    assert model_problem(str(tmp_path / "adapter"), flag, adapters=True) is None  # a PEFT adapter trains too
    assert "has no config.json" in model_problem(str(tmp_path / "adapter"), "--model")  # dler eval needs a model


# ---------------------------------------------------------------- dler eval's own errors
def test_eval_errors_are_one_line_without_the_usage_block(tmp_path):
    model = fake_model(tmp_path / "model")
    for args, message in [
        (["--n", "0"], "dler eval: error: n (samples per problem) must be >= 1, got 0"),
        (["--backend", "gpu"], "dler eval: error: argument --backend: invalid choice: 'gpu'"),
        (["--benchmarks", "gsm8k"], "dler eval: error: unknown benchmark 'gsm8k'"),
    ]:
        proc, _ = dler("eval", "--model", model, "--output-dir", tmp_path / "out", *args)
        assert proc.returncode == 2, proc.stderr
        lines = error_lines(proc.stderr)
        assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
        assert "usage:" not in proc.stderr
    assert not (tmp_path / "out").exists()


def test_an_empty_benchmark_file_is_named_and_nothing_is_written(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "math500.jsonl").write_text("")
    out = tmp_path / "out"
    proc, _ = dler("eval", "--model", fake_model(tmp_path / "model"), "--output-dir", out, "--data-dir", data,
                   "--benchmarks", "math500")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert error_lines(proc.stderr) == [
        f"dler eval: error: {data / 'math500.jsonl'} holds no problems: give one JSON object per line with "
        "'problem' and 'answer'"
    ]
    assert not out.exists()  # no protocol.json


def test_a_rerun_says_how_many_problems_it_resumes_from(tmp_path, tiny_model_dir, caplog, capsys):
    """`dler eval` (its entry point, in this process: three model loads in subprocesses would take a minute)."""
    from dler import cli

    out = tmp_path / "run"
    base = ["eval", "--model", tiny_model_dir, "--data-dir", str(FIXTURES), "--benchmarks", "math500", "--n", "1",
            "--temperature", "0", "--max-tokens", "4", "--backend", "transformers", "--output-dir", str(out),
            "--grader-workers", "0", "--no-progress"]  # fmt: skip
    caplog.set_level("INFO", logger="dler.eval.session")
    assert cli.main([*base, "--limit", "1"]) == 0
    assert "resuming" not in caplog.text  # a new run
    assert cli.main([*base, "--limit", "3"]) == 0
    assert f"resuming: 1 of 3 problems done in {out}\n" in caplog.text
    assert (out / "generations" / "math500.jsonl").read_text().count("\n") == 3
    caplog.clear()
    assert cli.main([*base, "--limit", "3"]) == 0
    assert f"resuming: 3 of 3 problems done in {out}; recomputing the results only" in caplog.text
    assert json.loads((out / "results.json").read_text())["benchmarks"]["math500"]


def test_eval_without_network_names_the_benchmark_and_data_dir_in_seconds(tmp_path):
    """A local model, the benchmarks from the hub: the probe's answer, not 30 s of retries and their warnings."""
    out = tmp_path / "out"
    proc, took = dler("eval", "--model", fake_model(tmp_path / "model"), "--output-dir", out, "--benchmarks", "aime24",
                      env=no_network_env())  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    [line] = error_lines(proc.stderr)
    assert line.startswith("dler eval: error: cannot load benchmark 'aime24' from the hub: the hub (http")
    assert line.endswith(
        "cannot be reached (no network?). Pass --data-dir with aime24.jsonl, or set HF_HUB_OFFLINE=1 with "
        "HuggingFaceH4/aime_2024 in the datasets cache"
    )
    assert "Retrying" not in proc.stderr and took < 20 and not out.exists()
