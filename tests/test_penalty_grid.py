"""recipes/penalty_grid.py: every penalty under each optimisation recipe, one tiny run per cell."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "recipes"))


def cell_args(tiny_model_dir):
    return [
        "--model_dir",
        tiny_model_dir,
        "--use_cpu",
        "true",
        "--bf16",
        "false",
        "--per_device_train_batch_size",
        "8",
        "--num_generations",
        "4",
        "--updates_per_generation",
        "2",
        "--max_completion_length",
        "16",
        "--truncation_length",
        "16",
        "--max_steps",
        "1",
        "--report_to",
        "none",
        "--save_strategy",
        "no",
        "--gradient_checkpointing",
        "false",
        "--max_sampling_rounds",
        "3",
        "--dynamic_sampling_exhausted",
        "partial",
    ]


def test_dry_run_resolves_each_cell(tiny_model_dir, tmp_path, capsys):
    import penalty_grid

    penalty_grid.main(
        [
            "--recipe",
            str(ROOT / "tests" / "grid_recipe.py"),
            "--penalties",
            "truncation,kimi",
            "--optimizer_recipes",
            "grpo,dler",
            "--output_dir",
            str(tmp_path),
            "--dry-run",
            "--",
            *cell_args(tiny_model_dir),
        ]
    )
    cells = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(c["penalty"], c["optimizer_recipe"]) for c in cells] == [
        ("truncation", "grpo"),
        ("truncation", "dler"),
        ("kimi", "grpo"),
        ("kimi", "dler"),
    ]
    # each cell resolves its recipe afresh: no settings leak from one cell to the next
    assert [(c["advantage_normalization"], c["dynamic_sampling"]) for c in cells] == [
        ("group", False),
        ("batch", True),
    ] * 2
    assert not (tmp_path / "grid.json").exists()


@pytest.mark.slow
def test_grid_trains_every_cell_and_tabulates(tiny_model_dir, tmp_path):
    import penalty_grid

    results = penalty_grid.main(
        [
            "--recipe",
            str(ROOT / "tests" / "grid_recipe.py"),
            "--penalties",
            "truncation,shorterbetter",
            "--output_dir",
            str(tmp_path),
            "--",
            *cell_args(tiny_model_dir),
        ]
    )
    assert len(results) == 4 and all("dler/shaped_reward" in r for r in results)
    table = (tmp_path / "grid.md").read_text()
    assert "| shorterbetter | dler |" in table and "| truncation | grpo |" in table
    assert json.loads((tmp_path / "grid.json").read_text()) == results


def test_recipe_without_main_fails_clearly(tmp_path):
    import penalty_grid

    (tmp_path / "bad.py").write_text("x = 1\n")
    with pytest.raises(AttributeError, match="neither DEFAULTS"):
        penalty_grid.grid_recipe(str(tmp_path / "bad.py"))
    with pytest.raises(FileNotFoundError, match="no such file"):
        penalty_grid.grid_recipe(str(tmp_path / "missing.py"))


def test_dler_recipe_cells_keep_the_recipe_batch_arithmetic(capsys):
    import penalty_grid

    penalty_grid.main(
        [
            "--recipe",
            str(ROOT / "recipes" / "dler_r1_7b.py"),
            "--penalties",
            "cosine",
            "--optimizer_recipes",
            "grpo,dler",
            "--dry-run",
            "--",
            "--num_processes",
            "64",
        ]
    )
    cells = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(c["penalty"], c["optimizer_recipe"], c["advantage_normalization"]) for c in cells] == [
        ("cosine", "grpo", "group"),
        ("cosine", "dler", "batch"),
    ]
    # each cell's batch is the recipe's: 64 GPUs x 8 x 2 accumulation per update, 8 updates per generation
    parse_cell, _ = penalty_grid.recipe_runner(penalty_grid.grid_recipe(str(ROOT / "recipes" / "dler_r1_7b.py")))
    for optimizer in ("grpo", "dler"):
        _, training, _ = parse_cell(["--num_processes", "64", "--optimizer_recipe", optimizer, "--dry-run"])
        assert (training.gradient_accumulation_steps, training.steps_per_generation) == (2, 16), optimizer
