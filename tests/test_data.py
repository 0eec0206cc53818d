"""Training data checks: columns, unparseable gold answers and repeated problems are reported, then skipped or refused;
a data file that cannot be read raises one `DataError` naming the file and the fix."""

import json
import logging

import pytest
from datasets import Dataset

import dler.data
from dler.data import (
    DataError,
    check_usable_rows,
    drop_duplicates,
    load_rows,
    math_prompts,
)

ROWS = [
    {"problem": "1 + 1", "answer": "2"},
    {"problem": "2 + 2", "answer": "\\frac{"},  # cannot be parsed
    {"problem": "1 + 1 ", "answer": "2"},  # repeats row 0 (whitespace aside)
    {"problem": "3 + 3", "answer": ""},  # empty
    {"problem": "4 + 4", "answer": "8"},
]


def test_bad_rows_are_counted_and_skipped(caplog):
    with caplog.at_level(logging.WARNING):
        data = math_prompts(Dataset.from_list(ROWS), reward=_in_process_reward())[0]
    assert data["problem"] == ["1 + 1", "4 + 4"]
    assert data["prompt"][0][0]["content"].startswith("1 + 1 Let's think step by step")
    log = caplog.text
    assert "1 of 5 rows repeat an earlier 'problem' (row 2 repeats row 0)" in log
    assert "2 of 4 gold answers in column 'answer' cannot be parsed" in log


def test_skipped_rows_are_counted_by_reason(caplog):
    with caplog.at_level(logging.WARNING):
        data, skipped = math_prompts(Dataset.from_list(ROWS), reward=_in_process_reward(), source="d.jsonl")
    assert len(data) == 2
    assert skipped == {"invalid_answers": 2, "duplicate_problems": 1}
    assert "dataset d.jsonl: 1 of 5 rows repeat" in caplog.text


def test_float_golds_as_amc_writes_them():
    data = math_prompts(Dataset.from_list([{"problem": "p", "answer": 142.0}]), reward=_in_process_reward())[0]
    assert len(data) == 1


def test_bad_rows_can_stop_the_run():
    with pytest.raises(DataError, match="row 2 repeats row 0.*duplicate_problems='skip'.*--duplicate_problems skip"):
        drop_duplicates(Dataset.from_list(ROWS), "problem", on_duplicate="error")
    with pytest.raises(DataError, match="cannot be parsed") as caught:
        math_prompts(Dataset.from_list(ROWS[:2]), on_invalid="error", reward=_in_process_reward(), source="d.jsonl")
    message = str(caught.value)
    assert message.startswith("dataset d.jsonl: 1 of 2 gold answers in column 'answer' cannot be parsed")
    assert "--invalid_answers skip" in message and "prepare_gold_answers" not in message


def test_missing_columns_name_the_file_and_what_is_there():
    data = Dataset.from_list([{"question": "x", "solution": "y"}])
    with pytest.raises(
        DataError, match=r"^dataset d\.jsonl has no column 'answer' \(columns: 'question', 'solution'\)"
    ):
        math_prompts(data, problem_column="question", source="d.jsonl")
    with pytest.raises(DataError, match="has no columns 'problem' and 'answer'.*--problem_column / --answer_column"):
        math_prompts(data)
    with pytest.raises(DataError, match="invalid_answers.*'skip' or 'error'"):
        math_prompts(data, on_invalid="drop")


# ----------------------------------------------------------------------------------------------- data files


def _write(path, content):
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return str(path)


def _jsonl(*rows):
    return "".join(json.dumps(row) + "\n" for row in rows)


def test_a_good_file_loads(tmp_path):
    rows = load_rows(_write(tmp_path / "ok.jsonl", "\ufeff" + _jsonl(*ROWS[:2])))  # a byte-order mark is fine
    assert rows["problem"] == ["1 + 1", "2 + 2"]


