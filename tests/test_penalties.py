"""Every published penalty against hand-computed values, its promised properties, the registry and plugins."""

import json
import math
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest
import torch

from dler.penalties import (
    BUILTIN_PENALTIES,
    CosinePenalty,
    KimiPenalty,
    LengthPenalty,
    RolloutGroup,
    ThinkPrunePenalty,
    TruncationPenalty,
    add_length_targets,
    available_penalties,
    describe_penalties,
    get_penalty,
    param,
    penalties_table,
    penalty_params,
    register_penalty,
)
from dler.penalties import registry as registry_module
from dler.penalties.laser import has_boxed_answer, repetition_ratio, well_formatted

ROOT = Path(__file__).resolve().parents[1]
GOOD = "<think>add the two numbers</think> The answer is \\boxed{3}."
NO_THINK = "The answer is \\boxed{3}."
NO_BOX = "<think>add the two numbers</think> The answer is 3."
LAST_BOX_OPEN = "<think>add</think> First \\boxed{3}, or rather \\boxed{\\frac{7}{2"  # cut inside its last box
FRESH = "<think>" + " ".join(f"step{i}" for i in range(300)) + "</think> \\boxed{2}"


def group(correctness, lengths, finished=None, budget=4000, **kwargs):
    return RolloutGroup(
        correctness=torch.tensor(correctness, dtype=torch.float32),
        lengths=torch.tensor(lengths),
        finished=torch.tensor(finished if finished is not None else [True] * len(lengths)),
        budget=budget,
        **kwargs,
    )


def values(penalty, g):
    out = penalty(g)
    assert out.dtype == torch.float32 and out.shape == (len(g.lengths),)
    return out.tolist()


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture
def clean_registry():
    """Whatever a test registers or loads from entry points is gone afterwards."""
    saved, loaded = dict(registry_module._REGISTRY), registry_module._plugins_loaded
    yield
    registry_module._REGISTRY.clear()
    registry_module._REGISTRY.update(saved)
    registry_module._plugins_loaded = loaded


# ---------------------------------------------------------------------------------------------------- formulas
def test_truncation_from_the_registry():
    g = group([1, 1, 0, 1], [3, 5, 2, 3], [True, True, True, False], budget=4)
    assert values(get_penalty("truncation"), g) == [1.0, 0.0, 0.0, 0.0]
    assert values(get_penalty("truncation", truncated_reward_scale=0.1), g) == pytest.approx([1.0, 0.1, 0.0, 0.1])


def test_soft_overlong():
    # DAPO's rule reward: +1 correct, -1 wrong (verl math_dapo.compute_score). Lmax 10 (the cap), B 4: free up to
    # 6, then -(L-6)/4, -1 at 10; no EOS = beyond Lmax
    g = group([1, 1, 1, 0, 1, 1], [5, 6, 7, 8, 10, 9], [True] * 5 + [False], max_length=10)
    assert values(get_penalty("soft_overlong", buffer=4), g) == pytest.approx([1, 1, 0.75, -1.5, 0, 0])
    assert values(get_penalty("soft_overlong", buffer=4, penalty_factor=0.5), g)[2] == pytest.approx(0.875)
    # wrong_reward=0: c + p
    assert values(get_penalty("soft_overlong", buffer=4, wrong_reward=0.0), g) == pytest.approx(
        [1, 1, 0.75, -0.5, 0, 0]
    )
    # an explicit Lmax below a response's length: -1 beyond it
    assert values(get_penalty("soft_overlong", buffer=2, max_length=8), group([1, 0], [12, 7])) == [0.0, -1.5]
    # all within Lmax - B: the rule reward alone; a score between 0 and 1 maps linearly
    assert values(get_penalty("soft_overlong", buffer=4), group([1, 0, 0.5], [3, 3, 3], max_length=10)) == [1, -1, 0]


def test_soft_overlong_needs_a_buffer_within_lmax():
    with pytest.raises(ValueError, match=r"buffer B=4096 exceeds Lmax=4000"):
        get_penalty("soft_overlong")(group([1], [5], max_length=4000))
    with pytest.raises(ValueError, match="needs Lmax"):
        get_penalty("soft_overlong")(group([1], [5]))


