"""Generating less: round sizing, the carry buffer, the skip history. Pure functions, no model."""

import json
import math

import pytest

from dler.round_sizing import later_round_prompts, prompts_for, round_prompts, update_kept_fraction
from dler.sampling import CarryBuffer, PromptStream, SkipHistory, draw_prompts


def test_kept_fraction_moving_average():
    assert update_kept_fraction(None, kept=4, generated=16, decay=0.8) == 0.25  # first observation taken as is
    assert update_kept_fraction(0.25, kept=8, generated=16, decay=0.8) == pytest.approx(0.8 * 0.25 + 0.2 * 0.5)
    assert update_kept_fraction(0.25, kept=8, generated=16, decay=0.0) == 0.5  # decay 0: last step only
    assert update_kept_fraction(0.3, kept=0, generated=0, decay=0.8) == 0.3  # nothing generated: unchanged


def test_prompts_for_hand_numbers():
    assert prompts_for(16, 0.25, confidence=0.0) == pytest.approx(64)  # expected count = need
    # z = 1: sqrt(n) = (sqrt(.1875) + sqrt(.1875 + 16)) / 0.5 = 8.913 -> n = 79.44; 79.44 * .25 - sqrt(79.44 * .1875) = 16
    n = prompts_for(16, 0.25, confidence=1.0)
    assert n == pytest.approx(79.44, abs=0.01)
    assert n * 0.25 - math.sqrt(n * 0.25 * 0.75) == pytest.approx(16)
    assert prompts_for(16, 1.0, confidence=1.0) == pytest.approx(16)  # everything kept: no margin needed
    assert prompts_for(16, 0.0, confidence=1.0) == math.inf
    assert prompts_for(0, 0.3, confidence=1.0) == 0


def test_round_prompts_sized_capped_and_never_below_the_sampler():
    # 2 ranks x 8 prompts; need 16 groups at f = 0.25, z = 0: 64 prompts = 32 per rank
    assert round_prompts(16, base=8, num_processes=2, kept_fraction=0.25, max_factor=8, confidence=0) == 32
    assert round_prompts(16, 8, 2, 0.25, max_factor=3, confidence=0) == 24  # capped at 3 x 8
    assert round_prompts(16, 8, 2, 0.0, max_factor=4, confidence=0) == 32  # nothing kept: the cap
    assert round_prompts(16, 8, 2, 0.25, 8, confidence=1) == 40  # 79.44 / 2 rounded up
    assert round_prompts(16, 8, 2, None, 4, 1) == 8  # not yet observed: the sampler's batch
    assert round_prompts(4, 8, 2, 0.9, 4, 1) == 8  # need covered by the sampler's batch: never smaller
    assert round_prompts(0, 8, 2, 0.5, 4, 1) == 8  # carried groups cover the need: still one plain round


def test_later_round_in_the_first_step_is_sized_from_the_first_round_alone():
    # 1 rank, sampler's round 8 prompts; the first round kept 2 of 8 (f = 0.25): 6 groups missing
    later = dict(base=8, num_processes=1, kept_fraction=None, kept=2, generated=8, decay=0.8, max_factor=8)
    assert later_round_prompts(6, **later, confidence=0) == 24  # 6 / 0.25
    # z = 1: sqrt(n) = (sqrt(.1875) + sqrt(.1875 + 6)) / 0.5 = 5.841 -> n = 34.12 -> 35 (34 would keep 5.98 - sd)
    assert later_round_prompts(6, **later, confidence=1) == 35
    assert 35 * 0.25 - math.sqrt(35 * 0.1875) >= 6 > 34 * 0.25 - math.sqrt(34 * 0.1875)
    assert later_round_prompts(6, **{**later, "max_factor": 2}, confidence=0) == 16  # capped at 2 x 8
    # nothing kept yet in the run's first step: the estimate is 0, so the cap (4 x 8), not the paper's 8
    assert later_round_prompts(8, 8, 1, None, kept=0, generated=8, decay=0.8, max_factor=4, confidence=1) == 32
    # 2 ranks x 8 prompts, 4 of 16 groups kept: 12 missing at 0.25 = 48 prompts = 24 per rank
    assert later_round_prompts(12, 8, 2, None, kept=4, generated=16, decay=0.8, max_factor=8, confidence=0) == 24
    # 1 of 16 kept: 15 missing at 1/16 = 240 prompts, 120 per rank: capped at 4 x 8
    assert later_round_prompts(15, 8, 2, None, kept=1, generated=16, decay=0.8, max_factor=4, confidence=0) == 32


