"""Anytime-valid judgement of a criterion: a confidence sequence on the mean of a per-observation
statistic, valid under continuous monitoring (issue 14; ``reviews/statistical-judgement.md`` §2, §6a).

Every runbook ratio is linearised into a mean test on a statistic ``x`` the trader computes per
observation (fill, order, labelled call, P&L block), with the pass side ``>=`` (``E[x] >= 0`` is
good) after the sign is fixed by :class:`Plan`:

- slippage <= 1.5x modelled: ``x = 1.5 * modelled_bps - realised_bps`` per fill;
- fill ratio >= 95%: ``x = 1[filled] - 0.95`` per order;
- precision >= 90% of the reference: ``x = 1[correct] - 0.9 * p_ref`` per scored call;
- live within -10% of simulated: ``x = (pnl_live - 0.9 * pnl_sim) / capital`` per block.

The trader exports monotone sums (:class:`Sums`): n, sum x split into positive and negative
parts, sum x^2 and the lag-1 products sum x_i x_{i-1} (split). From them:

- ``mean = S / n``; variance ``s^2 = SS / n - mean^2``, shrunk toward ``Plan.prior_variance``
  with ``Plan.prior_weight`` pseudo-observations (a binary statistic that has not varied yet
  is not taken as certain);
- lag-1 autocorrelation ``rho1``; the long-run variance is the AR(1) one,
  ``s^2 (1 + r) / (1 - r)`` with ``r = clip(rho1 + rho_margin / sqrt(n), 0, MAX_RHO)``: the
  estimate raised by ``rho_margin`` standard errors (1/sqrt(n) under no dependence), since an
  early, noisy rho1 that is too low is what lets a dependent stream cross a bound (review §2
  "Limits"; with only lag-1 sums this is the dependence correction the counters support). A
  negative rho1 never shrinks the variance. Measured (1,000 t3 streams of 400, boundary
  mean, 5% per side): false decisions per side 1% / 2.5% / 6% at AR 0 / 0.5 / 0.8, against
  2% / 5% / 11% with the plain rho1 and 2% / 27% / 54% with no correction;
- the radius of the asymptotic confidence sequence (Waudby-Smith et al. 2024, arXiv 2103.06476,
  Thm 2.2; review formula F3), two-sided at level ``a``::

      r(a) = sigma * sqrt( 2 (n eta^2 + 1) / (n^2 eta^2) * ln( sqrt(n eta^2 + 1) / a ) )
      eta^2 = (-W_{-1}(-a^2 / e) - 1) / t_star

  ``t_star`` is the sample size at which the sequence is tightest (the expected n at the
  stage's dwell). ``P(for all n: mean in [m - r, m + r]) >= 1 - a`` asymptotically;
- one-sided bounds use ``r(2 alpha)``: ``LCB = m - r(2 alpha_promote)``,
  ``UCB = m + r(2 alpha_rollback)``.

Decision with an indifference zone ``[theta_bad, theta_good]`` (review F8):
``INSUFFICIENT_DATA`` while ``n < min_samples`` (hold, never fail, never pass); ``FAIL`` as soon
as ``UCB < theta_good``; ``PASS`` when ``LCB > theta_bad``; ``CONTINUE`` otherwise; at the
maximum dwell ``INCONCLUSIVE``. On the event that the sequence covers the mean at all times
(probability >= 1 - alpha), a challenger that is bad (mean <= theta_bad) is never passed and one
that is good (mean >= theta_good) never failed: P(false pass) <= alpha_promote per criterion
and P(false rollback) <= alpha_rollback per criterion and stage (:func:`rollback_alpha` splits
a ramp's budget by Bonferroni).

The always-valid p-value against "bad" is ``min over looks of 1 / (2 E)`` with the Gaussian
mixture e-value ``E = (1 + n eta^2)^(-1/2) exp( eta^2 (S - n theta_bad)^2 / (2 sigma^2 (1 + n eta^2)) )``
(review §6a), counted only when the mean is on the good side. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from quantramp.trader.evidence import FAMILIES, Sums  # noqa: F401  (the producer's sums; re-exported)

Outcome = Literal["INSUFFICIENT_DATA", "CONTINUE", "PASS", "FAIL", "INCONCLUSIVE"]

#: the largest lag-1 autocorrelation the AR(1) long-run variance uses (x 39 at 0.95)
MAX_RHO = 0.95


@dataclass(frozen=True)
class Plan:
    """How one criterion is judged, in the units of its statistic (pass side ``>=`` after ``sign``).

    ``sign``: +1 if a larger x is better, -1 if smaller is better (the judge works on sign * x,
    and the thresholds are in those flipped units). ``theta_bad`` <= ``theta_good``: the
    indifference zone. ``alpha_promote``: P(false pass) per criterion; ``alpha_rollback``: P(false
    fail) per criterion and stage. ``t_star``: n at which the sequence is tightest. ``rho_margin``:
    standard errors added to the lag-1 autocorrelation before the AR(1) correction.
    ``prior_variance`` / ``prior_weight``: variance shrinkage (pseudo-observations).
    """

    theta_bad: float = 0.0
    theta_good: float = 0.0
    alpha_promote: float = 0.05
    alpha_rollback: float = 0.05 / 15
    min_samples: int = 30
    t_star: float = 100.0
    rho_margin: float = 1.0
    prior_variance: float = 0.0
    prior_weight: float = 0.0
    sign: int = 1

    def __post_init__(self) -> None:
        if not self.theta_bad <= self.theta_good:
            raise ValueError(f"theta_bad {self.theta_bad} must be <= theta_good {self.theta_good}")
        for name in ("alpha_promote", "alpha_rollback"):
            a = getattr(self, name)
            if not 0 < a < 0.5:
                raise ValueError(f"{name} must be in (0, 0.5), got {a}")
        if self.sign not in (1, -1):
            raise ValueError("sign must be +1 or -1")


@dataclass(frozen=True)
class Judgement:
    """The state of one criterion's sequence after a look (in the pass-side units of its plan).

    ``n`` observations, ``mean``, ``sigma`` (long-run standard deviation used), ``rho1`` lag-1
    autocorrelation, ``lcb`` / ``ucb`` one-sided bounds at alpha_promote / alpha_rollback, ``p``
    always-valid p-value against "bad" (1 until evidence), ``outcome``, ``why`` (the bound that
    crossed, for a rollback message).
    """

    n: int
    mean: float | None
    sigma: float | None
    rho1: float | None
    lcb: float | None
    ucb: float | None
    p: float
    outcome: Outcome
    why: str = ""


def eta2(alpha: float, t_star: float) -> float:
    """The tuning eta^2 = (-W_{-1}(-alpha^2/e) - 1) / t_star that makes the two-sided radius at level
    ``alpha`` tightest at n = ``t_star`` (Waudby-Smith et al. 2024, eq. for rho*; review F3)."""
    from scipy.special import lambertw

    w = float(lambertw(-(alpha ** 2) / math.e, k=-1).real)
    return (-w - 1.0) / max(t_star, 1.0)


def radius(sigma, n, alpha: float, t_star: float):
    """Two-sided radius r(alpha) of the asymptotic confidence sequence at n observations with
    standard deviation ``sigma`` (units of x); floats or numpy arrays of one shape. Raises ValueError
    for n < 1."""
    import numpy as np

    if np.any(np.asarray(n) < 1):
        raise ValueError("radius needs n >= 1")
    e2 = eta2(alpha, t_star)
    ne = n * e2 + 1.0
    return sigma * np.sqrt(2.0 * ne / (n * n * e2) * np.log(np.sqrt(ne) / alpha))


def evalue(s: float, n: float, theta: float, sigma: float, e2: float) -> float:
    """Gaussian-mixture e-value of H0: mean = ``theta`` after n observations summing to ``s``."""
    if sigma <= 0:
        return math.inf if s != n * theta else 1.0
    ne = 1.0 + n * e2
    z = e2 * (s - n * theta) ** 2 / (2.0 * sigma * sigma * ne)
    return math.exp(min(z, 700.0)) / math.sqrt(ne)


def _moments(n, total, sum_sq, lag, plan: Plan):
    """(mean, long-run sigma, rho1) from the sums, in the plan's pass-side units; floats or numpy
    arrays of one shape (the judge and :func:`path` share this one formula)."""
    import numpy as np

    mean = plan.sign * total / n
    raw = np.maximum(sum_sq / n - mean * mean, 0.0)
    var = (n * raw + plan.prior_weight * plan.prior_variance) / (n + plan.prior_weight)
    # lag-1 autocovariance from the sums: sum (x_i - m)(x_{i-1} - m) ~ lag - (n + 1) m^2 (edges O(1/n))
    with np.errstate(divide="ignore", invalid="ignore"):
        cov1 = (lag - (n + 1) * mean * mean) / (n - 1)
        rho1 = np.where(raw > 0, np.clip(cov1 / np.where(raw > 0, raw, 1.0), -1.0, 1.0), 0.0)
    r = np.clip(rho1 + plan.rho_margin / np.sqrt(n), 0.0, MAX_RHO)
    return mean, np.sqrt(var * (1.0 + r) / (1.0 - r)), rho1


def moments(s: Sums, plan: Plan) -> tuple[float, float, float]:
    """(mean, long-run sigma, rho1) of the stream in the plan's pass-side units. Needs n >= 2."""
    mean, sigma, rho1 = _moments(s.n, s.total, s.sum_sq, s.lag, plan)
    return float(mean), float(sigma), float(rho1)


