"""The `dler` command: argument validation before any model is loaded, `python -m dler`, eval + report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dler import cli

FIXTURES = Path(__file__).parent / "fixtures" / "eval"
NO_MODEL = "/nonexistent/model"  # validation must fail before anything tries to load it


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    return info.value.code, capsys.readouterr().err


@pytest.fixture(autouse=True)
def no_model_loading(request, monkeypatch):
    """Any attempt to build a backend in the validation tests is a failure (tests on the tiny model excepted)."""
    import dler.eval.generate as G
    import dler.eval.vllm_backend as V

    if "tiny_model_dir" in request.fixturenames:
        return

    def boom(*args, **kwargs):
        raise AssertionError("a model was loaded before the arguments were validated")

    monkeypatch.setattr(G.TransformersBackend, "__init__", boom)
    monkeypatch.setattr(V.VLLMBackend, "__init__", boom)


def test_unknown_benchmark_lists_the_registry(capsys, tmp_path):
    code, err = run_cli(
        ["eval", "--model", NO_MODEL, "--output-dir", str(tmp_path), "--benchmarks", "math500,gsm8k"], capsys
    )
    assert code == 2
    assert "unknown benchmark 'gsm8k'" in err
    assert "math500, aime24, amc, minerva, olympiad" in err


def test_missing_data_file_names_the_path_and_the_expected_name(capsys, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "math500.jsonl").write_text(json.dumps({"problem": "x", "answer": "1"}) + "\n")
    code, err = run_cli(["eval", "--model", NO_MODEL, "--output-dir", str(tmp_path / "out"), "--benchmarks",
                         "math500,amc", "--data-dir", str(tmp_path / "data")], capsys)  # fmt: skip
    assert code == 2
    assert str(tmp_path / "data" / "amc.jsonl") in err and "benchmark 'amc'" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n", "0"], "n (samples per problem) must be >= 1"),
        (["--temperature", "-1"], "temperature must be >= 0"),
        (["--temperature", "0,abc"], "temperatures are numbers separated by commas"),
        (["--temperature", "0.6,0.6"], "duplicate temperatures"),
        (["--top-p", "0"], "top_p must be in (0, 1]"),
        (["--max-tokens", "0"], "max_tokens must be >= 1"),
        (["--limit", "0"], "--limit must be >= 1"),
        (["--backend", "sglang"], "invalid choice: 'sglang'"),
        (["--prompt-template", "no placeholder"], "must contain {problem}"),
        (["--prompt-format", "r2"], "unknown --prompt-format 'r2'; did you mean 'r1'?"),
        (["--chat-template-kwargs", "{x"], "--chat-template-kwargs is not valid JSON"),
        (["--no-chat-template", "--system-prompt", "Be brief."], "a system prompt needs the chat template"),
        (["--answer-region", "last"], "argument --answer-region: invalid choice: 'last'"),
        (["--tensor-parallel-size", "2", "--backend", "transformers"], "need --backend vllm"),
        (["--data-parallel-size", "0"], "tensor_parallel_size and data_parallel_size must be >= 1"),
        (["--gpu-memory-utilization", "1.5"], "gpu_memory_utilization must be in (0, 1], got 1.5"),
        (["--grader", "verl"], "argument --grader: invalid choice: 'verl'"),
    ],
)
def test_invalid_values_are_rejected_before_loading(capsys, tmp_path, extra, message):
    code, err = run_cli(["eval", "--model", NO_MODEL, "--output-dir", str(tmp_path), "--data-dir", str(FIXTURES),
                         *extra], capsys)  # fmt: skip
    assert code == 2 and message in err


def test_vllm_backend_without_vllm_is_a_clear_error(capsys, tmp_path, monkeypatch):
    import dler.eval.generate as G

    monkeypatch.setattr(G, "vllm_available", lambda: False)
    code, err = run_cli(["eval", "--model", NO_MODEL, "--output-dir", str(tmp_path), "--backend", "vllm",
                         "--data-dir", str(FIXTURES)], capsys)  # fmt: skip
    assert code == 2 and "vLLM is not installed" in err and "--backend transformers" in err


def fake_model_dir(tmp_path, config=None):
    """A folder that passes the model check (config.json only: nothing can load it)."""
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text(json.dumps(config or {"model_type": "qwen2"}))
    return str(model)


def test_grader_option_reaches_the_config(tmp_path, monkeypatch):
    import dler.eval.run as R

    seen = []
    monkeypatch.setattr(R, "evaluate", lambda config: seen.append(config) or {})
    base = ["eval", "--model", fake_model_dir(tmp_path), "--output-dir", str(tmp_path / "out"), "--data-dir",
            str(FIXTURES)]  # fmt: skip
    assert cli.main(base) == 0 and cli.main([*base, "--grader", "released"]) == 0
    assert [c.grader for c in seen] == ["dler", "released"]


def test_model_and_output_dir_are_required(capsys):
    code, err = run_cli(["eval", "--benchmarks", "math500"], capsys)
    assert code == 2 and "--model, --output-dir" in err


def test_list_benchmarks(capsys):
    assert cli.main(["eval", "--list-benchmarks"]) == 0
    out = capsys.readouterr().out
    assert "HuggingFaceH4/MATH-500" in out and "question -> final_answer" in out


def test_report_of_a_missing_run(capsys, tmp_path):
    code, err = run_cli(["report", str(tmp_path / "nope")], capsys)
    assert code == 2 and "holds no results.json" in err


def test_python_dash_m_dler():
    out = subprocess.run([sys.executable, "-m", "dler", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "{eval,report,solve-rate,merge," in out.stdout  # later commands follow


@pytest.mark.slow
def test_eval_sweep_then_report_from_the_command_line(tmp_path, tiny_model_dir, capsys):
    """The one-command temperature sweep on the tiny model, resumed as a no-op, then the report."""
    run = tmp_path / "run"
    args = ["eval", "--model", tiny_model_dir, "--data-dir", str(FIXTURES), "--benchmarks", "math500,amc",
            "--n", "4", "--max-tokens", "8", "--temperature", "0,0.6", "--backend", "transformers",
            "--output-dir", str(run), "--grader-workers", "0", "--no-progress"]  # fmt: skip
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "T=0 n=1" in out and "T=0.6 n=4" in out
    for t in ("t0", "t0.6"):
        results = json.loads((run / t / "results.json").read_text())
        assert set(results["benchmarks"]) == {"math500", "amc"}
        assert (run / t / "generations" / "amc.jsonl").read_text().count("\n") == 2
    assert cli.main(args) == 0  # resume: everything is done
    assert cli.main(["report", str(run), "--output", str(tmp_path / "report")]) == 0
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| run/t0 |" in text and "## Temperature sweep" in text
    assert (tmp_path / "report" / "pass_at_k.png").stat().st_size > 0


def test_an_unknown_flag_is_one_line_naming_the_close_flag(capsys, tmp_path):
    code, err = run_cli(["eval", "--model", NO_MODEL, "--output-dir", str(tmp_path), "--temprature", "0.6"], capsys)
    assert code == 2
    assert err == (
        "dler eval: error: unrecognized arguments: --temprature 0.6 (did you mean --temprature -> --temperature?) "
        "(`dler eval --help` lists the settings)\n"
    )


def test_a_mistyped_model_is_refused_before_anything_is_written(capsys, tmp_path):
    out = tmp_path / "out"
    code, err = run_cli(["eval", "--model", str(tmp_path / "no-such-model"), "--output-dir", str(out),
                         "--data-dir", str(FIXTURES)], capsys)  # fmt: skip
    assert code == 2 and "no such file or folder" in err
    assert not out.exists()  # the corrected command is not refused as "different settings"


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--parallel-k", "1,x"], "K values are integers"),
        (["--parallel-k", "0,2"], "K values must be >= 1"),
        (["--parallel-k", "1,2,2"], "duplicate values in --parallel-k"),
        (["--parallel-k", "1,2", "--temperature", "0"], "one temperature > 0"),
        (["--parallel-k", "1,2", "--temperature", "0.6,1.0"], "one temperature > 0"),
    ],
)
def test_parallel_k_values_are_checked(capsys, tmp_path, extra, message):
    code, err = run_cli(["eval", "--model", fake_model_dir(tmp_path), "--output-dir", str(tmp_path / "out"),
                         "--data-dir", str(FIXTURES), *extra], capsys)  # fmt: skip
    assert code == 2 and message in err


def test_options_reach_the_config(tmp_path, monkeypatch):
    import dler.eval.scaling as S

    seen = []
    monkeypatch.setattr(S, "evaluate_scaling", lambda config: seen.append(config) or {})
    monkeypatch.setattr(S, "format_scaling_summary", lambda results: "")
    args = ["eval", "--model", fake_model_dir(tmp_path), "--output-dir", str(tmp_path / "out"), "--data-dir",
            str(FIXTURES), "--parallel-k", "4,1,2", "--seed-per-request", "--reproducible"]  # fmt: skip
    assert cli.main(args) == 0
    (config,) = seen
    assert config.parallel_k == [1, 2, 4] and config.seed_per_request and config.reproducible


@pytest.mark.slow
def test_ctrl_c_prints_how_to_resume_and_exits_130(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """Ctrl-C in the middle of generation: one line saying how to resume (no traceback), exit status 130, and
    the same command then finishes the problems left."""
    import dler.eval.generate as G

    real = G.TransformersBackend.generate
    calls = []

    def generate_then_ctrl_c(self, requests, settings):
        calls.append(len(requests))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, requests, settings)

    monkeypatch.setattr(G.TransformersBackend, "generate", generate_then_ctrl_c)
    args = ["eval", "--model", tiny_model_dir, "--data-dir", str(FIXTURES), "--benchmarks", "math500", "--n", "2",
            "--max-tokens", "4", "--backend", "transformers", "--chunk-size", "1", "--output-dir", str(tmp_path),
            "--grader-workers", "0", "--no-progress"]  # fmt: skip
    assert cli.main(args) == 130
    err = capsys.readouterr().err
    assert "interrupted; rerun the same command to resume (1 of 3 problems done)" in err
    assert "Traceback" not in err
    assert cli.main(args) == 0
    lines = (tmp_path / "generations" / "math500.jsonl").read_text().splitlines()
    assert sorted(json.loads(x)["index"] for x in lines) == [0, 1, 2]
    assert len(calls) == 4  # 1 before the interruption, the interrupted one, then problems 1 and 2
