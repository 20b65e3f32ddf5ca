"""Sharpe statistics of the admission gate: hand-computed values, PBO on noise and on a real edge,
purged / embargoed walk-forward splits."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from quantramp.trader import sharpe as S


def test_sharpe_is_mean_over_sample_std():
    # mean 2.5, sample std sqrt(5/3) = 1.290994
    assert S.sharpe([1.0, 2.0, 3.0, 4.0]) == pytest.approx(2.5 / math.sqrt(5 / 3), rel=1e-12)
    assert S.sharpe(np.zeros(10)) == 0.0
    assert math.isnan(S.sharpe(np.full(5, 0.01)))
    with pytest.raises(ValueError, match="at least 2"):
        S.sharpe([1.0])


def test_annualised():
    assert S.annualised(0.1, 252) == pytest.approx(0.1 * math.sqrt(252), rel=1e-12)
    with pytest.raises(ValueError):
        S.annualised(0.1, 0)


def test_sr_std_hand_computed():
    # normal: sqrt((1 + 0.5 * 0.01) / 100) = 0.1002497
    assert S.sr_std(0.1, 101) == pytest.approx(0.10024969, abs=1e-8)
    # skew -1, kurt 6: (1 + 0.2 + 5/4 * 0.04) / 50 = 0.025 -> 0.1581139
    assert S.sr_std(0.2, 51, skew=-1.0, kurt=6.0) == pytest.approx(math.sqrt(0.025), abs=1e-12)
    with pytest.raises(ValueError, match="per-period"):
        S.sr_std(5.0, 100, skew=1.0, kurt=1.0)  # an annualised SR with a wrong kurtosis


def test_psr():
    assert S.psr(0.07, 0.07, 500) == pytest.approx(0.5, abs=1e-12)
    # Phi(0.1 / 0.1002497) = Phi(0.997509) = 0.840741
    assert S.psr(0.1, 0.0, 101) == pytest.approx(0.840741, abs=1e-6)
    # negative skew and fat tails widen the error: lower PSR for a positive SR
    assert S.psr(0.1, 0.0, 101, skew=-1.0, kurt=8.0) < S.psr(0.1, 0.0, 101)


@pytest.mark.parametrize(
    "sr_ann, days",
    # review §3 table, daily normal returns, 95%, SR* = 0
    [(0.5, 2730), (1.0, 684), (1.5, 305), (2.0, 173), (3.0, 78)],
)
def test_min_trl_matches_the_review_table(sr_ann, days):
    assert S.min_trl(sr_ann / math.sqrt(252), 0.0, 0.0, 3.0, 0.05) == pytest.approx(days, abs=1.0)


def test_min_trl_is_where_psr_reaches_1_minus_alpha():
    sr = 0.08
    n = S.min_trl(sr, alpha=0.05)
    assert S.psr(sr, 0.0, n) == pytest.approx(0.95, abs=1e-9)
    assert S.min_trl(0.0, 0.0) == math.inf


@pytest.mark.parametrize("n, expected", [(10, 1.57), (100, 2.53), (1000, 3.26)])
def test_expected_max_sr_quoted_values(n, expected):
    assert S.expected_max_sr(n, 1.0) == pytest.approx(expected, abs=0.01)


def test_expected_max_sr_scales_with_sqrt_variance_and_is_zero_for_one_trial():
    assert S.expected_max_sr(1, 4.0) == 0.0
    assert S.expected_max_sr(10, 4.0) == pytest.approx(2 * S.expected_max_sr(10, 1.0), rel=1e-12)


def test_expected_max_sr_against_simulation():
    rng = np.random.default_rng(1)
    sim = rng.normal(size=(20_000, 100)).max(axis=1).mean()
    # the extreme-value approximation is within ~2% of the true E[max of 100 N(0,1)] = 2.5076
    assert S.expected_max_sr(100, 1.0) == pytest.approx(sim, rel=0.03)


def test_deflated_sharpe():
    rng = np.random.default_rng(7)
    r = rng.normal(0.05, 1.0, size=2000)
    one = S.deflated_sharpe(r, n_trials=1, var_trials_sr=0.01)
    assert one.sr0 == 0.0 and one.dsr == pytest.approx(one.psr, abs=1e-12)
    assert one.sr == pytest.approx(S.sharpe(r)) and one.n == 2000
    assert abs(one.skew) < 0.2 and one.kurt == pytest.approx(3.0, abs=0.3)
    many = S.deflated_sharpe(r, n_trials=100, var_trials_sr=0.05**2)
    assert many.sr0 == pytest.approx(2.5306 * 0.05, abs=1e-4)
    assert many.dsr < one.dsr
    # sr ~0.05, sr0 ~0.127, se ~0.0224: DSR = Phi(~-3.4), far below 0.95
    assert many.dsr < 0.01


def _noise_pbo(seed: int) -> float:
    return S.pbo(np.random.default_rng(seed).normal(size=(1000, 10)), n_blocks=10)


def test_pbo_of_noise_is_about_a_half():
    # one matrix's PBO varies a lot (sd ~0.2 over seeds); the mean of 30 is within +-0.1 of 0.5
    vals = [_noise_pbo(seed) for seed in range(30)]
    assert np.mean(vals) == pytest.approx(0.5, abs=0.1)


def test_pbo_of_a_real_persistent_edge_is_near_zero():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(3000, 20))
    m[:, 5] += 0.2  # per-period SR 0.2 in every block
    assert S.pbo(m) < 0.02


def test_pbo_of_a_trial_that_reverses_is_one():
    # S = 2: two splits. Trial 0 wins block 0 and loses block 1, trial 1 the opposite, so the
    # in-sample winner is always the out-of-sample loser: omega = 1/3, lambda < 0 in both splits
    up = np.array([1.0, 2.0, 1.5, 2.5])
    m = np.column_stack([np.r_[up, -up], np.r_[-up, up]])
    assert S.pbo(m, n_blocks=2) == 1.0
    assert S.pbo(m[:, ::-1], n_blocks=2) == 1.0
    # and the other way round: a consistent winner
    m2 = np.column_stack([np.r_[up, up], np.r_[-up, -up]])
    assert S.pbo(m2, n_blocks=2) == 0.0


def test_pbo_counts_an_out_of_sample_median_as_overfit():
    # N = 3, S = 2: each half's winner is the middle of three out of sample, rank 2:
    # omega = 2 / (N + 1) = 0.5, lambda = 0, which counts (lambda <= 0)
    wiggle = np.array([0.0, 0.1, 0.05, 0.15])
    a = np.r_[3 + wiggle, 2 + wiggle]
    b = np.r_[2 + wiggle, 3 + wiggle]
    c = np.r_[1 + wiggle, 1 + wiggle]
    assert S.pbo(np.column_stack([a, b, c]), n_blocks=2) == 1.0
    # with a fourth, always-worst trial the winner ranks 3 of 4: omega = 0.6, not overfit
    d = np.r_[0.5 + wiggle, 0.5 + wiggle]
    assert S.pbo(np.column_stack([a, b, c, d]), n_blocks=2) == 0.0


def test_pbo_is_fast_for_12870_splits():
    m = np.random.default_rng(3).normal(size=(3000, 20))
    S.pbo(m[:100])  # warm up
    t0 = time.perf_counter()
    S.pbo(m, n_blocks=16)
    assert time.perf_counter() - t0 < 0.5


def test_pbo_validates_inputs():
    m = np.zeros((100, 4))
    with pytest.raises(ValueError, match="even"):
        S.pbo(m, n_blocks=5)
    with pytest.raises(ValueError, match="n_blocks"):
        S.pbo(np.zeros((10, 4)), n_blocks=16)
    with pytest.raises(ValueError, match="N >= 2"):
        S.pbo(np.zeros((100, 1)))
    with pytest.raises(ValueError, match="NaN"):
        S.pbo(np.full((100, 3), np.nan))


def _check_splits(n, n_folds, purge, embargo, min_train):
    folds = list(S.walk_forward_splits(n, n_folds, purge=purge, embargo=embargo, min_train=min_train))
    assert len(folds) == n_folds
    tests = np.concatenate([te for _, te in folds])
    np.testing.assert_array_equal(tests, np.arange(min_train, n))  # contiguous, in order, cover the rest
    ends = []
    for train, test in folds:
        start = int(test[0])
        assert np.all(np.diff(test) == 1)
        assert train.size > 0
        # purge: no training row within `purge` rows before the test block (nor after its start)
        assert np.all(train < start - purge)
        # embargo: no training row within `embargo` rows after an earlier test block
        for e in ends:
            assert not np.any((train >= e) & (train < e + embargo))
        # nothing else is dropped: the training set is exactly what purge and embargo leave
        expected = [i for i in range(start - purge) if not any(e <= i < e + embargo for e in ends)]
        np.testing.assert_array_equal(train, expected)
        ends.append(int(test[-1]) + 1)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(20, 400),
    n_folds=st.integers(1, 6),
    purge=st.integers(0, 5),
    embargo=st.integers(0, 12),
    frac=st.floats(0.2, 0.6),
)
def test_walk_forward_splits_purge_and_embargo(n, n_folds, purge, embargo, frac):
    min_train = max(purge + 1, int(n * frac))
    assume(n - min_train >= n_folds)
    _check_splits(n, n_folds, purge, embargo, min_train)


def test_walk_forward_splits_hand_example():
    # 20 rows, 3 folds after 8 training rows: test blocks [8,12), [12,16), [16,20)
    folds = list(S.walk_forward_splits(20, 3, purge=1, embargo=2, min_train=8))
    assert [te.tolist() for _, te in folds] == [[8, 9, 10, 11], [12, 13, 14, 15], [16, 17, 18, 19]]
    assert folds[0][0].tolist() == list(range(7))  # row 7 purged (its label is row 8's bar)
    assert folds[1][0].tolist() == list(range(11))  # rows 0..10; 11 purged
    # rows 12, 13 embargoed after the first test block (ends at 12); 15 purged
    assert folds[2][0].tolist() == list(range(12)) + [14]


def test_walk_forward_splits_validate():
    with pytest.raises(ValueError, match="min_train"):
        list(S.walk_forward_splits(20, 2, purge=5, min_train=5))
    with pytest.raises(ValueError, match="too few"):
        list(S.walk_forward_splits(10, 5, purge=1, min_train=8))
    with pytest.raises(ValueError, match=">= 0"):
        list(S.walk_forward_splits(10, 2, purge=-1))