def test_cosine():
    p = get_penalty("cosine", max_length=100, exceed_margin=0)  # the paper's formula: exceed from L = Lmax
    g = group([1, 1, 1, 0, 0, 0, 1, 1], [0, 25, 50, 0, 50, 75, 30, 100], [True] * 6 + [False, True])
    expected = [
        2.0,  # correct, L=0: max_correct
        1 + (1 + math.cos(math.pi / 4)) / 2,
        1.5,  # cos(pi/2) = 0: halfway between 1 and 2
        -10.0,  # wrong, L=0: min_wrong
        -5.0,
        -10 * (1 + math.cos(3 * math.pi / 4)) / 2,
        -10.0,  # no EOS: exceed
        -10.0,  # L >= Lmax: exceed
    ]
    assert values(p, g) == pytest.approx(expected)
    assert values(p, group([1, 1], [50, 50])) == [1.5, 1.5]  # all correct, equal lengths
    wrong = values(p, group([0] * 10, list(range(0, 100, 10))))  # none correct: longer is punished less
    assert all(a <= b for a, b in zip(wrong, wrong[1:], strict=False)) and wrong[0] == -10.0
    assert values(p, group([1], [99])) == pytest.approx([1 + (1 + math.cos(0.99 * math.pi)) / 2])
    # Lmax defaults to the generation cap
    assert values(get_penalty("cosine"), group([1], [50], max_length=100)) == [1.5]
    with pytest.raises(ValueError, match="needs Lmax"):
        get_penalty("cosine")(group([1], [5]))
    with pytest.raises(ValueError, match="min_correct <= max_correct"):
        get_penalty("cosine", min_correct=3.0)


def test_cosine_exceeds_16_tokens_before_lmax_by_default():
    """The released reward counts `gen_len + MAX_LEN_MARGIN >= max_len` (MAX_LEN_MARGIN = 16) as exceeding."""
    g = group([1, 0, 1, 0], [83, 83, 84, 84], max_length=100)
    lo = (1 + math.cos(0.83 * math.pi)) / 2
    assert values(get_penalty("cosine"), g) == pytest.approx([1 + lo, -10 * lo, -10.0, -10.0])
    assert values(get_penalty("cosine", exceed_margin=4), g)[2:] == pytest.approx(
        [1 + (1 + math.cos(0.84 * math.pi)) / 2, -10 * (1 + math.cos(0.84 * math.pi)) / 2]
    )


def test_kimi():
    # lam = 0.5 - (L - 10) / 40 = [0.5, 0.25, 0, -0.5]
    g = group([1, 0, 1, 0], [10, 20, 30, 50])
    assert values(get_penalty("kimi"), g) == pytest.approx([1.2, 0.0, 1.0, -0.2])
    assert values(get_penalty("kimi", coef=1.0), g) == pytest.approx([1.5, 0.0, 1.0, -0.5])
    assert values(get_penalty("kimi"), group([1, 0, 1], [7, 7, 7])) == [1.0, 0.0, 1.0]  # equal lengths: lam = 0
    assert values(get_penalty("kimi"), group([0, 0], [10, 30])) == pytest.approx([0.0, -0.2])  # none correct
    assert values(get_penalty("kimi"), group([1, 1], [10, 30])) == pytest.approx([1.2, 0.8])  # all correct
    assert values(get_penalty("kimi"), group([1, 0], [10, 4000], [True, False])) == pytest.approx([1.2, -0.2])


def test_efficient():
    p = get_penalty("efficient")  # alpha 0.1
    g = group([1, 1, 1, 0, 1], [100, 200, 300, 400, 50], [True] * 4 + [False])
    std = math.sqrt((100**2 + 0 + 100**2) / 3)  # population std of the correct EOS lengths 100, 200, 300
    expected = [1 - 0.1 * sigmoid((L - 200) / (std + 1e-7)) for L in (100, 200, 300)] + [0.0, 0.0]
    assert values(p, g) == pytest.approx(expected)
    assert values(p, group([1, 0], [100, 50])) == pytest.approx([0.95, 0.0])  # one correct: z = 0
    assert values(p, group([1, 1], [80, 80])) == pytest.approx([0.95, 0.95])  # equal lengths
    assert values(p, group([0, 0], [10, 20])) == [0.0, 0.0]  # none correct: just c
    assert values(p, group([1, 1], [10, 20], [False, False])) == [0.0, 0.0]  # no EOS: 0


