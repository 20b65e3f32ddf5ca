"""Sharpe-ratio statistics for admitting a model on its training evidence (pure: numpy + scipy).

Notation and units. ``SR`` is the **per-period** Sharpe ratio (mean / standard deviation of the
per-period returns, no risk-free rate, not annualised) unless a name says ``annualised``;
``skew`` is the sample skewness gamma_3 and ``kurt`` the **non-excess** kurtosis gamma_4 (normal =
3); ``n`` is the number of returns. Every function here takes and returns per-period SRs;
:func:`annualised` converts for display only.

Sources (the formulas follow these papers; they were cross-checked against independent
implementations and R PerformanceAnalytics, see reviews/statistical-judgement.md §3):

- Lo, "The Statistics of Sharpe Ratios", Financial Analysts Journal 58(4) 2002, and Mertens,
  "Comments on variance of the IID estimator in Lo (2002)", 2002: the standard error of SR.
- Bailey & López de Prado, "The Sharpe Ratio Efficient Frontier", Journal of Risk 15(2) 2012
  (SSRN 1821643): PSR and MinTRL.
- Bailey & López de Prado, "The Deflated Sharpe Ratio: Correcting for Selection Bias, Backtest
  Overfitting and Non-Normality", Journal of Portfolio Management 40(5) 2014: expected maximum SR
  of N trials and DSR.
- Bailey, Borwein, López de Prado & Zhu, "The Probability of Backtest Overfitting", Journal of
  Computational Finance 20(4) 2017 (SSRN 2326253): PBO by combinatorially symmetric
  cross-validation (CSCV).
- López de Prado, "Advances in Financial Machine Learning", Wiley 2018, ch. 7: purging and
  embargo.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Iterator

import numpy as np
from scipy import stats

#: Euler–Mascheroni constant
EULER_GAMMA = 0.5772156649015329


def _returns_1d(returns) -> np.ndarray:
    r = np.asarray(returns, dtype=float)
    if r.ndim != 1:
        raise ValueError(f"returns must be a 1-D array of per-period returns, got shape {r.shape}")
    if not np.isfinite(r).all():
        raise ValueError("returns contain NaN or infinite values; drop or fill them first")
    return r


def sharpe(returns) -> float:
    """Per-period Sharpe ratio of ``returns`` (shape (n,), per-period simple returns, n >= 2):
    mean / standard deviation (ddof=1). No risk-free rate, not annualised.

    A constant series has no defined SR: 0.0 if it is all zeros (no position, no risk), NaN
    otherwise.
    """
    r = _returns_1d(returns)
    if r.size < 2:
        raise ValueError(f"the Sharpe ratio needs at least 2 returns, got {r.size}")
    sd = float(np.std(r, ddof=1))
    mean = float(np.mean(r))
    if sd == 0.0:
        return 0.0 if mean == 0.0 else math.nan
    return mean / sd


def annualised(sr: float, periods_per_year: float) -> float:
    """Annualised SR from a per-period SR: ``sr * sqrt(periods_per_year)`` (i.i.d. returns)."""
    if not periods_per_year > 0:
        raise ValueError(f"periods_per_year must be > 0, got {periods_per_year!r}")
    return float(sr) * math.sqrt(periods_per_year)


def moments(returns) -> tuple[float, float]:
    """(skewness gamma_3, non-excess kurtosis gamma_4) of ``returns`` (shape (n,)), the biased
    moment estimators scipy uses by default; (0, 3) for a constant series."""
    r = _returns_1d(returns)
    if r.size < 2 or float(np.std(r)) == 0.0:
        return 0.0, 3.0
    return float(stats.skew(r)), float(stats.kurtosis(r, fisher=False))


def _sr_var_term(sr: float, skew: float, kurt: float) -> float:
    v = 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr
    if not v > 0:
        raise ValueError(
            f"1 - skew*SR + (kurt-1)/4*SR^2 = {v:.4g} is not positive for SR={sr:.4g}, skew={skew:.4g}, "
            f"kurt={kurt:.4g}: pass per-period (not annualised) SR and non-excess kurtosis"
        )
    return v


def sr_std(sr: float, n: int, skew: float = 0.0, kurt: float = 3.0) -> float:
    """Standard error of a per-period SR estimated from ``n`` returns (Lo 2002 / Mertens 2002):

    ``sqrt((1 - skew*SR + (kurt - 1)/4 * SR^2) / (n - 1))``, kurt non-excess (normal = 3).
    Per-period units, like ``sr``.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2 returns, got {n}")
    return math.sqrt(_sr_var_term(sr, skew, kurt) / (n - 1))


def psr(sr: float, sr_star: float, n: int, skew: float = 0.0, kurt: float = 3.0) -> float:
    """Probabilistic Sharpe Ratio (Bailey & López de Prado 2012): the probability that the true
    per-period SR exceeds ``sr_star`` given the estimate ``sr`` from ``n`` returns with these
    moments, ``Phi((sr - sr_star) / sr_std(sr, n, skew, kurt))``. Both SRs per period. In [0, 1].
    """
    return float(stats.norm.cdf((sr - sr_star) / sr_std(sr, n, skew, kurt)))


