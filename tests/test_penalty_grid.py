"""recipes/penalty_grid.py and dler.experiments: per-penalty defaults, validation, the 2 x 2 grid end to end."""

import json
import sys
from pathlib import Path

import pytest

from dler.experiments import defaults as D

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "recipes"))
TINY = str(ROOT / "recipes" / "dler_tiny.py")


def cell_args(tiny_model_dir):
    return ["--model_dir", tiny_model_dir, "--use_cpu", "true", "--bf16", "false", "--per_device_train_batch_size", "8",
            "--num_generations", "4", "--updates_per_generation", "2", "--max_completion_length", "16",
            "--truncation_length", "16", "--max_steps", "1", "--report_to", "none", "--save_strategy", "no",
            "--gradient_checkpointing", "false", "--max_sampling_rounds", "3", "--dynamic_sampling_exhausted",
            "partial"]  # fmt: skip


def addition_file(path: Path, n: int = 8) -> str:
    path.write_text(
        "".join(json.dumps({"problem": f"What is {i} + {i}?", "answer": str(2 * i)}) + "\n" for i in range(n))
    )
    return str(path)


# ---------------------------------------------------------------------------------------------- default kwargs
def test_default_kwargs_follow_the_sources_at_the_papers_lengths():
    # DAPO: 4096 of 20480; at DLER's 4000: 800
    assert D.default_penalty_kwargs("soft_overlong", 20480, 100) == {"max_length": 20480, "buffer": 4096}
    assert D.default_penalty_kwargs("soft_overlong", 4000, 100) == {"max_length": 4000, "buffer": 800}
    assert D.default_penalty_kwargs("soft_overlong", 3, 100)["buffer"] == 1
    # cosine: the released 16-token margin from L = 256 on, L / 16 below
    assert D.default_penalty_kwargs("cosine", 4000, 1)["exceed_margin"] == 16
    assert D.default_penalty_kwargs("cosine", 24, 1) == {"max_length": 24, "exceed_margin": 1}
    # Laser-D: the released 4096..16384 step 1024 at L = 16384, scaled to L
    assert D.laser_grid(16384) == list(range(4096, 16385, 1024))
    assert D.laser_grid(4000) == list(range(1000, 4001, 250))
    assert D.laser_grid(24) == [6, 7, 9, 10, 12, 13, 15, 16, 18, 19, 21, 22, 24]
    assert D.default_penalty_kwargs("laser_de", 4000, 1) == {"grid": D.laser_grid(4000)}
    # ThinkPrune: 4000 -> 3000 -> 2000, at a third and two thirds of the run
    assert D.default_penalty_kwargs("thinkprune", 4000, 300) == {
        "budgets": [4000, 3000, 2000],
        "stage_steps": [100, 200],
    }
    assert D.thinkprune_schedule(16, 1) == {"budgets": [16, 12, 8], "stage_steps": [1, 2]}
    # L1: the released 100..4000 relative to L
    assert D.l1_targets(4000) == range(100, 4001)
    assert D.l1_targets(24) == range(1, 25)
    assert D.default_penalty_kwargs("truncation", 4000, 1) == {} and D.default_penalty_kwargs("l1_max", 4000, 1) == {}