def test_later_round_folds_the_step_into_the_moving_average_and_never_goes_below_the_sampler():
    # average 0.5, this step 2 of 8 kept (0.25): 0.8 * 0.5 + 0.2 * 0.25 = 0.45; 6 missing / 0.45 = 13.3 -> 14
    assert later_round_prompts(6, 8, 1, 0.5, kept=2, generated=8, decay=0.8, max_factor=8, confidence=0) == 14
    # decay 0: this step alone, as in the first step: 6 / 0.25 = 24
    assert later_round_prompts(6, 8, 1, 0.5, kept=2, generated=8, decay=0.0, max_factor=8, confidence=0) == 24
    # nothing kept this step with an average: 0.8 * 0.5 = 0.4, 6 / 0.4 = 15 (not the cap)
    assert later_round_prompts(6, 8, 1, 0.5, kept=0, generated=8, decay=0.8, max_factor=8, confidence=0) == 15
    # one group missing at a high fraction: the paper's round, never fewer prompts
    assert later_round_prompts(1, 8, 1, 0.9, kept=7, generated=8, decay=0.8, max_factor=4, confidence=1) == 8
    # the same sizing as the first round at the folded fraction (one rule, not two)
    folded = update_kept_fraction(0.3, 5, 40, 0.8)
    assert later_round_prompts(9, 8, 2, 0.3, 5, 40, 0.8, 4, 1) == round_prompts(9, 8, 2, folded, 4, 1)


def test_carry_buffer_takes_oldest_first_and_evicts_by_age():
    buffer = CarryBuffer(max_age=2)
    buffer.put("a1", born=1)
    buffer.put("a2", born=1)
    buffer.put("b", born=2)
    buffer.put("z", born=0)  # an older leftover put back: still first
    assert [c.item for c in buffer.items] == ["z", "a1", "a2", "b"]
    assert [c.item for c in buffer.evict(now=3)] == ["z"]  # age 3 > 2
    assert buffer.evict(now=3) == [] and len(buffer) == 3
    taken = buffer.take(2)
    assert [(c.item, 3 - c.born) for c in taken] == [("a1", 2), ("a2", 2)]  # ages at batch 3
    assert [c.item for c in buffer.take(5)] == ["b"] and len(buffer) == 0


def test_skip_history_skips_after_consecutive_no_signal_and_resets_on_signal():
    history = SkipHistory(skip_after=2, exploration=0.1, seed=0)
    history.record(7, signal=False)
    assert not history.skippable(7) and history.draw(7)  # one group without signal is not enough
    history.record(7, signal=False)
    assert history.skippable(7) and history.num_skippable() == 1
    history.record(7, signal=True)  # regained signal: counted from zero again
    assert not history.skippable(7) and history.num_skippable() == 0
    history.record(7, signal=False)
    assert not history.skippable(7)


def test_skipped_prompt_is_still_drawn_at_the_exploration_floor():
    history = SkipHistory(skip_after=1, exploration=0.1, seed=3)
    for key in range(50):
        history.record(key, signal=False)
    draws = [history.draw(key) for _ in range(200) for key in range(50)]
    assert sum(draws) / len(draws) == pytest.approx(0.1, abs=0.01)  # 10,000 draws: sd 0.003
    assert all(any(history.draw(key) for _ in range(200)) for key in range(50))  # none excluded forever
    assert SkipHistory(1, 1.0, 0).draw(5)


def test_skip_history_state_round_trips_through_json_and_replays_the_same_draws():
    history = SkipHistory(skip_after=1, exploration=0.3, seed=1)
    for key in (1, 2, 3):
        history.record(key, signal=False)
    [history.draw(k) for k in (1, 2, 3, 1)]
    restored = SkipHistory(skip_after=1, exploration=0.3, seed=1)
    restored.load_state_dict(json.loads(json.dumps(history.state_dict())))
    assert restored.state_dict() == history.state_dict()
    assert [restored.draw(k) for k in (1, 2, 3) * 20] == [history.draw(k) for k in (1, 2, 3) * 20]
    with pytest.raises(ValueError, match="exploration"):
        SkipHistory(skip_after=1, exploration=0.0, seed=0)


def test_draw_prompts_passes_over_and_counts_skipped_prompts():
    stream = PromptStream(6, seed=0, shuffle=False)
    history = SkipHistory(skip_after=1, exploration=1e-9, seed=0)  # effectively never explores
    history.record(1, signal=False)
    history.record(2, signal=False)
    assert draw_prompts(stream, history, 4) == ([0, 3, 4, 5], 2)
    assert draw_prompts(stream, None, 2) == ([0, 1], 0)  # no history: the plain stream