def judge(s: Sums, plan: Plan, at_max_dwell: bool = False, p_before: float = 1.0) -> Judgement:
    """One look at a criterion's stream: bounds, always-valid p-value and outcome (see the module
    docstring). ``s``: sums since the stage started (raw sign); ``p_before``: the p-value of the
    previous look (the p-value is a running minimum). Raises ValueError on non-finite sums."""
    if not s.finite():
        raise ValueError("the evidence sums are not finite")
    n = int(round(s.n))
    if n < max(plan.min_samples, 2):
        outcome: Outcome = "INCONCLUSIVE" if at_max_dwell else "INSUFFICIENT_DATA"
        mean = plan.sign * s.total / n if n else None
        return Judgement(n, mean, None, None, None, None, p_before, outcome,
                         f"{n} observations, need {plan.min_samples}")
    mean, sigma, rho1 = moments(s, plan)
    lcb = mean - radius(sigma, n, 2 * plan.alpha_promote, plan.t_star)
    ucb = mean + radius(sigma, n, 2 * plan.alpha_rollback, plan.t_star)
    p = p_before
    if mean > plan.theta_bad:
        e = evalue(plan.sign * s.total, n, plan.theta_bad, sigma, eta2(2 * plan.alpha_promote, plan.t_star))
        p = min(p_before, 1.0 / (2.0 * e) if e > 0 else 1.0)
    if ucb < plan.theta_good:
        outcome, why = "FAIL", f"upper bound {ucb:.6g} < {plan.theta_good:g}"
    elif lcb > plan.theta_bad:
        outcome, why = "PASS", f"lower bound {lcb:.6g} > {plan.theta_bad:g}"
    elif at_max_dwell:
        outcome, why = "INCONCLUSIVE", f"bounds [{lcb:.6g}, {ucb:.6g}] still straddle [{plan.theta_bad:g}, {plan.theta_good:g}] at the maximum dwell"
    else:
        outcome, why = "CONTINUE", f"bounds [{lcb:.6g}, {ucb:.6g}]"
    return Judgement(n, mean, sigma, rho1, lcb, ucb, min(1.0, p), outcome, why)


