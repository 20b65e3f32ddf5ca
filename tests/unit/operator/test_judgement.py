"""The anytime-valid judge (quantramp.operator.judgement): formulas, error rates under continuous
monitoring, dependence, shrinkage and counter resets. Monte-Carlo checks use fixed seeds and state
their tolerance; a check that must be able to fail is paired with the same run with the control off."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantramp.operator import judgement as J


def ar_t3(rng: np.random.Generator, phi: float, m: int) -> np.ndarray:
    """AR(1) noise with unit variance and Student-t(3) innovations."""
    e = rng.standard_t(3, m) / math.sqrt(3)
    if phi == 0:
        return e
    x = np.empty(m)
    x[0] = e[0]
    k = math.sqrt(1 - phi * phi)
    for i in range(1, m):
        x[i] = phi * x[i - 1] + k * e[i]
    return x


@pytest.mark.parametrize("alpha,mult", [(0.10, 2.76), (0.05, 3.04), (0.0056, 3.74)])
def test_radius_multiplier_at_t_star_matches_the_study(alpha, mult):
    # review §2 (F3) table: the CS multiplier at t* for a two-sided level alpha
    n = 1000
    assert J.radius(1.0, n, alpha, n) * math.sqrt(n) == pytest.approx(mult, abs=0.01)


def test_vectorised_path_equals_the_judge():
    rng = np.random.default_rng(3)
    xs = rng.normal(0.1, 1.0, 400)
    plan = J.Plan(t_star=300, prior_variance=0.5, prior_weight=10, sign=-1)
    mean, lcb, ucb = J.path(xs, plan)
    for k in (29, 30, 120, 399):
        j = J.judge(J.Sums.of(list(xs[: k + 1])), plan)
        assert j.mean == pytest.approx(mean[k], abs=1e-9)
        assert j.lcb == pytest.approx(lcb[k], abs=1e-9) and j.ucb == pytest.approx(ucb[k], abs=1e-9)
    assert np.isnan(lcb[:29]).all()


def _ever(phi: float, rho_margin: float, shift: float = 0.0, n_streams: int = 600, m: int = 400, seed: int = 11):
    rng = np.random.default_rng(seed)
    plan = J.Plan(t_star=200, alpha_promote=0.05, alpha_rollback=0.05, rho_margin=rho_margin)
    passed = failed = 0
    for _ in range(n_streams):
        _, lcb, ucb = J.path(ar_t3(rng, phi, m) + shift, plan)
        passed += bool(np.nanmax(lcb) > 0)
        failed += bool(np.nanmin(ucb) < 0)
    return passed / n_streams, failed / n_streams


def test_continuous_monitoring_keeps_the_error_rate_iid():
    # the mean sits on the boundary (0): checked after every observation, neither side may be
    # crossed more often than alpha = 5% (tolerance: 3 binomial sd at n = 600, about 2.7 points)
    fp, fr = _ever(0.0, 1.0)
    assert fp <= 0.05 + 0.027 and fr <= 0.05 + 0.027


def test_dependence_correction_is_what_keeps_ar_streams_honest():
    on = _ever(0.5, 1.0)
    off = _ever(0.5, 0.0)
    assert max(on) <= 0.05 + 0.027
    # the same streams with the plain lag-1 estimate cross more often: the margin is doing the work
    assert max(off) > max(on)


def test_a_clear_defect_fails_and_a_clear_improvement_passes():
    rng = np.random.default_rng(5)
    plan = J.Plan(t_star=200)
    bad = J.judge(J.Sums.of(list(rng.normal(-0.5, 1, 300))), plan)
    good = J.judge(J.Sums.of(list(rng.normal(0.5, 1, 300))), plan)
    assert bad.outcome == "FAIL" and "upper bound" in bad.why and bad.ucb < 0
    assert good.outcome == "PASS" and good.lcb > 0 and good.p < 0.05


def test_sign_flips_a_smaller_is_better_statistic():
    rng = np.random.default_rng(5)
    # slippage-like: x = realised - 1.5 modelled should be <= 0; a clearly negative stream passes
    j = J.judge(J.Sums.of(list(rng.normal(-0.5, 1, 300))), J.Plan(t_star=200, sign=-1))
    assert j.outcome == "PASS" and j.mean > 0


def test_too_few_observations_never_decide_and_inconclusive_at_max_dwell():
    plan = J.Plan(min_samples=30)
    j = J.judge(J.Sums.of([-5.0] * 29), plan)
    assert j.outcome == "INSUFFICIENT_DATA" and j.lcb is None
    assert J.judge(J.Sums.of([-5.0] * 29), plan, at_max_dwell=True).outcome == "INCONCLUSIVE"
    rng = np.random.default_rng(1)
    j = J.judge(J.Sums.of(list(rng.normal(0, 1, 40))), plan, at_max_dwell=True)
    assert j.outcome == "INCONCLUSIVE" and "maximum dwell" in j.why


def test_variance_shrinkage_keeps_a_streak_of_ones_from_passing_at_once():
    # fill-ratio-like: x = 1[filled] - 0.95. 30 fills in a row do not prove a 95% fill ratio
    # (P(30/30 | p = 0.9) = 4%); without the prior the sample variance is 0 and it passes at once.
    xs = [0.05] * 30
    with_prior = J.judge(J.Sums.of(xs), J.Plan(prior_variance=0.0475, prior_weight=30))
    without = J.judge(J.Sums.of(xs), J.Plan())
    assert with_prior.outcome == "CONTINUE" and without.outcome == "PASS"
    assert J.judge(J.Sums.of([0.05] * 200), J.Plan(prior_variance=0.0475, prior_weight=30, t_star=200)).outcome == "PASS"


def test_p_value_is_a_running_minimum():
    rng = np.random.default_rng(2)
    xs = list(rng.normal(0.3, 1, 200))
    p1 = J.judge(J.Sums.of(xs), J.Plan(t_star=200)).p
    p2 = J.judge(J.Sums.of(xs + [-3.0] * 5), J.Plan(t_star=200), p_before=p1).p
    assert p1 < 0.05 and p2 <= p1


def test_counter_reset_is_carried():
    c = J.Counter()
    c = c.observe(J.Sums.of([1.0, 2.0, 3.0]))
    c = c.observe(J.Sums.of([1.0]))  # pod restarted without its state: the counters start again
    got = c.since_start()
    assert got.n == 4 and got.total == pytest.approx(7.0)
    # a second reset carries again; a higher reading is the same pod going on
    c = c.observe(J.Sums.of([5.0, 5.0])).observe(J.Sums.of([2.0]))
    assert c.since_start().n == 6 and c.since_start().total == pytest.approx(6.0 + 10.0 + 2.0)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="theta_bad"):
        J.Plan(theta_bad=1, theta_good=0)
    with pytest.raises(ValueError, match="alpha_promote"):
        J.Plan(alpha_promote=0.7)
    with pytest.raises(ValueError, match="not finite"):
        J.judge(J.Sums(n=40, sum_pos=float("nan")), J.Plan())
    assert J.rollback_alpha(0.05, 5, 3) == pytest.approx(0.05 / 15)
    assert J.t_star_for(10, 3600, 7 * 3600, 30) == pytest.approx(70)