def test_penalty_config_merges_over_the_defaults_and_cells_share_nothing(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("cosine: {exceed_margin: 0}\nkimi: {}\n")
    config = D.read_penalty_config(path)
    a = D.cell_penalty_kwargs("cosine", 4000, 1, config)
    assert a == {"max_length": 4000, "exceed_margin": 0}
    b = D.cell_penalty_kwargs("cosine", 4000, 1, config)
    a["max_length"] = 1
    assert b["max_length"] == 4000 and config["cosine"] == {"exceed_margin": 0}
    path.write_text("cosine: 3\n")
    with pytest.raises(ValueError, match="'cosine' must map to a mapping"):
        D.read_penalty_config(path)
    path.write_text("- cosine\n")
    with pytest.raises(ValueError, match="must map penalty names"):
        D.read_penalty_config(path)


# ---------------------------------------------------------------------------------------------- validation
def grid(argv):
    import penalty_grid

    return penalty_grid.main(argv)


def test_every_cell_is_validated_before_any_trains(tiny_model_dir, tmp_path):
    from helpers import recipe_args

    data = addition_file(tmp_path / "train.jsonl")
    rest = [a for a in recipe_args(tiny_model_dir, data, "x") if a not in ("--output_dir", "x")]
    bad = tmp_path / "bad.yaml"
    bad.write_text("soft_overlong: {buffer: 100}\n")
    base = ["--recipe", TINY, "--output_dir", str(tmp_path / "g"), "--penalties", "truncation,soft_overlong"]
    with pytest.raises(ValueError, match=r"cell soft_overlong-grpo: .*buffer B=100 exceeds Lmax=16"):
        grid([*base, "--penalty_config", str(bad), "--", *rest])
    assert not (tmp_path / "g" / "truncation-grpo").exists()  # nothing trained
    bad.write_text("cosine: {}\n")
    with pytest.raises(ValueError, match=r"--penalty_config names \['cosine'\], which no cell uses"):
        grid([*base, "--penalty_config", str(bad), "--", *rest])
    with pytest.raises(ValueError, match="per-penalty settings go in --penalty_config"):
        grid([*base, "--", *rest, "--penalty_kwargs", "{}"])
    no_answer = tmp_path / "no_answer.jsonl"
    no_answer.write_text(json.dumps({"problem": "1 + 1"}) + "\n")
    with pytest.raises(ValueError, match=r"cell truncation-grpo: .*no column 'answer'"):
        grid([*base, "--", *rest, "--dataset_name", str(no_answer)])


def test_dry_run_resolves_each_cell_with_its_own_kwargs(tiny_model_dir, tmp_path, capsys):
    from helpers import recipe_args

    data = addition_file(tmp_path / "train.jsonl")
    rest = [a for a in recipe_args(tiny_model_dir, data, "x") if a not in ("--output_dir", "x")]
    grid(["--recipe", TINY, "--penalties", "cosine,laser_d,soft_overlong", "--output_dir", str(tmp_path / "g"),
          "--dry-run", "--", *rest])  # fmt: skip
    cells = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    kwargs = {c["cell"]: c["penalty_kwargs"] for c in cells}
    assert kwargs["cosine-grpo"] == kwargs["cosine-dler"] == {"max_length": 16, "exceed_margin": 1}
    assert kwargs["soft_overlong-dler"] == {"max_length": 16, "buffer": 3}
    assert kwargs["laser_d-grpo"]["grid"] == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    assert [(c["advantage_normalization"], c["epsilon_high"]) for c in cells[:2]] == [("group", None), ("batch", 0.28)]
    assert not (tmp_path / "g" / "experiment.json").exists()


def test_script_recipe_dry_run_and_bad_recipe(tiny_model_dir, tmp_path, capsys):
    from dler.experiments.cells import grid_recipe

    grid(["--recipe", str(ROOT / "tests" / "grid_recipe.py"), "--penalties", "truncation,kimi", "--output_dir",
          str(tmp_path), "--dry-run", "--", *cell_args(tiny_model_dir)])  # fmt: skip
    cells = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [c["cell"] for c in cells] == ["truncation-grpo", "truncation-dler", "kimi-grpo", "kimi-dler"]
    assert [(c["advantage_normalization"], c["dynamic_sampling"]) for c in cells] == [
        ("group", False),
        ("batch", True),
    ] * 2
    with pytest.raises(ValueError, match="cell truncation-grpo: this recipe builds its own data"):
        grid(["--recipe", str(ROOT / "tests" / "grid_recipe.py"), "--penalties", "truncation", "--output_dir",
              str(tmp_path), "--", *cell_args(tiny_model_dir)])  # fmt: skip
    (tmp_path / "bad.py").write_text("x = 1\n")
    with pytest.raises(AttributeError, match="neither DEFAULTS"):
        grid_recipe(str(tmp_path / "bad.py"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        grid_recipe(str(tmp_path / "missing.py"))


def test_dler_recipe_cells_keep_the_recipe_batch_arithmetic(capsys):
    from dler.experiments.cells import grid_recipe, recipe_runner

    parse_cell, _ = recipe_runner(grid_recipe(str(ROOT / "recipes" / "dler_r1_7b.py")))
    for optimizer in ("grpo", "dler"):
        _, training, _ = parse_cell(["--num_processes", "64", "--optimizer_recipe", optimizer, "--dry-run"])
        assert (training.gradient_accumulation_steps, training.steps_per_generation) == (2, 16), optimizer


# ---------------------------------------------------------------------------------------------- the plane
def test_plane_plot_draws_one_marker_per_cell_and_the_arrows(tmp_path):
    from dler.eval.plane_plot import plot_plane

    points = [{"name": f"{p}-{o}", "group": p, "role": o, "x": x, "y": y, "se": 1.0}
              for p, o, x, y in [("a", "grpo", 100, 40), ("a", "dler", 50, 45), ("b", "grpo", 120, 30),
                                 ("b", "dler", 80, 35)]]  # fmt: skip
    fig = plot_plane(points, [("a-grpo", "a-dler"), ("b-grpo", "b-dler")], tmp_path / "plane.png", "t")
    ax = fig.axes[0]
    drawn = [line for line in ax.lines if line.get_marker() in ("o", "*")]  # not the error bars' caps
    assert sorted((float(line.get_xdata()[0]), float(line.get_ydata()[0])) for line in drawn) == [
        (50, 45), (80, 35), (100, 40), (120, 30)]  # fmt: skip
    arrows = [(t.xyann, t.xy) for t in ax.texts if getattr(t, "arrow_patch", None) is not None]
    assert sorted(arrows) == [((100, 40), (50, 45)), ((120, 30), (80, 35))]
    assert json.loads((tmp_path / "plane.json").read_text())["arrows"] == [["a-grpo", "a-dler"], ["b-grpo", "b-dler"]]
    assert (tmp_path / "plane.png").stat().st_size > 0


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_grid_2x2_trains_evaluates_resumes_and_draws(tiny_model_dir, tmp_path, capsys):
    from helpers import recipe_args

    from dler.eval.report import report

    data = addition_file(tmp_path / "train.jsonl")
    rest = [a for a in recipe_args(tiny_model_dir, data, "x") if a not in ("--output_dir", "x")]
    out = tmp_path / "grid"
    argv = ["--recipe", TINY, "--penalties", "truncation,l1_max", "--output_dir", str(out), "--eval_n", "2",
            "--eval_limit", "2", "--", *rest]  # fmt: skip
    rows = grid(argv)
    assert [r["name"] for r in rows] == ["truncation-grpo", "truncation-dler", "l1_max-grpo", "l1_max-dler"]
    assert all(r["trained"] and "dler/shaped_reward" in r and r["eval_n"] == 2 for r in rows)
    # L1's target column was added by the seeded rule and asked for in the prompt; its eval asks for the budget
    l1_data = [json.loads(line) for line in next((out / "data").glob("*.jsonl")).read_text().splitlines()]
    assert all(
        1 <= r["target_length"] <= 16 and f"Think for {r['target_length']} tokens." in r["problem"] for r in l1_data
    )
    l1_eval = (out / "l1_max-dler" / "eval_data" / "validation.jsonl").read_text()
    assert "Think for 16 tokens." in l1_eval
    assert json.loads((out / "grid.json").read_text()) == rows
    assert "| truncation-dler | truncation | dler |" in (out / "grid.md").read_text()
    capsys.readouterr()
    grid(argv)  # resumes: every cell finished, nothing trains again
    assert capsys.readouterr().out.count("trained earlier") == 4

    path = report([out])
    assert path == out / "report" / "report.md" and "## Experiment: penalty_grid" in path.read_text()
    plane = json.loads((out / "report" / "plane.json").read_text())
    assert len(plane["points"]) == 4 and plane["arrows"] == [["truncation-grpo", "truncation-dler"],
                                                             ["l1_max-grpo", "l1_max-dler"]]  # fmt: skip
    at = {p["name"]: (p["x"], p["y"]) for p in plane["points"]}
    for r in rows:
        assert at[r["name"]] == (r["eval_mean_length"], 100 * r["eval_pass@1"])
