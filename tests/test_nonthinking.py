"""Issue 22's "done when" for prompts and graders: a tiny model that never writes </think> trains with DLER and
evaluates to a non-zero accuracy with the right switch (`--answer_region whole`, then read back from the trained
model's dler_prompt.json by `dler eval`), and to a clear warning without it.

The model is the demo's toy (one-digit additions, solutions without thinking tags), warm-started by a short SFT."""

import argparse
import json
import logging

import pytest
from helpers import recipe_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def non_thinking(tmp_path_factory):
    """(SFT model folder, training file, held-out benchmark folder) of a toy model that answers without thinking."""
    import torch
    from transformers import set_seed

    from dler.demo.toy import ToyTask, build_toy_model, build_toy_tokenizer, problem_text, write_problems
    from dler.demo.training import warm_start

    root = tmp_path_factory.mktemp("nothink")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        set_seed(0)
        task = ToyTask(digits=1, verifies=(1.0,), think_tags=False)
        assert "think>" not in task.solution(1, 2)
        tokenizer = build_toy_tokenizer(task, seed=0)
        model = build_toy_model(tokenizer, seed=0)
        args = argparse.Namespace(sft_batch=16, sft_steps=120, sft_lr=3e-3, sft_problems=2400, seed=0)
        warm_start(args, task, tokenizer, model, root / "sft")
    finally:
        torch.set_num_threads(threads)
    data = write_problems(root / "train.jsonl", task, 32, seed=4)
    (root / "bench").mkdir()
    with open(root / "bench" / "math500.jsonl", "w") as f:
        for a, b in task.held_out_problems(12, seed=2):
            f.write(json.dumps({"problem": problem_text(a, b), "answer": str(a + b)}) + "\n")
    return root / "sft", data, root / "bench"


def test_a_model_without_thinking_tags_trains_and_evaluates_with_the_whole_answer_region(
    non_thinking, tmp_path, caplog
):
    from dler.eval.run import evaluate
    from dler.eval.settings import EvalConfig
    from dler.prompts import PROMPT_FILE
    from dler.recipe import run

    sft, data, bench = non_thinking
    out = tmp_path / "dler"
    argv = recipe_args(sft, data, out, answer_region="whole", max_completion_length=24, truncation_length=24,
                       max_steps=2, use_cpu="true", bf16="false", temperature=1.0, learning_rate=1e-4)  # fmt: skip
    trainer = run({}, argv)
    assert trainer.state.global_step == 2
    correctness = [h["dler/correctness"] for h in trainer.state.log_history if "dler/correctness" in h]
    assert correctness and max(correctness) > 0  # graded on the whole response: it scores
    assert json.loads((out / PROMPT_FILE).read_text())["answer_region"] == "whole"

    def evaluation(name, **kw):
        cfg = EvalConfig(model=str(out), output_dir=str(tmp_path / name), benchmarks=["math500"], n=4,
                         max_tokens=24, data_dir=str(bench), grader_workers=0, progress=False,
                         backend="transformers", **kw)  # fmt: skip
        ((_, results),) = evaluate(cfg).items()
        return results

    caplog.set_level(logging.INFO)
    trained = evaluation("as-trained")  # no flag: the trained model's prompt settings, answer region included
    assert trained["protocol"]["prompt"]["answer_region"] == "whole" and "as the model was trained" in caplog.text
    assert trained["benchmarks"]["math500"]["pass@1"] > 0
    assert trained["benchmarks"]["math500"]["think_unclosed"] == 1.0
    assert "never close their thinking" not in caplog.text

    wrong = evaluation("after-think", answer_region="after-think")  # graded as a thinking model
    assert wrong["benchmarks"]["math500"]["pass@1"] == 0.0
    (warning,) = [r.getMessage() for r in caplog.records if "never close their thinking" in r.getMessage()]
    assert "math500: 100% of the responses" in warning and "--answer-region whole" in warning
