"""dler.eval.benchmarks: the registry, local JSONL files, hub loading (mocked), the R1 prompt."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "eval"))

from eval_fakes import CharTokenizer  # noqa: E402

from dler.eval import benchmarks as B  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "eval"


def test_registry_holds_the_paper_benchmarks_with_their_sources():
    assert B.DEFAULT_BENCHMARKS == ("math500", "aime24", "amc", "minerva", "olympiad")
    expected = {
        "math500": ("HuggingFaceH4/MATH-500", "test", "problem", "answer", 500),
        "aime24": ("HuggingFaceH4/aime_2024", "train", "problem", "answer", 30),
        "amc": ("AI-MO/aimo-validation-amc", "train", "problem", "answer", 83),
        "minerva": ("math-ai/minervamath", "test", "question", "answer", 272),
        "olympiad": ("math-ai/olympiadbench", "test", "question", "final_answer", 675),
        "aime25": ("math-ai/aime25", "test", "problem", "answer", 30),
        "amc23": ("math-ai/amc23", "test", "question", "answer", 40),
    }
    for name, (hf_id, split, problem, answer, size) in expected.items():
        b = B.BENCHMARKS[name]
        assert (b.hf_id, b.split, b.problem_field, b.answer_field, b.size) == (hf_id, split, problem, answer, size)


def test_unknown_benchmark_lists_the_registry():
    with pytest.raises(B.BenchmarkError) as info:
        B.parse_benchmarks("math500,gsm8k")
    message = str(info.value)
    assert "'gsm8k'" in message
    for name in B.DEFAULT_BENCHMARKS:
        assert name in message


def test_parse_benchmarks_keeps_order_and_drops_duplicates():
    assert [b.name for b in B.parse_benchmarks(" aime24, math500,aime24 ")] == ["aime24", "math500"]
    with pytest.raises(B.BenchmarkError, match="no benchmark"):
        B.parse_benchmarks(" , ")


def test_a_new_benchmark_is_one_registry_entry(tmp_path, monkeypatch):
    monkeypatch.setattr(B, "BENCHMARKS", dict(B.BENCHMARKS))
    B.register_benchmark(B.Benchmark("toy", "someone/toy", split="validation", problem_field="q", answer_field="a"))
    (tmp_path / "toy.jsonl").write_text(json.dumps({"q": "1+1?", "a": "2"}) + "\n")
    loaded = B.load_benchmark(B.get_benchmark("toy"), tmp_path)
    assert [(p.problem, p.answer) for p in loaded.problems] == [("1+1?", "2")]
    with pytest.raises(ValueError, match="already registered"):
        B.register_benchmark(B.Benchmark("toy", "x/y"))
    with pytest.raises(ValueError, match="name"):
        B.register_benchmark(B.Benchmark("a,b", "x/y"))


def test_fixture_files_load_with_the_registry_fields():
    math500 = B.load_benchmark(B.get_benchmark("math500"), FIXTURES)
    assert len(math500.problems) == 3 and math500.problems[1].answer == "\\frac{7}{13}"
    amc = B.load_benchmark(B.get_benchmark("amc"), FIXTURES)
    assert amc.problems[0].answer == 8142.0  # floats stay floats; the grader reads 8142.0 as 8142
    minerva = B.load_benchmark(B.get_benchmark("minerva"), FIXTURES)
    assert minerva.problems[0].problem.startswith("Compute the fixture quantity")
    olympiad = B.load_benchmark(B.get_benchmark("olympiad"), FIXTURES)
    assert olympiad.problems[0].answer == "\\frac{9}{17}"  # a one-element list becomes its answer
    assert olympiad.problems[1].answer == "$(7,9)$, $(9,7)$"  # several answers become a tuple
    src = olympiad.source
    assert src["type"] == "local" and len(src["file_sha256"]) == 64 and len(src["content_sha256"]) == 64
    assert src["num_problems"] == 2
    assert src["dataset_revision"] == "sha256:" + src["file_sha256"]
    aime25 = B.load_benchmark(B.get_benchmark("aime25"), FIXTURES)
    assert [p.answer for p in aime25.problems] == ["70", "588"] and aime25.invalid_golds == []
    amc23 = B.load_benchmark(B.get_benchmark("amc23"), FIXTURES)
    assert amc23.problems[0].problem.startswith("A fixture problem in the AMC 2023 format")
    assert [p.answer for p in amc23.problems] == ["27", 3.0] and amc23.invalid_golds == []


def test_normalised_fields_are_accepted_and_limit_applies(tmp_path):
    rows = [{"problem": f"p{i}", "answer": str(i)} for i in range(5)]
    (tmp_path / "minerva.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    loaded = B.load_benchmark(B.get_benchmark("minerva"), tmp_path, limit=2)
    assert [p.problem for p in loaded.problems] == ["p0", "p1"]
    assert loaded.source["num_rows"] == 5 and loaded.source["num_problems"] == 2


def test_rows_without_the_fields_fail_naming_them(tmp_path):
    (tmp_path / "aime24.jsonl").write_text(json.dumps({"question": "x", "answer": "1"}) + "\n")
    with pytest.raises(B.BenchmarkError, match="neither 'problem' nor 'problem'|has neither"):
        B.load_benchmark(B.get_benchmark("aime24"), tmp_path)
    (tmp_path / "aime24.jsonl").write_text("{not json\n")
    with pytest.raises(B.BenchmarkError, match="aime24.jsonl:1 is not valid JSON"):
        B.load_benchmark(B.get_benchmark("aime24"), tmp_path)


def test_missing_local_file_names_the_path_and_the_expected_name(tmp_path):
    (tmp_path / "math500.jsonl").write_text(json.dumps({"problem": "x", "answer": "1"}) + "\n")
    with pytest.raises(B.BenchmarkError) as info:
        B.check_local_files(B.parse_benchmarks("math500,aime24"), tmp_path)
    message = str(info.value)
    assert str(tmp_path / "aime24.jsonl") in message and "'aime24'" in message and "math500.jsonl" in message
    with pytest.raises(B.BenchmarkError, match="not a directory"):
        B.check_local_files(B.parse_benchmarks("math500"), tmp_path / "nope")


def test_hub_loading_uses_the_registry_id_split_and_revision(monkeypatch):
    import datasets

    calls = []

    class FakeDataset(list):
        _fingerprint = "abc123"

    def fake_load_dataset(path, name=None, split=None, revision=None):
        calls.append((path, name, split, revision))
        return FakeDataset([{"question": "q", "final_answer": ["1"]}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(B, "_resolved_revision", lambda b: "deadbeef" * 5)
    pinned = B.Benchmark("pinned", "math-ai/olympiadbench", split="test", problem_field="question",
                         answer_field="final_answer", revision="v1", answer_fn=B.join_answers)  # fmt: skip
    loaded = B.load_benchmark(pinned)
    assert calls == [("math-ai/olympiadbench", None, "test", "v1")]
    assert loaded.problems[0].answer == "1"
    assert loaded.source["revision"] == "v1" and loaded.source["resolved_revision"] == "deadbeef" * 5
    assert loaded.source["fingerprint"] == "abc123" and loaded.source["type"] == "hub"
    assert loaded.source["dataset_revision"] == "deadbeef" * 5  # the hub's commit for the revision asked


def test_dataset_revision_comes_from_the_datasets_cache_when_offline(monkeypatch):
    """Offline the hub cannot be asked; the commit is the folder `datasets` cached the rows under."""
    import datasets

    sha = "0123456789abcdef0123456789abcdef01234567"

    class CachedDataset(list):
        _fingerprint = "f"
        cache_files = [{"filename": f"/cache/datasets/math-ai___amc23/default/0.0.0/{sha}/amc23-test.arrow"}]

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: CachedDataset([{"question": "q", "answer": "1"}]))
    monkeypatch.setattr(B, "_resolved_revision", lambda b: None)
    loaded = B.load_benchmark(B.get_benchmark("amc23"))
    assert loaded.source["cached_revision"] == sha and loaded.source["dataset_revision"] == sha
    monkeypatch.setattr(CachedDataset, "cache_files", [{"filename": "/cache/x/0.0.0/abc/x.arrow"}])
    assert B.load_benchmark(B.get_benchmark("amc23")).source["dataset_revision"] is None


def test_r1_prompt_in_the_chat_template():
    tok = CharTokenizer()
    prompt = B.build_prompt(tok, "What is $1+1$?")
    assert (
        prompt
        == "<user>What is $1+1$? Let's think step by step and output the final answer within \\boxed{}.<assistant>"
    )
    assert B.prompt_ids(tok, "ab") == [97, 98]
    assert B.build_prompt(tok, "x {y}", "Q: {problem}") == "<user>Q: x {y}<assistant>"


def test_r1_prompt_with_the_tiny_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompt = B.build_prompt(tok, "2 + 3")
    assert prompt.startswith("<|im_start|>user\n2 + 3 Let's think step by step")
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = B.prompt_ids(tok, prompt)
    assert tok.decode(ids) == prompt


def test_hub_failure_names_the_benchmark_and_the_local_alternative(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        B.BenchmarkError, match="cannot load benchmark 'amc' from the hub .* --data-dir with amc.jsonl"
    ):
        B.load_benchmark(B.get_benchmark("amc"))


# --------------------------------------------------------------------------------------------- gold self-check

# Golds in each benchmark's own format (field, values): every one must grade correct against itself.
REALISTIC_GOLDS = {
    "minerva": ("answer", ["4.5e33", "1.3 \\times 10^{-5}", "\\frac{1}{2}", "9.6 \\mathrm{~km}", "3e8", "7.77e6",
                           "0.00913", "1.2e-5", "300 K", "6.626 \\times 10^{-34} \\mathrm{~J} \\cdot \\mathrm{s}"]),
    "olympiad": ("final_answer", [["$\\frac{\\sqrt{3}}{2}$"], ["$(1,2)$"], ["$x=3$"], ["$(7,9)$", "$(9,7)$"],
                                  ["$2^{2023}$"], ["$[-1, 3)$"]]),
    "amc": ("answer", [142.0, 8142.0, 0.5, 3.0]),
    "math500": ("answer", ["\\left( 3, \\frac{\\pi}{2} \\right)", "\\text{(C)}", "10\\%", "\\frac{14}{3}", "p - q",
                           "\\{1, 2\\}", "[-2, 7)", "\\text{Evelyn}", "x^2 + 7x + 10", "\\$18.90", "90^\\circ"]),
    "aime24": ("answer", ["204", "033", "25"]),
    "aime25": ("answer", ["70", "588", "16", "117"]),
    "amc23": ("answer", ["27", "3", "0.5", 36.0]),
}  # fmt: skip


def write_golds(directory, name, field, values):
    problem = B.BENCHMARKS[name].problem_field
    rows = [{problem: f"problem {i}", field: v} for i, v in enumerate(values)]
    (directory / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.mark.parametrize("grader", ["dler", "released"])
@pytest.mark.parametrize("name", sorted(REALISTIC_GOLDS))
def test_every_gold_of_each_benchmark_style_grades_correct_against_itself(tmp_path, caplog, name, grader):
    field, values = REALISTIC_GOLDS[name]
    write_golds(tmp_path, name, field, values)
    caplog.set_level("WARNING", logger="dler.eval.benchmarks")
    loaded = B.load_benchmark(B.get_benchmark(name), tmp_path, grader=grader)
    assert loaded.invalid_golds == []
    assert loaded.source["gold_check"] == {"grader": grader, "checked": len(values), "invalid": 0, "rows": []}
    assert "cannot be graded" not in caplog.text


def test_bad_golds_are_reported_in_one_warning_by_benchmark_row_and_value(tmp_path, caplog):
    write_golds(tmp_path, "minerva", "answer", ["4.5e33", "\\sqrt{", "2.5", "", "x^{"])
    caplog.set_level("WARNING", logger="dler.eval.benchmarks")
    loaded = B.load_benchmark(B.get_benchmark("minerva"), tmp_path)
    assert [(i, v) for i, v, _ in loaded.invalid_golds] == [(1, "\\sqrt{"), (3, ""), (4, "x^{")]
    check = loaded.source["gold_check"]
    assert check["grader"] == "dler" and check["checked"] == 5 and check["invalid"] == 3
    assert [row[:2] for row in check["rows"]] == [[1, "\\sqrt{"], [3, ""], [4, "x^{"]]
    records = [r for r in caplog.records if "cannot be graded" in r.getMessage()]
    assert len(records) == 1
    message = records[0].getMessage()
    assert message.startswith("minerva: 3 of 5 gold answers cannot be graded by the 'dler' grader")
    assert "row 1: '\\\\sqrt{'" in message and "row 3: ''" in message and "row 4: 'x^{'" in message
    assert "row 0" not in message and "row 2" not in message


def test_a_gold_that_does_not_match_itself_is_reported(tmp_path, monkeypatch, caplog):
    from dler.rewards import grading

    real = grading.grade

    def never_seven(gold, pred, timeout=5):  # a gold that parses but that the grader never accepts
        return (0.0, "wrong", "") if gold == "\\frac{7}{2}" else real(gold, pred, timeout)

    monkeypatch.setattr(grading, "grade", never_seven)
    write_golds(tmp_path, "aime24", "answer", ["7", "\\frac{7}{2}"])
    caplog.set_level("WARNING", logger="dler.eval.benchmarks")
    loaded = B.load_benchmark(B.get_benchmark("aime24"), tmp_path)
    assert loaded.invalid_golds == [(1, "\\frac{7}{2}", "does not match itself (wrong)")]
    assert "aime24: 1 of 2 gold answers" in caplog.text


def test_gold_check_can_be_skipped_or_use_a_given_reward(tmp_path):
    from dler.rewards import MathReward

    write_golds(tmp_path, "aime24", "answer", ["1", "\\sqrt{"])
    assert "gold_check" not in B.load_benchmark(B.get_benchmark("aime24"), tmp_path, grader=None).source
    with MathReward(num_workers=0, grader="released") as reward:
        loaded = B.load_benchmark(B.get_benchmark("aime24"), tmp_path, grader=reward)
        assert loaded.source["gold_check"]["grader"] == "released"
        assert loaded.invalid_golds == []  # the released grader's string check accepts "\sqrt{" against itself
    with pytest.raises(ValueError, match="grader must be one of"):
        B.load_benchmark(B.get_benchmark("aime24"), tmp_path, grader="verl")