def test_missing_file_directory_and_extension(tmp_path):
    with pytest.raises(DataError, match=r"dataset file .*nope\.jsonl does not exist; check the path"):
        load_rows(str(tmp_path / "nope.jsonl"))
    (tmp_path / "dir.jsonl").mkdir()
    with pytest.raises(DataError, match=r"dir\.jsonl is a directory, not a file; pass the path of one data file"):
        load_rows(str(tmp_path / "dir.jsonl"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(DataError, match=r"folder is a directory with no data files \(\.csv, \.json, \.jsonl, \.parq"):
        load_rows(str(tmp_path / "folder"))
    with pytest.raises(DataError, match=r"data\.txt has extension '\.txt'; supported extensions: \.csv, \.json, \."):
        load_rows(_write(tmp_path / "data.txt", _jsonl(*ROWS)))


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("empty.jsonl", "", "is empty; it needs one problem per row"),
        ("blank.jsonl", "\n  \n", "is empty; it needs one problem per row"),
        ("empty.parquet", "", "is empty; it needs one problem per row"),
        ("none.json", "[]", "empty array: no rows. Add problems"),
        ("header.csv", "problem,answer\n", "has no rows; add problems"),
    ],
)
def test_empty_files(tmp_path, name, content, expected):
    with pytest.raises(DataError, match=f"dataset file .*{name}.*{expected}"):
        load_rows(_write(tmp_path / name, content))


@pytest.mark.parametrize("name", ["latin.jsonl", "latin.csv"])
def test_a_file_that_is_not_utf8_says_where(tmp_path, name):
    first = '{"problem": "a", "answer": "1"}\n' if name.endswith("jsonl") else "problem,answer\n"
    second = b'{"problem": "caf\xe9", "answer": "2"}\n' if name.endswith("jsonl") else b"caf\xe9,2\n"
    path = _write(tmp_path / name, first.encode() + second)
    offset = len(first) + second.index(b"\xe9")
    with pytest.raises(DataError, match=f"{name} is not UTF-8: byte {offset} \\(line 2\\) is 0xe9. Save it as UTF-8"):
        load_rows(path)


def test_utf8_scan_across_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(dler.data, "_CHUNK", 3)
    for content in [b"ab\nc\xc3\xa9\n\xff", "x\né\n".encode() + b"\xe2\x82", b"a\xc3\nb", "\n\nâ€".encode()]:
        path = tmp_path / "f.jsonl"
        path.write_bytes(content)
        try:
            content.decode("utf-8")
            expected = None
        except UnicodeDecodeError as e:
            expected = (e.start, content[: e.start].count(b"\n") + 1, content[e.start])
        assert dler.data._first_non_utf8(path) == expected, content


def test_a_broken_json_line_is_named(tmp_path):
    content = _jsonl(ROWS[0]) + '{"problem": "b", "answer": 2\n' + _jsonl(ROWS[4])
    with pytest.raises(DataError, match=r"broken\.jsonl: line 2 is not valid JSON \(.* at column \d+\): '\{\"probl"):
        load_rows(_write(tmp_path / "broken.jsonl", content))
    with pytest.raises(DataError, match=r"array\.json: invalid JSON at line 2, column 17 \(Expecting ','"):
        load_rows(
            _write(tmp_path / "array.json", '[{"problem": "a", "answer": "1"},\n{"problem": "b" "answer": "2"}]')
        )


def test_an_unreadable_parquet_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"could not read dataset file .*bad\.parquet as Parquet: ArrowInvalid"):
        load_rows(_write(tmp_path / "bad.parquet", "not parquet"))


def test_an_unreachable_hub_id_is_named():
    with pytest.raises(DataError, match="could not load dataset no-such-org/no-such-data \\(split 'train'\\)"):
        load_rows("no-such-org/no-such-data")


def test_too_few_usable_rows():
    check_usable_rows(4, 4, "d.jsonl", {"invalid_answers": 10, "duplicate_problems": 2})
    with pytest.raises(DataError) as caught:
        check_usable_rows(3, 4, "d.jsonl", {"invalid_answers": 10, "duplicate_problems": 2})
    assert str(caught.value) == (
        "d.jsonl: 3 usable problems after skipping 10 with unparseable gold answers and 2 repeated problems, fewer "
        "than one generation batch (prompts_per_generation=4). Add problems, fix the skipped rows (--invalid_answers "
        "error lists them; --duplicate_problems error lists them), or lower --prompts_per_generation and "
        "--prompts_per_update."
    )
    with pytest.raises(DataError) as caught:
        check_usable_rows(1, 512, "d.jsonl", {"invalid_answers": 0, "duplicate_problems": 0})
    assert str(caught.value) == (
        "d.jsonl: 1 usable problem, fewer than one generation batch (prompts_per_generation=512). Add problems, or "
        "lower --prompts_per_generation and --prompts_per_update."
    )


def _in_process_reward():
    from dler.rewards import MathReward

    return MathReward(num_workers=0)
