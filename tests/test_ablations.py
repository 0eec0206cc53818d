"""recipes/ablations.py: DLER minus one component at a time, on the tiny model, trained, evaluated and drawn."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "recipes"))
TINY = str(ROOT / "recipes" / "dler_tiny.py")


def test_components_apply_only_where_the_recipe_uses_them():
    from types import SimpleNamespace

    import ablations

    full = SimpleNamespace(advantage_normalization="batch", epsilon=0.2, epsilon_high=0.28, dynamic_sampling=False,
                           penalty="truncation", truncated_reward_scale=0.0, beta=0.0, correct_advantage_boost=0.0,
                           advantage_weighting="sequence", grader="dler")  # fmt: skip
    found = {name: (flags, why) for name, flags, why in ablations.components(SimpleNamespace(preset="paper"), full)}
    assert found["no_clip_higher"] == (["--epsilon_high", "0.2"], None)
    assert found["no_batch_norm"] == (["--advantage_normalization", "group"], None)
    assert found["no_truncation_shaping"] == (["--truncated_reward_scale", "1.0"], None)
    assert found["no_dynamic_sampling"][1] == "the recipe has dynamic_sampling off"
    assert found["released-prompts_per_round"][1] is not None and found["released-kl_estimator"][1] is not None
    assert found["released-truncated_reward_scale"] == (["--truncated_reward_scale", "0.1"], None)
    assert found["released-advantage_weighting"] == (["--advantage_weighting", "token"], None)
    assert found["released"] == (["--preset", "released"], None)
    full.epsilon_high, full.advantage_normalization = 0.2, "group"
    found = {name: why for name, _, why in ablations.components(SimpleNamespace(preset="paper"), full)}
    assert found["no_clip_higher"] and found["no_batch_norm"]


@pytest.mark.slow
def test_one_component_ablation_trains_evaluates_and_draws(tiny_model_dir, tmp_path):
    import ablations
    from helpers import recipe_args

    from dler.eval.report import report

    data = tmp_path / "train.jsonl"
    data.write_text(
        "".join(json.dumps({"problem": f"What is {i} + 1?", "answer": str(i + 1)}) + "\n" for i in range(8))
    )
    rest = [a for a in recipe_args(tiny_model_dir, str(data), "x") if a not in ("--output_dir", "x")]
    out = tmp_path / "ab"
    with pytest.raises(ValueError, match="--ablations no_dynamic_sampling: does not apply"):
        ablations.main(["--recipe", TINY, "--ablations", "no_dynamic_sampling", "--output_dir", str(out), "--", *rest])
    rows = ablations.main(["--recipe", TINY, "--ablations", "no_clip_higher", "--output_dir", str(out), "--eval_n",
                           "2", "--eval_limit", "2", "--", *rest])  # fmt: skip
    assert [r["name"] for r in rows] == ["dler", "no_clip_higher"] and all("eval_pass@1" in r for r in rows)
    args = {c["name"]: c["flags"] for c in json.loads((out / "experiment.json").read_text())["cells"]}
    assert args == {"dler": [], "no_clip_higher": ["--epsilon_high", "0.2"]}
    trained = json.loads((out / "no_clip_higher" / "dler_run.json").read_text())["settings"]
    assert trained["epsilon_high"] == trained["epsilon"] == 0.2
    assert "| no_clip_higher | truncation | dler |" in (out / "ablations.md").read_text()
    report([out])
    plane = json.loads((out / "report" / "plane.json").read_text())
    at = {p["name"]: (p["x"], p["y"]) for p in plane["points"]}
    assert plane["arrows"] == [["dler", "no_clip_higher"]]
    assert at == {r["name"]: (r["eval_mean_length"], 100 * r["eval_pass@1"]) for r in rows}