def test_shorterbetter():
    p = get_penalty("shorterbetter")  # alpha 2, beta 0.001
    assert values(p, group([1, 1, 0, 0], [100, 50, 80, 200])) == pytest.approx([1.95, 2.0, -0.03, -0.15])
    assert values(p, group([0, 0], [100, 200])) == pytest.approx([-0.05, -0.05])  # none correct: L_sol = mean
    assert values(p, group([1, 1], [60, 60])) == pytest.approx([2.0, 2.0])
    assert values(p, group([1, 0], [60, 4000], [True, False])) == pytest.approx([2.0, -3.94])  # capped: as is


def test_l1_exact():
    g = group([1, 1, 0], [100, 150, 40], prompt={"target_length": 100})
    assert values(get_penalty("l1_exact"), g) == pytest.approx([1.0, 0.985, -0.018])
    # no EOS: judged by the capped length; equal lengths, none correct
    g = group([1, 0, 0], [300, 300, 300], [False, True, True], prompt={"target_length": 100})
    assert values(get_penalty("l1_exact"), g) == pytest.approx([0.94, -0.06, -0.06])
    g = group([1], [150], prompt={"n": "100"})
    assert values(get_penalty("l1_exact", alpha=0.001, target_column="n"), g) == pytest.approx([0.95])


def test_l1_max_paper_and_released():
    g = group([1, 1, 1, 0], [500, 1000, 1400, 1600], prompt={"target_length": 1000})
    assert values(get_penalty("l1_max"), g) == pytest.approx([1.0, 0.5, 0.1, 0.0])
    assert values(get_penalty("l1_max", variant="released"), g) == pytest.approx([1.0, 0.5, 0.1, 0.0])
    assert values(get_penalty("l1_max", alpha=0.002, delta=0.3), g) == pytest.approx([1.0, 0.3, 0.0, 0.0])
    # released: slope 2 * alpha (the run's reward_config.alpha), delta fixed at 0.5: 1400 tokens -> clip(-1.6) = -1
    released = values(get_penalty("l1_max", alpha=0.002, delta=0.3, variant="released"), g)
    assert released == pytest.approx([1.0, 0.5, 0.0, 0.0])
    assert released == pytest.approx(values(get_penalty("l1_max", alpha=0.002, delta=0.5), g))
    g = group([1, 1], [1600, 1600], [False, True], prompt={"target_length": 1000})  # no EOS, equal lengths
    assert values(get_penalty("l1_max"), g) == [0.0, 0.0]


def test_l1_target_column_errors():
    with pytest.raises(ValueError, match=r"no column 'target_length'.*available fields: \['answer', 'prompt'\]"):
        get_penalty("l1_max")(group([1], [5], prompt={"prompt": "q", "answer": "1"}))
    with pytest.raises(ValueError, match="must hold a number"):
        get_penalty("l1_exact")(group([1], [5], prompt={"target_length": "many"}))
    with pytest.raises(ValueError, match="positive"):
        get_penalty("l1_exact")(group([1], [5], prompt={"target_length": 0}))


