"""`dler perplexity`: the summary by hand, the scores of the tiny model against a direct unbatched computation,
batching and padding invariance, resuming, and the one-line errors."""

import json
import math

import pytest
import torch

from dler import cli
from dler.eval import perplexity as ppl
from dler.prompts import prompt_settings, render, resolve

PROBLEMS = ["1 + 2", "30 + 45", "7 + 7"]
RESPONSES = [["<think> 1 + 2 </think> \\boxed{3}", ""], ["<think> wait check </think> \\boxed{75} = 75.", "so 75"],
             ["the answer is \\boxed{14}", "<think> 7 + 7 : carry add sum digit final </think> \\boxed{14}"]]  # fmt: skip


def test_summary_by_hand():
    rows = [{"tokens": [2, 0], "nll": [math.log(2), None]}, {"tokens": [1], "nll": [math.log(4)]}]
    s = ppl.summarize(rows)
    # token-weighted: (2 ln 2 + 1 ln 4) / 3 tokens = 4/3 ln 2; per response: exp(ln 2) = 2, exp(ln 4) = 4
    assert s["mean_nll"] == pytest.approx(4 / 3 * math.log(2))
    assert s["ppl"] == pytest.approx(2 ** (4 / 3))
    assert (s["ppl_response_mean"], s["ppl_response_median"]) == pytest.approx((3.0, 3.0))
    assert (s["problems"], s["responses"], s["empty_responses"], s["tokens"]) == (2, 2, 1, 3)
    assert ppl.summarize([{"tokens": [0], "nll": [None]}])["ppl"] is None


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def direct_nll(model, prompt, response):
    """-sum log P(response token) from one unbatched forward pass: log_softmax over the whole sequence."""
    ids = torch.tensor([prompt + response])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
    return -sum(float(logp[t - 1, ids[0, t]]) for t in range(len(prompt), len(prompt) + len(response)))


def pairs_of(tokenizer):
    fmt = resolve("r1")
    out = []
    for problem, responses in zip(PROBLEMS, RESPONSES, strict=True):
        prompt = tokenizer(render(fmt, problem, tokenizer), add_special_tokens=False)["input_ids"]
        out += [(prompt, tokenizer(r, add_special_tokens=False)["input_ids"]) for r in responses]
    return out


def test_scores_match_a_direct_computation_whatever_the_batching(tiny):
    model, tok = tiny
    pairs = pairs_of(tok)
    expected = [(direct_nll(model, p, r), len(r)) for p, r in pairs]
    assert expected[1] == (0, 0) and len({len(p) + len(r) for p, r in pairs}) > 3  # an empty one, padding needed
    one_by_one = [ppl.score_batch(model, [pair], tok.pad_token_id)[0] for pair in pairs]
    batched = ppl.score_batch(model, pairs, tok.pad_token_id)
    for got in (one_by_one, batched):
        assert [t for _, t in got] == [t for _, t in expected]
        assert [s for s, _ in got] == pytest.approx([s for s, _ in expected], rel=1e-5, abs=1e-4)
    # the pad id does not matter: padded positions are masked and never scored
    assert [s for s, _ in ppl.score_batch(model, pairs, 5)] == pytest.approx([s for s, _ in batched], rel=1e-5)


def write_responses(path, model, example=True):
    """A run folder as dler eval writes it: protocol.json (prompt settings, the first prompt) and generations."""
    gen = path / "generations"
    gen.mkdir(parents=True)
    fmt = resolve("r1")
    protocol = {"model": str(model), "prompt": prompt_settings(fmt)}
    if example:
        from transformers import AutoTokenizer

        text = render(fmt, PROBLEMS[0], AutoTokenizer.from_pretrained(model))
        protocol["prompt_example"] = {"benchmark": "math500", "index": 0, "text": text}
    (path / "protocol.json").write_text(json.dumps(protocol))
    lines = [{"benchmark": "math500", "index": i, "problem": p, "responses": r, "correct": [0.0] * len(r)}
             for i, (p, r) in enumerate(zip(PROBLEMS, RESPONSES, strict=True))]  # fmt: skip
    (gen / "math500.jsonl").write_text("".join(json.dumps(x) + "\n" for x in reversed(lines)))
    return path