def min_trl(sr: float, sr_star: float = 0.0, skew: float = 0.0, kurt: float = 3.0, alpha: float = 0.05) -> float:
    """Minimum Track Record Length (Bailey & López de Prado 2012), in periods (the unit of the
    per-period ``sr``): the number of returns needed for PSR(sr_star) >= 1 - alpha,

    ``1 + (1 - skew*SR + (kurt-1)/4*SR^2) * (z_{1-alpha} / (SR - SR*))^2``.

    ``inf`` when sr <= sr_star (no track record proves it).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if sr <= sr_star:
        return math.inf
    z = float(stats.norm.ppf(1.0 - alpha))
    return 1.0 + _sr_var_term(sr, skew, kurt) * (z / (sr - sr_star)) ** 2


def expected_max_sr(n_trials: int, var_sr: float) -> float:
    """Expected maximum of ``n_trials`` independent SR estimates whose true SR is 0 and whose
    variance across trials is ``var_sr`` (Bailey & López de Prado 2014, after the extreme-value
    approximation of the maximum of N standard normals):

    ``sqrt(V) * ((1 - g) * Phi^-1(1 - 1/N) + g * Phi^-1(1 - 1/(N e)))``, g = Euler–Mascheroni.

    Same units as the SRs whose variance is ``var_sr`` (per period here). 0 for one trial.
    With V = 1: 1.57 / 2.53 / 3.26 for N = 10 / 100 / 1000.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    if not var_sr >= 0:
        raise ValueError(f"var_sr must be >= 0, got {var_sr!r}")
    if n_trials == 1:
        return 0.0
    n = float(n_trials)
    z = (1 - EULER_GAMMA) * stats.norm.ppf(1 - 1 / n) + EULER_GAMMA * stats.norm.ppf(1 - 1 / (n * math.e))
    return math.sqrt(var_sr) * float(z)


@dataclass(frozen=True)
class DeflatedSharpe:
    """Result of :func:`deflated_sharpe`. sr, sr0: per-period SRs (observed; expected maximum of
    the trials under the null). dsr = PSR(sr0), psr = PSR(0), both probabilities. n returns,
    skew gamma_3, kurt non-excess gamma_4, n_trials N, var_trials_sr V[SR] (per period^2)."""

    sr: float
    sr0: float
    dsr: float
    psr: float
    n: int
    skew: float
    kurt: float
    n_trials: int
    var_trials_sr: float


def deflated_sharpe(returns, n_trials: int, var_trials_sr: float) -> DeflatedSharpe:
    """Deflated Sharpe Ratio (Bailey & López de Prado 2014) of the per-period ``returns``
    (shape (n,)) of the selected strategy, after ``n_trials`` trials whose per-period SRs have
    variance ``var_trials_sr``: ``DSR = PSR(SR0)`` with ``SR0 = expected_max_sr(N, V)``, using
    the returns' own n, skewness and kurtosis. DSR >= 0.95 reads: the observed SR beats the
    best of N skill-less trials at 95% confidence.
    """
    r = _returns_1d(returns)
    sr = sharpe(r)
    if math.isnan(sr):
        raise ValueError("the returns are a non-zero constant: their Sharpe ratio is undefined")
    skew, kurt = moments(r)
    sr0 = expected_max_sr(n_trials, var_trials_sr)
    return DeflatedSharpe(
        sr=sr,
        sr0=sr0,
        dsr=psr(sr, sr0, r.size, skew, kurt),
        psr=psr(sr, 0.0, r.size, skew, kurt),
        n=int(r.size),
        skew=skew,
        kurt=kurt,
        n_trials=int(n_trials),
        var_trials_sr=float(var_trials_sr),
    )