def test_add_length_targets_on_rows():
    rows = [
        {"prompt": "What is 1+2?", "answer": "3"},
        {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"}]},
    ]
    out = add_length_targets(rows, targets=[100, 200], seed=1)
    assert rows[0]["prompt"] == "What is 1+2?" and "target_length" not in rows[0]  # input untouched
    n0, n1 = out[0]["target_length"], out[1]["target_length"]
    assert {n0, n1} <= {100, 200}
    assert out[0]["prompt"] == f"What is 1+2? Think for {n0} tokens."
    assert out[1]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert out[1]["prompt"][1]["content"] == f"What is 2+2? Think for {n1} tokens."
    assert add_length_targets(rows, targets=[100, 200], seed=1) == out  # deterministic
    many = add_length_targets([{"prompt": "q"}] * 200, seed=0)
    assert all(100 <= r["target_length"] <= 4000 for r in many) and len({r["target_length"] for r in many}) > 100
    assert add_length_targets(rows[:1], targets=[7], template=None, column="n") == [{**rows[0], "n": 7}]
    maximum = add_length_targets(rows[:1], targets=[9], template="Think for maximum {n} tokens.")
    assert maximum[0]["prompt"].endswith("Think for maximum 9 tokens.")
    with pytest.raises(ValueError, match="no user message"):
        add_length_targets([{"prompt": [{"role": "system", "content": "x"}]}], targets=[5])
    with pytest.raises(ValueError, match="positive ints"):
        add_length_targets(rows, targets=[0])


def test_add_length_targets_on_a_dataset():
    from datasets import Dataset

    data = Dataset.from_list(
        [{"prompt": [{"role": "user", "content": "q1"}]}, {"prompt": [{"role": "user", "content": "q2"}]}]
    )
    out = add_length_targets(data, targets=range(10, 20), seed=3)
    assert out.column_names == ["prompt", "target_length"]
    for row in out:
        assert 10 <= row["target_length"] < 20
        assert row["prompt"][0]["content"].endswith(f" Think for {row['target_length']} tokens.")
    assert out["target_length"] == [
        r["target_length"] for r in add_length_targets(data.to_list(), range(10, 20), seed=3)
    ]


def test_thinkprune_stages_and_state():
    p = get_penalty("thinkprune", budgets=[4, 3, 2], stage_steps=[10, 20])
    lengths, correct = [2, 3, 4, 5], [1, 1, 1, 1]
    assert values(p, group(correct, lengths, step=0)) == [1, 1, 1, 0]
    assert values(p, group(correct, lengths, step=10)) == [1, 1, 0, 0]
    # the cap cut a response at the budget: it keeps the grade of its cut text (ThinkPrune grades it as it is)
    assert values(p, group([1, 1, 1], [2, 3, 4], [True, False, False], step=12)) == [1, 1, 0]
    assert p.state_dict() == {"stage": 1, "budget": 3}
    restored = get_penalty("thinkprune", budgets=[4, 3, 2], stage_steps=[10, 20])
    restored.load_state_dict(json.loads(json.dumps(p.state_dict())))
    assert values(restored, group(correct, lengths, step=5)) == [1, 1, 0, 0]  # the stage never goes back
    assert values(restored, group(correct, lengths, step=25)) == [1, 0, 0, 0]
    assert values(get_penalty("thinkprune", budgets=[3], stage_steps=[]), group(correct, lengths)) == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="does not fit"):
        restored.load_state_dict({"stage": 7})
    with pytest.raises(ValueError, match="one step per stage"):
        get_penalty("thinkprune", budgets=[4, 3], stage_steps=[1, 2])
    with pytest.raises(ValueError, match="must increase"):
        get_penalty("thinkprune", stage_steps=[20, 10])


def test_laser():
    texts = [GOOD, GOOD, GOOD, NO_THINK, NO_BOX, GOOD]
    g = group([1, 1, 0, 1, 0, 1], [100, 300, 100, 100, 100, 250], [True] * 5 + [False], budget=200, completions=texts)
    # +0.5 correct within the budget; -0.5 wrong; -1 without </think> or boxed answer, even if right; the cap (250)
    # cut the last one: over the target
    assert values(get_penalty("laser"), g) == [1.5, 1.0, -0.5, -1.0, -1.0, 1.0]
    assert values(get_penalty("laser", target_length=300), g)[1] == 1.5
    # only the length decides (released compute_length_reward_larse): a target at the cap takes in the cut response
    assert values(get_penalty("laser", target_length=250), g)[5] == 1.5
    plain = group([1, 0], [10, 10], completions=[])
    assert values(get_penalty("laser", think_end="", require_boxed=False), plain) == [1.5, -0.5]
    with pytest.raises(ValueError, match="group.completions"):
        get_penalty("laser")(plain)
    assert well_formatted("<think>a</think>\\boxed {1}", "</think>", True)
    assert not well_formatted("\\boxed{1}<think>a</think>", "</think>", True)  # the box must follow </think>


def test_laser_needs_its_last_box_closed():
    """A response cut inside its last box has no boxed answer (-1), even if an earlier box closed."""
    assert has_boxed_answer("\\boxed{3}") and has_boxed_answer("\\fbox{3}") and has_boxed_answer("\\boxed {3}")
    assert has_boxed_answer("so \\boxed{\\frac{1}{\\sqrt{x^{2}}}} done")  # any depth
    assert has_boxed_answer("\\boxed{\\{1, 2\\}}")  # escaped braces are not braces
    assert not has_boxed_answer("\\boxed{\\{1, 2\\}")
    assert not has_boxed_answer("\\boxed{3} or rather \\boxed{4")
    assert not has_boxed_answer("\\boxed{") and not has_boxed_answer("no box")
    g = group([1, 0, 0], [100, 100, 100], budget=200, completions=[GOOD, LAST_BOX_OPEN, "<think>a</think>\\boxed{4"])
    for name in ("laser", "laser_d", "laser_de"):
        assert values(get_penalty(name), g) == [1.5, -1.0, -1.0], name


