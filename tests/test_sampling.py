"""Dynamic-sampling decisions: group filtering, balancing across ranks, partial batches, the prompt stream."""

import pytest
import torch

from dler.batching import check_keys, concat_rows, take_rows
from dler.sampling import PromptStream, assign_groups, classify_groups, partial_quota


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


def test_take_and_concat_rows_repad_each_side():
    pad = 9
    a = {
        "prompt_ids": torch.tensor([[pad, 1, 2], [3, 4, 5]]),
        "prompt_mask": torch.tensor([[0, 1, 1], [1, 1, 1]]),
        "completion_ids": torch.tensor([[6, pad, pad, pad], [7, 8, pad, pad]]),
        "completion_mask": torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0]]),
        "old_per_token_logps": torch.tensor([[-1.0, 0, 0, 0], [-2.0, -3.0, 0, 0]]),
        "advantages": torch.zeros(2),
    }
    first = take_rows(a, slice(0, 1))  # trimmed to its own widths
    assert first["prompt_ids"].tolist() == [[1, 2]] and first["completion_ids"].tolist() == [[6]]
    second = take_rows(a, slice(1, 2))
    joined = concat_rows([first, second], pad_token_id=pad)
    assert joined["prompt_ids"].tolist() == [[pad, 1, 2], [3, 4, 5]]
    assert joined["prompt_mask"].tolist() == [[0, 1, 1], [1, 1, 1]]
    assert joined["completion_ids"].tolist() == [[6, pad], [7, 8]]
    assert joined["completion_mask"].tolist() == [[1, 0], [1, 1]]
    assert joined["old_per_token_logps"].tolist() == [[-1.0, 0.0], [-2.0, -3.0]]
    assert concat_rows([first, second], pad, pad_to_multiple_of=4)["completion_ids"].shape == (2, 4)
    with pytest.raises(ValueError, match="pixel_values"):
        check_keys({**a, "pixel_values": torch.zeros(1)})