def rollback_alpha(alpha_ramp: float, criteria: int, stages: int) -> float:
    """The rollback error per criterion and stage: a ramp's false-rollback budget ``alpha_ramp``
    split evenly (Bonferroni) over ``criteria`` x ``stages`` (review §6a: 0.05 / (5 x 3) = 0.0033)."""
    return alpha_ramp / max(1, criteria * stages)


def t_star_for(n: float, elapsed_s: float, dwell_s: float, min_samples: int) -> float:
    """The sample size expected at the end of the dwell, from the observation rate so far
    (n over ``elapsed_s`` seconds); at least ``min_samples``."""
    if elapsed_s <= 0 or n <= 0 or dwell_s <= 0:
        return float(max(min_samples, 1))
    return max(float(min_samples), n * dwell_s / elapsed_s)


@dataclass(frozen=True)
class Counter:
    """A stage's view of monotone counters that may reset (a pod restart without its state):
    ``seen`` the last values read, ``carry`` what resets took away. The series of a stage start at
    zero (they are labelled with the book scope: one ramp and stage), so the stage's sums are
    ``seen + carry``."""

    seen: Sums = Sums()
    carry: Sums = Sums()

    def observe(self, now: Sums) -> "Counter":
        """Take a new reading: if the observation count went down, the counters were reset, and
        what was seen before the reset is carried (Prometheus ``increase()`` does the same)."""
        if now.n < self.seen.n:
            return replace(self, seen=now, carry=self.carry.plus(self.seen))
        return replace(self, seen=now)

    def since_start(self) -> Sums:
        return self.seen.plus(self.carry)


def path(xs, plan: Plan):
    """The bounds after every observation of one stream, vectorised (the benchmark's and the tests'
    fast path; the same formulas as :func:`judge`, which a unit test checks).

    ``xs``: observations, shape (m,), raw sign. Returns (mean, lcb, ucb) arrays of shape (m,), NaN
    while n < max(min_samples, 2).
    """
    import numpy as np

    x = np.asarray(xs, dtype=float)
    n = np.arange(1, x.shape[0] + 1, dtype=float)
    lag = np.concatenate(([0.0], np.cumsum(x[1:] * x[:-1])))
    mean, sigma, _ = _moments(n, np.cumsum(x), np.cumsum(x * x), lag, plan)
    lcb = mean - radius(sigma, n, 2 * plan.alpha_promote, plan.t_star)
    ucb = mean + radius(sigma, n, 2 * plan.alpha_rollback, plan.t_star)
    early = n < max(plan.min_samples, 2)
    for a in (mean, lcb, ucb):
        a[early] = np.nan
    return mean, lcb, ucb