def laser_d(**kwargs):
    return get_penalty("laser_d", grid=[100, 200, 300, 400], update_every=10, **kwargs)


def first_window(p):
    """Three groups of 3 at step 0 (targets: the budget, 1000), one per monitor band."""
    out = [
        values(p, group([1, 1, 1], [150, 250, 350], budget=1000, completions=[GOOD] * 3)),  # high
        values(p, group([1, 1, 0], [120, 150, 180], budget=1000, completions=[GOOD] * 3)),  # 2/3: medium (monitor)
        values(p, group([1, 0, 0], [90, 390, 450], budget=1000, completions=[GOOD] * 3)),  # 1/3: low (monitor)
    ]
    assert out == [[1.5] * 3, [1.5, 1.5, -0.5], [1.5, -0.5, -0.5]]


def test_laser_d_chooses_band_targets():
    p = laser_d()
    first_window(p)
    assert p.targets is None
    values(p, group([1, 1, 1], [150, 250, 350], budget=1000, completions=[GOOD] * 3, step=5))  # same window
    assert p.targets is None and p.window_total["high"] == 6
    # step 10: new window. With G = 3 a high prompt has >= 2 correct, medium >= 1, low >= 1.
    # high:   lengths 150 250 350 150 250 350 -> coverage at 200 = 2/6 (floor(2/6*2) = 0), at 300 = 4/6 (1) -> 300
    # medium: 120 150 180 -> coverage at 200 = 1 -> floor(1*1) = 1 -> 200
    # low:    90 390 450 -> at most 2/3 covered within the grid -> floor(2/3) = 0 -> no limit (None)
    out = values(p, group([1, 1, 0], [250, 350, 100], budget=1000, completions=[GOOD] * 3, step=10))
    assert p.targets == {"high": 300, "medium": 200, "low": None}
    assert out == [1.5, 1.0, -0.5]  # 2 of 3 correct: the high band for rewards (>= 2/3), target 300
    assert values(p, group([1, 0, 0], [190, 90, 90], completions=[GOOD] * 3, step=10))[0] == 1.5  # medium: 200
    assert values(p, group([1, 0, 0], [210, 90, 90], completions=[GOOD] * 3, step=10))[0] == 1.0
    assert values(p, group([0, 0, 0], [210, 90, 90], completions=[GOOD] * 3, step=10)) == [-0.5] * 3
    # the band of the logged budget is the rewards' band: 1 correct and boxed of 3 is medium, not high
    assert p.effective_budget(group([1, 1, 0], [90] * 3, completions=[GOOD, NO_BOX, GOOD], step=10)) == 200


def test_laser_d_band_without_a_qualifying_length_has_no_limit():
    """Released `_choose_target_length` falls back on the longest response of the batch being rewarded: no limit,
    not the longest length of the monitor window (450 here)."""
    p = laser_d()
    first_window(p)
    values(p, group([1, 1, 0], [250, 350, 100], budget=1000, completions=[GOOD] * 3, step=10))
    low = group([1, 0, 0, 0], [500, 90, 90, 90], completions=[GOOD] * 4, step=10)  # 1 of 4 correct: low band
    assert values(p, low) == [1.5, -0.5, -0.5, -0.5]
    assert p.effective_budget(low) == 500
    de = get_penalty("laser_de", grid=[100, 200, 300, 400], update_every=10)
    first_window(de)
    values(de, group([1, 1, 0], [250, 350, 100], budget=1000, completions=[GOOD] * 3, step=10))
    # wrong, boxed, not repetitive, longer than anything seen: not over a limit that does not exist
    assert values(de, group([0, 0, 0, 0], [600, 90, 90, 90], completions=[FRESH] + [GOOD] * 3, step=10)) == [-0.5] * 4