def _block_sharpe(sums: np.ndarray, sumsq: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Per-period SR (ddof=1) from sums, sums of squares and counts over rows; 0 where the
    standard deviation is 0 (a trial that did not trade neither wins nor loses)."""
    mean = sums / counts
    var = (sumsq - counts * mean * mean) / (counts - 1)
    sd = np.sqrt(np.maximum(var, 0.0))
    tiny = 1e-12 * np.maximum(np.sqrt(sumsq / counts), 1e-300)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > tiny, mean / np.where(sd > 0, sd, 1.0), 0.0)


def pbo(matrix, n_blocks: int = 16) -> float:
    """Probability of Backtest Overfitting by CSCV (Bailey, Borwein, López de Prado & Zhu 2017).

    ``matrix``: shape (T, N), per-period returns of N trials (columns) on the same T periods.
    The rows are cut into ``n_blocks`` = S contiguous blocks of (nearly) equal size; for each of
    the C(S, S/2) ways to pick S/2 blocks as in-sample (the rest out-of-sample), the trial with
    the best in-sample per-period SR is taken, its out-of-sample relative rank is
    ``omega = rank / (N + 1)`` (rank 1 = worst of N, ties averaged) and ``lambda = ln(omega /
    (1 - omega))``. PBO = the share of splits with lambda <= 0, in [0, 1].

    Reading: ~0.5 (exactly ceil-median share, 0.5 for even N) when the trials are noise, near 0
    when the in-sample winner keeps winning out of sample. A trial whose returns have zero
    variance in a half (it did not trade) scores SR 0 there.

    Vectorised: per-block sums and sums of squares, then one matrix product per statistic over
    all splits (C(16, 8) = 12,870 splits take milliseconds).
    """
    m = np.asarray(matrix, dtype=float)
    if m.ndim != 2:
        raise ValueError(f"matrix must be 2-D, T periods x N trials, got shape {m.shape}")
    t, n = m.shape
    if n < 2:
        raise ValueError(f"PBO compares trials: the matrix needs N >= 2 columns (trials), got {n}")
    if n_blocks < 2 or n_blocks % 2:
        raise ValueError(f"n_blocks (S) must be an even number >= 2, got {n_blocks}")
    if t < max(n_blocks, 4):
        raise ValueError(
            f"T = {t} periods cannot be cut into n_blocks = {n_blocks} blocks with 2+ returns per half: "
            f"use n_blocks <= {max(2, t // 2 * 2)} (even) or more periods"
        )
    if not np.isfinite(m).all():
        raise ValueError("matrix contains NaN or infinite returns; fill them (e.g. 0 for no position)")

    edges = np.linspace(0, t, n_blocks + 1).round().astype(int)
    block = np.repeat(np.arange(n_blocks), np.diff(edges))  # block id of each row
    sums = np.zeros((n_blocks, n))
    sumsq = np.zeros((n_blocks, n))
    np.add.at(sums, block, m)
    np.add.at(sumsq, block, m * m)
    counts = np.diff(edges).astype(float)

    half = n_blocks // 2
    combos = np.array(list(combinations(range(n_blocks), half)), dtype=np.intp)
    mask = np.zeros((len(combos), n_blocks))
    mask[np.arange(len(combos))[:, None], combos] = 1.0
    oos = 1.0 - mask

    def split_sharpe(w: np.ndarray) -> np.ndarray:
        return _block_sharpe(w @ sums, w @ sumsq, (w @ counts)[:, None])

    sr_is = split_sharpe(mask)  # (splits, N)
    sr_oos = split_sharpe(oos)
    best = np.argmax(sr_is, axis=1)
    chosen = sr_oos[np.arange(len(best)), best][:, None]
    below = (sr_oos < chosen).sum(axis=1)
    ties = (sr_oos == chosen).sum(axis=1) - 1  # other trials with the same OOS SR
    rank = 1.0 + below + 0.5 * ties
    omega = rank / (n + 1.0)
    lam = np.log(omega / (1.0 - omega))
    return float(np.mean(lam <= 0.0))


def walk_forward_splits(
    n: int, n_folds: int, purge: int = 1, embargo: int = 0, min_train: int | None = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Anchored (expanding-window) walk-forward splits with purging and embargo (López de Prado,
    AFML ch. 7), over rows 0..n-1 in time order.

    The rows from ``min_train`` (default n // (n_folds + 1)) to n are cut into ``n_folds``
    contiguous test blocks of (nearly) equal size. Fold k tests its block [s_k, e_k) and trains on
    rows before s_k, except:

    - purge: the ``purge`` rows right before s_k are dropped: their labels look ``purge`` rows
      ahead into the test block (a next-bar label needs purge >= 1);
    - embargo: rows in [e_j, e_j + embargo) after every earlier test block j are dropped, because
      they are serially correlated with that block (e.g. their features share its bars).

    Yields (train_idx, test_idx), int64 arrays in increasing order.
    """
    if n_folds < 1:
        raise ValueError(f"n_folds must be >= 1, got {n_folds}")
    if purge < 0 or embargo < 0:
        raise ValueError(f"purge and embargo are numbers of rows >= 0, got purge={purge}, embargo={embargo}")
    if min_train is None:
        min_train = n // (n_folds + 1)
    if min_train - purge < 1:
        raise ValueError(f"min_train ({min_train}) must exceed purge ({purge}) so the first fold has training rows")
    if n - min_train < n_folds:
        raise ValueError(
            f"{n} rows leave {n - min_train} after min_train={min_train}: too few for {n_folds} test folds "
            "(lower n_folds or min_train)"
        )
    edges = np.linspace(min_train, n, n_folds + 1).round().astype(int)
    rows = np.arange(n, dtype=np.int64)
    for k in range(n_folds):
        start, end = int(edges[k]), int(edges[k + 1])
        keep = rows < start - purge
        for j in range(k):
            e = int(edges[j + 1])
            keep &= ~((rows >= e) & (rows < e + embargo))
        train = rows[keep]
        if train.size == 0:
            raise ValueError(f"fold {k} has no training rows left after purge and embargo; lower them")
        yield train, rows[start:end]
