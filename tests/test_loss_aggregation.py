"""benchmarks/loss_aggregation.py: verl's token-mean per micro-batch against TRL 1.16's dapo, weights by hand."""

import importlib.util
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "loss_aggregation.py"


def _load():
    spec = importlib.util.spec_from_file_location("loss_aggregation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


LA = _load()


def total(lengths, weights):
    return float((np.asarray(lengths) * weights).sum())


def test_fixed_micro_batches_by_hand():
    # 2 ranks, micro-batch 2, 8 sequences -> B = 4 per rank, gradient accumulation 4 / 2 = 2.
    # rank 0: [1, 3 | 2, 2]   rank 1: [4, 4 | 1, 1]
    # token weight = (1 / ranks) * (1 / accumulation) / tokens in the micro-batch = 1 / (4 * T_m)
    #   rank 0, mb 0: T = 1 + 3 = 4 -> 1/16     rank 0, mb 1: T = 2 + 2 = 4 -> 1/16
    #   rank 1, mb 0: T = 4 + 4 = 8 -> 1/32     rank 1, mb 1: T = 1 + 1 = 2 -> 1/8
    # check: rank 0 holds 8 tokens x 1/16 = 1/2; rank 1 holds 8/32 + 2/8 = 1/2; total 1.
    # TRL dapo: 18 tokens in the update -> 1/18 each, so verl / TRL = 18/16, 18/16, 18/32, 18/8.
    lengths = [1, 3, 2, 2, 4, 4, 1, 1]
    w = LA.verl_token_weights(lengths, num_ranks=2, micro_batch_size=2)
    expected = [Fraction(1, 16)] * 4 + [Fraction(1, 32)] * 2 + [Fraction(1, 8)] * 2
    np.testing.assert_allclose(w, [float(f) for f in expected], rtol=1e-12)
    t = LA.trl_dapo_token_weights(lengths)
    np.testing.assert_allclose(t, 1 / 18, rtol=1e-12)
    np.testing.assert_allclose(w / t, [1.125, 1.125, 1.125, 1.125, 0.5625, 0.5625, 2.25, 2.25], rtol=1e-12)
    # per-sequence totals (sum over the sequence's tokens): the 4-token responses of rank 1 drop from 4/18 to 1/8,
    # the 1-token ones rise from 1/18 to 1/8.
    np.testing.assert_allclose(np.asarray(lengths) * w, [1 / 16, 3 / 16, 1 / 8, 1 / 8, 1 / 8, 1 / 8, 1 / 8, 1 / 8])
    assert total(lengths, w) == pytest.approx(1.0)
    assert total(lengths, t) == pytest.approx(1.0)


def test_one_micro_batch_per_rank_is_a_per_rank_token_mean():
    # micro-batch = whole rank: rank 0 [1, 3] (4 tokens), rank 1 [2, 6] (8 tokens); weight = (1/2) / T_rank
    w = LA.verl_token_weights([1, 3, 2, 6], num_ranks=2, micro_batch_size=2)
    np.testing.assert_allclose(w, [1 / 8, 1 / 8, 1 / 16, 1 / 16])


def test_dynamic_micro_batches_by_hand():
    # 2 ranks x 6 sequences, no prompt tokens, token budget 10 per micro-batch.
    # rank 0 [5, 1, 1, 1, 1, 1]: 10 tokens -> ceil(10/10) = 1 micro-batch on its own;
    # rank 1 [3, 3, 3, 3, 3, 3]: 18 tokens -> ceil(18/10) = 2. Every rank runs the max, 2.
    # balanced cuts: rank 0 {5} | {1, 1, 1, 1, 1} (5 / 5 tokens); rank 1 {3, 3, 3} | {3, 3, 3} (9 / 9).
    # token weight = (1 / 2 ranks) * (n_m / 6) / T_m:
    #   {5}: (1/2)(1/6)/5 = 1/60     {1 x 5}: (1/2)(5/6)/5 = 1/12     {3 x 3}: (1/2)(3/6)/9 = 1/36
    # check: 5/60 + 5/12 + 18/36 = 1/12 + 5/12 + 1/2 = 1.  TRL: 28 tokens -> 1/28 each.
    # verl / TRL: the long response 28/60 = 0.467, the short ones 28/12 = 2.333, rank 1 28/36 = 0.778.
    lengths = [5, 1, 1, 1, 1, 1, 3, 3, 3, 3, 3, 3]
    ids = LA.verl_dynamic_micro_batches(lengths, num_ranks=2, max_token_len=10)
    assert len(set(ids[:6])) == 2 and len(set(ids[6:])) == 2
    assert len(set(ids[1:6])) == 1 and ids[0] != ids[1]
    w = LA.verl_dynamic_token_weights(lengths, num_ranks=2, max_token_len=10)
    np.testing.assert_allclose(w, [1 / 60] + [1 / 12] * 5 + [1 / 36] * 6, rtol=1e-12)
    np.testing.assert_allclose(w / LA.trl_dapo_token_weights(lengths), [28 / 60] + [28 / 12] * 5 + [28 / 36] * 6)
    assert total(lengths, w) == pytest.approx(1.0)


def test_dynamic_budget_counts_prompt_tokens():
    # one rank, responses [6, 2], budget 8: 8 tokens fit one micro-batch -> plain token mean, 1/8 each.
    # with 1 prompt token each the rank holds 10 tokens -> 2 micro-batches {6} | {2}:
    #   (1/2)/6 = 1/12 and (1/2)/2 = 1/4  (6/12 + 2/4 = 1).
    np.testing.assert_allclose(LA.verl_dynamic_token_weights([6, 2], 1, 8), [1 / 8, 1 / 8])
    np.testing.assert_allclose(LA.verl_dynamic_token_weights([6, 2], 1, 8, prompt_lengths=[1, 1]), [1 / 12, 1 / 4])
    with pytest.raises(ValueError, match="exceeds"):
        LA.verl_dynamic_token_weights([6, 2], 1, 8, prompt_lengths=[3, 0])


@pytest.mark.parametrize("seed", range(5))
def test_weights_sum_to_one(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 4001, size=256)
    prompts = rng.integers(30, 300, size=256)
    for w in (
        LA.verl_token_weights(lengths, num_ranks=8, micro_batch_size=4),
        LA.verl_token_weights(lengths, num_ranks=4, micro_batch_size=64),
        LA.verl_dynamic_token_weights(lengths, num_ranks=8, max_token_len=16384, prompt_lengths=prompts),
        LA.verl_dynamic_token_weights(lengths, num_ranks=16, max_token_len=4400),
        LA.trl_dapo_token_weights(lengths),
    ):
        assert w.shape == lengths.shape and np.all(w > 0)
        assert total(lengths, w) == pytest.approx(1.0, abs=1e-12)


def test_equal_lengths_give_identical_weights():
    lengths = np.full(64, 777)
    trl = LA.trl_dapo_token_weights(lengths)
    np.testing.assert_allclose(trl, 1 / (64 * 777))
    for w in (
        LA.verl_token_weights(lengths, num_ranks=4, micro_batch_size=2),
        LA.verl_token_weights(lengths, num_ranks=1, micro_batch_size=1),
        LA.verl_dynamic_token_weights(lengths, num_ranks=4, max_token_len=2000, prompt_lengths=np.full(64, 50)),
    ):
        np.testing.assert_allclose(w, trl, rtol=1e-12)


def test_largest_differencing_partition():
    assert sorted(LA.largest_differencing_partition([5, 1, 1, 1, 1, 1], 2)) == [[0], [1, 2, 3, 4, 5]]
    rng = np.random.default_rng(0)
    values = rng.integers(100, 5000, size=512)
    parts = LA.largest_differencing_partition(values, 8, equal_size=True)
    assert sorted(i for p in parts for i in p) == list(range(512))
    assert all(len(p) == 64 for p in parts)
    sums = [int(values[p].sum()) for p in parts]
    assert max(sums) - min(sums) < 0.01 * np.mean(sums)
    parts = LA.largest_differencing_partition(values[:16], 3)
    assert len(parts) == 3 and all(parts) and sorted(i for p in parts for i in p) == list(range(16))


def test_dler_update_layout_gives_each_rank_the_same_count_per_update():
    rng = np.random.default_rng(1)
    effective = rng.integers(100, 5000, size=64)
    updates = LA.dler_update_layout(effective, num_ranks=4, num_updates=2)
    assert len(updates) == 2 and all(u.size == 32 for u in updates)
    assert sorted(np.concatenate(updates).tolist()) == list(range(64))
    # rank-major: rank r of update u is updates[u][r*8:(r+1)*8]; ranks' totals over both updates are balanced
    per_rank = [sum(int(effective[u[r * 8 : (r + 1) * 8]].sum()) for u in updates) for r in range(4)]
    assert max(per_rank) - min(per_rank) < 0.05 * np.mean(per_rank)


def test_bad_layouts_raise():
    with pytest.raises(ValueError, match="ranks"):
        LA.verl_token_weights([1, 2, 3], num_ranks=2, micro_batch_size=1)
    with pytest.raises(ValueError, match="multiple"):
        LA.verl_token_weights([1, 2, 3, 4, 5, 6], num_ranks=2, micro_batch_size=2)
    with pytest.raises(ValueError, match="positive"):
        LA.trl_dapo_token_weights([3, 0])


def test_weighted_quantiles():
    values, weights = np.array([3.0, 1.0, 2.0]), np.array([1.0, 1.0, 2.0])  # 1, 2, 2, 3
    assert LA.weighted_quantiles(values, weights, [0.0, 0.25, 0.5, 0.75, 1.0]) == [1.0, 1.0, 2.0, 2.0, 3.0]


def test_script_help_and_quick_run():
    out = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "--length-model" in out.stdout
    quick = [sys.executable, str(SCRIPT), "--seed", "3", "--ranks", "8", "--prompts-per-update", "8"]
    out = subprocess.run(quick, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for text in ("length model 'early'", "length model 'late'", "median", "differs by more than 10%", "truncated"):
        assert text in out.stdout
    out = subprocess.run(
        [*quick, "--length-model", "late", "--micro-batch-size", "4"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "fixed micro-batches of 4" in out.stdout and "'early'" not in out.stdout