def test_laser_d_state_round_trip():
    p = laser_d()
    first_window(p)
    values(p, group([1, 1, 0], [250, 350, 100], budget=1000, completions=[GOOD] * 3, step=10))
    restored = laser_d()
    restored.load_state_dict(json.loads(json.dumps(p.state_dict())))
    assert restored.state_dict() == p.state_dict()
    later = [
        group([1, 1, 1], [120, 130, 140], completions=[GOOD] * 3, step=12),
        group([1, 0, 1], [220, 330, 440], completions=[GOOD] * 3, step=15),
        group([1, 1, 1], [150, 250, 350], completions=[GOOD] * 3, step=20),  # next update
        group([1, 1, 0], [150, 250, 350], completions=[GOOD] * 3, step=21),
    ]
    assert [values(p, g) for g in later] == [values(restored, g) for g in later]
    assert restored.state_dict() == p.state_dict() and p.targets["high"] == 200
    with pytest.raises(ValueError, match="grid"):
        get_penalty("laser_d").load_state_dict(p.state_dict())
    with pytest.raises(ValueError, match="malformed"):
        laser_d().load_state_dict({"grid": [100, 200, 300, 400]})


def test_laser_de_rewards_exploration():
    repetitive = "<think>" + "let me check that again " * 60 + "</think> \\boxed{2}"
    p = get_penalty("laser_de")  # before the first update the target is the budget
    g = group(
        [0, 0, 1, 0, 0, 0, 0],
        [500, 500, 100, 100, 600, 150, 500],
        [True, True, True, True, False, False, True],
        budget=200,
        completions=[FRESH, repetitive, GOOD, FRESH, FRESH, FRESH, NO_BOX],
    )
    # wrong + over target + not repetitive: -0.5 + 0.5; repetitive, under target or badly formatted: no bonus;
    # only the length decides, EOS or not: without EOS, 600 tokens are over the target and 150 are not
    assert values(p, g) == [0.0, -0.5, 1.5, -0.5, 0.0, -0.5, -1.0]
    assert repetition_ratio(repetitive, 8) > 0.9 and repetition_ratio(FRESH, 8) == 0.0
    assert repetition_ratio("too short", 8) == 0.0


# ---------------------------------------------------------------------------------------------------- properties
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("truncation", {}),
        ("cosine", {"max_length": 400}),
        ("kimi", {}),
        ("efficient", {}),
        ("soft_overlong", {"buffer": 100}),
        ("shorterbetter", {}),
        ("thinkprune", {"budgets": [300]}),
    ],
)
def test_correct_answers_never_gain_from_length(name, params):
    lengths = list(range(1, 420, 7))
    g = group([1.0] * len(lengths), lengths, budget=250, max_length=400)
    rewards = values(get_penalty(name, **params | ({"stage_steps": []} if name == "thinkprune" else {})), g)
    assert all(a >= b - 1e-6 for a, b in zip(rewards, rewards[1:], strict=False)), rewards


def generic_groups():
    texts = [GOOD, NO_BOX, GOOD, GOOD]
    kw = {"budget": 50, "max_length": 100, "prompt": {"target_length": 40}, "completions": texts}
    return {
        "mixed": group([1, 0, 1, 0], [10, 20, 60, 100], [True, True, True, False], **kw),
        "all correct": group([1, 1, 1, 1], [10, 20, 30, 40], **kw),
        "none correct": group([0, 0, 0, 0], [10, 20, 30, 40], **kw),
        "equal lengths": group([1, 0, 1, 0], [30, 30, 30, 30], **kw),
        "over the cap, no EOS": group([1, 1, 0, 0], [100, 100, 100, 100], [False] * 4, **kw),
    }


@pytest.mark.parametrize("name", BUILTIN_PENALTIES)
def test_every_penalty_is_finite_float32_and_json_state(name):
    params = {"buffer": 20} if name == "soft_overlong" else {}
    penalty = get_penalty(name, **params)
    assert isinstance(penalty, LengthPenalty) and penalty.name == name
    for g in generic_groups().values():
        out = penalty(g)
        assert out.dtype == torch.float32 and out.shape == (4,) and torch.isfinite(out).all()
    state = penalty.state_dict()
    assert json.loads(json.dumps(state)) == state
    restored = get_penalty(name, **params)
    restored.load_state_dict(json.loads(json.dumps(state)))
    assert restored.state_dict() == state


# ---------------------------------------------------------------------------------------------------- registry
def test_available_penalties_lists_every_builtin():
    names = available_penalties()
    assert names == sorted(names) and set(BUILTIN_PENALTIES) <= set(names)


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(ValueError, match=r"unknown penalty 'cosin'; available: cosine, efficient, .*truncation"):
        get_penalty("cosin")