def test_perplexity_end_to_end_resumes_and_matches_the_direct_scores(tiny, tiny_model_dir, tmp_path, monkeypatch):
    model, tok = tiny
    run = write_responses(tmp_path / "run", tiny_model_dir)
    out = tmp_path / "out"
    first = ppl.perplexity(tiny_model_dir, run, out, batch_size=3, limit=2)
    assert first["benchmarks"]["math500"]["problems"] == 2 and first["prompt_rendered_by"] == tiny_model_dir
    calls = []
    real = ppl.score_batch
    monkeypatch.setattr(ppl, "score_batch", lambda m, pairs, pad: calls.append(len(pairs)) or real(m, pairs, pad))
    summary = ppl.perplexity(tiny_model_dir, run, out, batch_size=3)
    assert calls == [2]  # only problem 2's two responses: problems 0 and 1 were done
    lines = [json.loads(x) for x in (out / "math500.jsonl").read_text().splitlines()]
    assert [x["index"] for x in lines] == [0, 1, 2]
    expected = [(direct_nll(model, p, r), len(r)) for p, r in pairs_of(tok)]
    got = [(nll * t if t else 0, t) for x in lines for t, nll in zip(x["tokens"], x["nll"], strict=True)]
    assert [t for _, t in got] == [t for _, t in expected] and lines[0]["nll"][1] is None
    assert [s for s, _ in got] == pytest.approx([s for s, _ in expected], rel=1e-5, abs=1e-4)
    total = sum(s for s, _ in expected)
    tokens = sum(t for _, t in expected)
    m = summary["benchmarks"]["math500"]
    assert m["ppl"] == pytest.approx(math.exp(total / tokens), rel=1e-5)
    assert (m["responses"], m["empty_responses"], m["tokens"]) == (5, 1, tokens)
    assert json.loads((out / "perplexity.json").read_text())["benchmarks"]["math500"] == m
    # batch size 1 gives the same numbers
    again = ppl.perplexity(tiny_model_dir, run, tmp_path / "b1", batch_size=1)
    assert again["benchmarks"]["math500"]["ppl"] == pytest.approx(m["ppl"], rel=1e-5)
    with pytest.raises(ppl.PerplexityError, match="computed otherwise .*dtype: 'auto' there, 'float32' now"):
        ppl.perplexity(tiny_model_dir, run, out, dtype="float32")


def test_a_prompt_that_cannot_be_rebuilt_is_refused(tiny_model_dir, tmp_path):
    run = write_responses(tmp_path / "run", tiny_model_dir)
    protocol = json.loads((run / "protocol.json").read_text())
    protocol["prompt_example"]["text"] = "something else"
    (run / "protocol.json").write_text(json.dumps(protocol))
    with pytest.raises(ppl.PerplexityError, match=r"differs from the one the run recorded .*math500\[0\]"):
        ppl.perplexity(tiny_model_dir, run, tmp_path / "out")


def test_cli_errors_are_one_line_before_any_model_loads(tiny_model_dir, tmp_path, capsys, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    empty = tmp_path / "empty"
    (empty / "t0.6" / "generations").mkdir(parents=True)
    (empty / "t0.6" / "generations" / "math500.jsonl").write_text("{}\n")
    run = write_responses(tmp_path / "run", tiny_model_dir, example=False)
    cases = [
        (["--model", tiny_model_dir, "--responses", str(empty)],
         f"holds no generations/<benchmark>.jsonl: perplexity scores the responses dler eval writes there; its "
         f"subfolders hold some: {empty / 't0.6'}"),
        (["--model", str(tmp_path / "no-such-model"), "--responses", str(run)], "no-such-model: no such file"),
        (["--model", tiny_model_dir, "--responses", str(tmp_path / "nope")], "nope: no such folder"),
        (["--model", tiny_model_dir, "--responses", str(run), "--benchmarks", "aime24"],
         "has no generations for aime24; it has math500"),
        (["--model", tiny_model_dir, "--responses", str(run), "--batch-size", "0"], "must be an integer >= 1"),
    ]  # fmt: skip
    for args, message in cases:
        with pytest.raises(SystemExit) as exc:
            cli.main(["perplexity", *args, "--output-dir", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and message in err and err.count("\n") == 1, err


def test_cli_prints_the_table(tiny_model_dir, tmp_path, capsys):
    run = write_responses(tmp_path / "run", tiny_model_dir)
    assert cli.main(["perplexity", "--model", tiny_model_dir, "--responses", str(run), "--output-dir",
                     str(tmp_path / "o"), "--limit", "1"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert f"| {tiny_model_dir} | {tiny_model_dir} | math500 | 1 |" in out
