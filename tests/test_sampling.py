"""Dynamic-sampling decisions: group filtering, balancing across ranks, partial batches, the prompt stream."""

import pytest
import torch

from dler.sampling import (
    GroupRef,
    PromptStream,
    RoundScores,
    SamplingState,
    assign_groups,
    classify_groups,
    partial_quota,
)


def test_classify_groups():
    values = torch.tensor([1, 0, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 0.1, 0.1, 0.1, 0.1, -1, -1, -1, -1, 0, 0.1, 0, 0])
    signal = classify_groups(values, 4)
    assert signal.keep.tolist() == [True, False, False, False, False, True]
    assert signal.all_zero.tolist() == [False, True, False, False, True, False]
    assert signal.all_positive.tolist() == [False, False, True, True, False, False]


def test_assign_groups_keeps_local_groups_and_moves_surplus():
    # rank 0 kept 1 group, rank 1 kept 3; quota 2 each: one of rank 1's groups moves to rank 0
    assert assign_groups([1, 0, 1, 1], num_processes=2, quota=2) == [1, 0, 1, 0]
    assert assign_groups([0, 0, 1, 1], 2, 2) == [0, 0, 1, 1]  # balanced: nothing moves
    assert assign_groups([2, 2, 2, 2, 2, 2], 3, 2) == [2, 2, 0, 0, 1, 1]
    with pytest.raises(ValueError, match="cannot fill"):
        assign_groups([0, 1, 1], 2, 2)


def test_partial_quota_keeps_micro_batches_whole():
    assert partial_quota(num_kept=5, num_processes=2, group_size=4, steps_per_generation=2) == 2
    assert partial_quota(5, 2, group_size=2, steps_per_generation=4) == 2  # 2 groups x 2 = 4 samples, 4 steps
    assert partial_quota(3, 2, group_size=2, steps_per_generation=4) == 0  # 1 group x 2 samples < 4 steps
    assert partial_quota(1, 2, 4, 1) == 0


def test_prompt_stream_is_deterministic_resumable_and_covers_each_epoch():
    stream = PromptStream(10, seed=3)
    first = stream.take(7)
    state = stream.state_dict()
    rest = stream.take(13)
    assert sorted(first + rest[:3]) == list(range(10))  # one epoch is a permutation
    assert sorted(rest[3:13]) == list(range(10))
    resumed = PromptStream(10, seed=3)
    resumed.load_state_dict(state)
    assert resumed.take(13) == rest
    assert PromptStream(10, seed=3).take(7) == first
    assert PromptStream(5, seed=0, shuffle=False).take(7) == [0, 1, 2, 3, 4, 0, 1]
    with pytest.raises(ValueError, match="empty"):
        PromptStream(0, seed=0)


def ref(born, group, owner=0, rows=None):
    scores = RoundScores(*(torch.zeros(2) for _ in range(5)), rewards=torch.zeros(2, 1))
    return GroupRef(born, 0, group, owner, scores, rows)


def test_sampling_state_carries_evicts_counts_and_round_trips():
    state = SamplingState(seed=1, max_carry_age=1, skip_after=1, skip_exploration=0.5)
    state.generations = 1
    state.end_batch([ref(1, 5, rows={"completion_ids": [[1, 2]]}), ref(1, 6, owner=1)], 3, 8, 4, decay=0.5)
    assert (state.prompts_generated, state.prompts_trained, state.kept_fraction) == (8, 4, 3 / 8)
    state.generations = 3  # two batches later: past max_carry_age=1
    evicted, taken = state.take_carried(4)
    assert [r.group for r in evicted] == [5, 6] and taken == []
    state.generations = 4
    state.end_batch([ref(4, 7, rows={"completion_ids": [[3]]})], 1, 8, 4, decay=0.5)
    assert state.kept_fraction == 0.5 * 3 / 8 + 0.5 * 1 / 8  # the moving average folds the new batch in

    indices, skipped = state.draw(3, num_rows=5)
    state.record(indices, [False, True, False])
    copy = SamplingState(seed=1, max_carry_age=1, skip_after=1, skip_exploration=0.5)
    copy.load_state_dict(state.state_dict())
    copy.load_carry_state_dict(state.carry_state_dict())
    assert copy.state_dict() == state.state_dict() and repr(copy.carry_state_dict()) == repr(state.carry_state_dict())
    assert copy.draw(4, 5) == state.draw(4, 5)  # the same prompts, skips and exploration draws after a resume
    state.generations = copy.generations = 5
    assert [r.rows for r in copy.take_carried(2)[1]] == [{"completion_ids": [[3]]}]


def test_sampling_state_without_adaptive_rounds_keeps_no_average():
    state = SamplingState(seed=0)
    state.end_batch([ref(1, 0)], 4, 8, 4, decay=None)
    assert state.kept_fraction is None and len(state.carry) == 0  # max_carry_age 0: surplus is not kept