def test_unknown_parameter_names_the_accepted_ones():
    with pytest.raises(ValueError, match=r"penalty 'cosine': unknown parameter Lmax; accepted: max_length=None, min"):
        get_penalty("cosine", Lmax=4000)
    with pytest.raises(ValueError, match=r"unknown parameters a, b; accepted: truncated_reward_scale=0.0"):
        get_penalty("truncation", a=1, b=2)
    with pytest.raises(ValueError, match=r"grid=4096..16384 step 1024"):
        get_penalty("laser_d", target=1)


def test_out_of_range_and_wrong_types():
    cases = [
        ("efficient", {"alpha": 1.5}, r"alpha=1.5 is out of range: allowed alpha >= 0.0 and alpha < 1.0"),
        ("soft_overlong", {"buffer": 0}, r"buffer=0 is out of range: allowed buffer >= 1"),
        ("thinkprune", {"budgets": [4000, -1], "stage_steps": [5]}, r"budgets\[1\]=-1 is out of range"),
        (
            "truncation",
            {"truncated_reward_scale": 2},
            r"truncated_reward_scale=2.0 is out of range: allowed .* <= 1.0",
        ),
        ("kimi", {"coef": "big"}, r"coef must be float, got 'big'"),
        ("cosine", {"max_length": 4000.5}, r"max_length must be int or None"),
        ("l1_max", {"variant": "v2"}, r"variant='v2' is not allowed: must be one of \('paper', 'released'\)"),
        ("laser", {"require_boxed": "yes"}, r"require_boxed must be bool"),
        ("laser_d", {"grid": [200, 100]}, r"grid must increase"),
        ("laser_d", {"grid": []}, r"grid needs at least 1 item"),
    ]
    for name, params, message in cases:
        with pytest.raises(ValueError, match=message):
            get_penalty(name, **params)


def test_parameters_from_yaml_or_json_are_coerced():
    assert get_penalty("kimi", coef=1).coef == 1.0 and isinstance(get_penalty("kimi", coef=1).coef, float)
    p = get_penalty("thinkprune", budgets=[4000.0, 2000], stage_steps=[5])
    assert p.budgets == (4000, 2000) and p.stage_steps == (5,)
    assert all(type(b) is int for b in p.budgets)
    assert get_penalty("cosine", max_length=4000.0).max_length == 4000
    assert type(get_penalty("cosine", max_length=4000.0).max_length) is int
    assert get_penalty("laser_d", grid=[100, 200]).grid == (100, 200)


def test_parameters_are_checked_when_the_penalty_is_built():
    """Built directly, without the registry, a penalty is checked and coerced just the same."""
    assert type(KimiPenalty(coef=1).coef) is float and ThinkPrunePenalty(budgets=[3], stage_steps=[]).budgets == (3,)
    with pytest.raises(ValueError, match=r"penalty 'truncation': truncated_reward_scale=1.5 is out of range"):
        TruncationPenalty(1.5)
    with pytest.raises(ValueError, match="min_correct <= max_correct"):
        CosinePenalty(min_correct=3.0)


def test_register_penalty_refuses_duplicates(clean_registry):
    class Mine(LengthPenalty):  # no parameters: LengthPenalty's dataclass is enough
        def __call__(self, group):
            return group.correctness.float()

    assert register_penalty("mine_test")(Mine) is Mine and Mine.name == "mine_test"
    register_penalty("mine_test")(Mine)  # the same class again: fine
    assert get_penalty("mine_test")(group([1, 0], [1, 1])).tolist() == [1.0, 0.0]

    class Other(Mine):
        pass

    with pytest.raises(ValueError, match=r"penalty 'mine_test' is already registered by .*Mine"):
        register_penalty("mine_test")(Other)
    with pytest.raises(ValueError, match="already registered"):
        register_penalty("cosine")(Other)
    with pytest.raises(ValueError, match=r"Mine is already registered as 'mine_test'"):
        register_penalty("another_name")(Mine)
    assert available_penalties().count("mine_test") == 1 and "another_name" not in available_penalties()
    with pytest.raises(TypeError, match="not a dler.penalties.LengthPenalty"):
        register_penalty("nope_test")(dict)
    with pytest.raises(ValueError, match="penalty name"):
        register_penalty("has space")


def test_register_penalty_takes_only_dataclass_penalties_named_by_the_registry(clean_registry):
    """One way to declare a penalty: dataclass fields for the parameters, the name from `register_penalty`."""

    class KeywordInit(LengthPenalty):
        def __init__(self, scale: float = 0.5):
            self.scale = scale

        def __call__(self, group):
            return group.correctness.float()

    class Undecorated(LengthPenalty):
        scale: float = 0.5

        def __call__(self, group):
            return group.correctness.float()

    @dataclass(eq=False)
    class Named(LengthPenalty):
        name = "named_test"

        def __call__(self, group):
            return group.correctness.float()

    with pytest.raises(TypeError, match=r"KeywordInit has parameters that are not dataclass fields \(__init__\)"):
        register_penalty("keyword_test")(KeywordInit)
    with pytest.raises(TypeError, match=r"\(scale\): decorate the class with @dataclass\(eq=False\)"):
        register_penalty("undecorated_test")(Undecorated)
    with pytest.raises(TypeError, match=r"sets name = 'named_test' itself"):
        register_penalty("named_test")(Named)
    assert not {"keyword_test", "undecorated_test", "named_test"} & set(available_penalties())

    @register_penalty("fields_test")
    @dataclass(eq=False)
    class Fields(Undecorated):
        scale: float = param(0.5, ge=0.0)
        label: ClassVar[str] = "not a parameter"

    assert get_penalty("fields_test", scale=2).scale == 2.0 and penalty_params(Fields) == {"scale": 0.5}


def test_docs_table_lists_every_penalty():
    """docs/penalties.md carries the table the code describes: regenerate it with penalties_table() on a change."""
    docs = (ROOT / "docs" / "penalties.md").read_text()
    rows = {line.split("`")[1]: line for line in penalties_table().splitlines() if line.startswith("| `")}
    for name in BUILTIN_PENALTIES:
        assert f"`{name}`" in docs and "arXiv" in rows[name]
        assert rows[name] in docs, f"docs/penalties.md: the row of {name} differs from penalties_table()"


# ---------------------------------------------------------------------------------------------------- plugins
def write_distribution(site: Path, name: str, entry_points: dict[str, str]) -> None:
    """A dist-info on `site` as pip would leave it: enough for importlib.metadata to find the entry points."""
    info = site / f"{name.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    lines = "\n".join(f"{key} = {value}" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[dler.penalties]\n{lines}\n")


def test_entry_point_plugin(tmp_path, monkeypatch, clean_registry, request):
    request.addfinalizer(lambda: sys.modules.pop("dler_example_plugin", None))
    package = ROOT / "tests" / "plugin_pkg"
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    write_distribution(tmp_path, project["name"], project["entry-points"]["dler.penalties"])
    shutil.copytree(package / "dler_example_plugin", tmp_path / "dler_example_plugin")  # as if installed
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "dler_example_plugin", raising=False)
    registry_module._plugins_loaded = False

    assert "example_half" in available_penalties()
    penalty = get_penalty("example_half", scale=0.25)
    assert type(penalty).__module__ == "dler_example_plugin" and penalty.name == "example_half"
    assert penalty(group([1, 1], [3, 9], budget=4)).tolist() == [1.0, 0.25]
    with pytest.raises(ValueError, match=r"scale=2.0 is out of range"):
        get_penalty("example_half", scale=2)
    assert any(row["name"] == "example_half" for row in describe_penalties())


def test_plugin_that_is_not_a_penalty_names_its_entry_point(tmp_path, monkeypatch, clean_registry):
    write_distribution(tmp_path, "dler-odd-plugin", {"odd_one": "json:dumps"})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry_module._plugins_loaded = False
    with pytest.raises(
        RuntimeError, match=r"entry point 'odd_one' = 'json:dumps'.*not a dler.penalties.LengthPenalty"
    ):
        available_penalties()


def test_broken_plugin_names_its_entry_point(tmp_path, monkeypatch, clean_registry):
    write_distribution(tmp_path, "dler-broken-plugin", {"broken_one": "dler_no_such_module:Penalty"})
    monkeypatch.syspath_prepend(str(tmp_path))
    registry_module._plugins_loaded = False
    with pytest.raises(
        RuntimeError, match=r"entry point 'broken_one' = 'dler_no_such_module:Penalty'.*failed to load"
    ):
        available_penalties()
    with pytest.raises(RuntimeError, match="broken_one"):
        get_penalty("not_a_builtin")
    assert get_penalty("kimi").coef == 0.4  # built-in names resolve without touching the plugins
