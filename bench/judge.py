"""Decision-quality benchmark of promotion policies (issue 14 part 4; ``reviews/statistical-judgement.md``
§5 and §6b): simulated champion/challenger evidence over one canary-1 stage (``bench/judge_sim.py``:
the model, its units and where each parameter comes from), ground-truth scenarios, and promotion
policies run on the SAME simulated ramps.

Per (policy, scenario) cell: P(promote), P(rollback), P(inconclusive) with Wilson 95% intervals;
median / p90 time to rollback and to promotion in **trading hours** from the stage start; the
share of rollbacks made by the hard guard; capital at risk for BAD scenarios in **%-days** (capital
fraction x trading days in the stage, plus canary-2's 5% x 5 days when a BAD challenger is
promoted, the least further exposure a promotion causes), mean per ramp.

Policies (every one also has the hard drawdown guard, which rolls back at once):

- **P0** runbook: at the end of the dwell only, cumulative slippage ratio <= 1.5, fill ratio >= 0.95,
  precision >= 0.9 x the champion's, P&L within -10% of simulated
  (``trader.backtest.pnl_vs_simulated``: (live - sim) / max(|sim|, 1% of capital) >= -0.10); all
  pass -> promote, any fails -> rollback, a criterion without data -> hold (inconclusive).
- **P1-L0 / P1-L3** Argo-style: every 5 minutes the same four ratios over the last hour; a check
  fails if any ratio with data fails; rollback when failed checks > failureLimit (0 / 3); a check
  with no data at all is an error, 5 consecutive errors abort (Argo's consecutiveErrorLimit 4).
  Promote at the end of the dwell.
- **P2** Flagger-style: the same checks; rollback at 10 failed checks (no data = failed check).
- **P3** Kayenta-style: hourly judgements on a growing window of hourly metric values (slippage
  ratio, fill ratio vs the champion's; precision vs the champion's on the same calls; live vs
  simulated P&L), Mann-Whitney 98% interval for the shift (Moses, normal approximation),
  Hodges-Lehmann estimate, dead band 0.25 |HL|, one-sided by metric direction; score = 100 x
  passes / metrics with data (>= half without data -> 0); a score <= 75 rolls back at once; the
  last score >= 95 at the dwell promotes. The effect-size veto and outlier removal are left out.
- **P5** quantramp anytime-valid (``quantramp.operator.judgement.path``), one sequence per
  criterion, looked at every 5-minute round with a scrape: x = realised - 1.5 modelled (sign -1),
  1[filled] - 0.95, 1[challenger correct] - 0.9 x 1[champion correct], and per 30-minute block
  live - sim + 0.1 |sim| (``quantramp.trader.evidence``: live no worse than simulated by more than
  10% of the block's simulated move);
  alpha_promote 0.05 per criterion, alpha_rollback = rollback_alpha(0.05, 4, 3), min_samples 30,
  t_star = the expected n at the dwell, binary statistics shrunk to p0(1 - p0) at the threshold with
  prior_weight = min_samples; a PASS is sticky; a FAIL rolls back at once; promote at the first
  round >= the dwell when every criterion has passed; INCONCLUSIVE at 2x the dwell.
  **P5-nofid** (information, not a policy to ship): the same without the fidelity criterion,
  to show what the other three decide on their own.

S2 (zero-edge best-of-N): the admission gate computes the Deflated Sharpe Ratio of the backtest
winner over its N trials and admits it if DSR >= 0.95; rows "+gate" count a gate-rejected
challenger as neither promoted nor rolled back (it never ramps). DSR comes from
``quantramp.trader.sharpe.deflated_sharpe`` when importable (on main since 2331bbe; with the venv's
editable install it resolves to /work/main even from this branch), else from the local stand-in
:func:`deflated_sharpe_dsr`, which agrees with it to 1e-16 on 1,000 backtest winners.

Usage: ``python bench/judge.py [--ramps N] [--seed S] [--json-only]``. Prints a markdown table per
policy, the P5 target checks and, last, ONE JSON line. N = 2,000 ramps per cell by default.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

sys.path.insert(0, str(Path(__file__).resolve().parent))
import judge_sim as S  # noqa: E402

from quantramp.operator import judgement as J  # noqa: E402

PROMOTE, ROLLBACK, INCONCLUSIVE, REJECTED = 1, 2, 3, 4
POLICIES = ("P0", "P1-L0", "P1-L3", "P2", "P3", "P5", "P5-nofid")
Z98 = norm.ppf(0.99)
RUNBOOK = dict(slip=1.5, fill=0.95, prec=0.9, pnl=-0.10, pnl_floor=0.01)
CRITERIA = ("slippage", "fill", "precision", "fidelity")


# ----------------------------------------------------------------------------- per-round sums
def _bin(t: np.ndarray, ok: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Sum of weights ``w`` of the observed events per (ramp, round); an event at time t belongs to
    the round ending at or after t. Shape (R, N_ROUNDS)."""
    R = ok.shape[0]
    t = np.broadcast_to(t, ok.shape)
    w = np.broadcast_to(w, ok.shape)
    r = np.minimum(np.ceil(t[ok] / S.ROUND_H - 1e-9).astype(int) - 1, S.N_ROUNDS - 1)
    flat = np.nonzero(ok)[0] * S.N_ROUNDS + r
    return np.bincount(flat, weights=w[ok].astype(float), minlength=R * S.N_ROUNDS).reshape(R, S.N_ROUNDS)


def round_sums(d: S.Ramps) -> dict:
    """Cumulative counters per round (what the operator would read): orders, fills, realised and
    modelled slippage of fills, calls, champion and challenger hits, live and simulated P&L, blocks."""
    fo = d.order_ok & d.filled
    c = dict(
        orders=_bin(d.order_t, d.order_ok, 1.0),
        fills=_bin(d.order_t, fo, 1.0),
        real=_bin(d.order_t, fo, d.realised),
        mod=_bin(d.order_t, fo, d.modelled),
        calls=_bin(d.call_t, d.call_ok, 1.0),
        a=_bin(d.call_t, d.call_ok, d.champ_correct),
        c=_bin(d.call_t, d.call_ok, d.chal_correct),
        live=_bin(d.block_t, d.block_ok, d.live),
        sim=_bin(d.block_t, d.block_ok, d.sim),
        blocks=_bin(d.block_t, d.block_ok, 1.0),
    )
    k = d.control
    cfo = k["order_ok"] & k["filled"]
    c.update(c_orders=_bin(k["order_t"], k["order_ok"], 1.0), c_fills=_bin(k["order_t"], cfo, 1.0),
             c_real=_bin(k["order_t"], cfo, k["realised"]), c_mod=_bin(k["order_t"], cfo, k["modelled"]))
    return {name: np.cumsum(v, axis=1) for name, v in c.items()}


def _window(cs: np.ndarray, w: int) -> np.ndarray:
    """Sums over the last ``w`` rounds, per round."""
    pad = np.concatenate([np.zeros((cs.shape[0], w)), cs], axis=1)
    return cs - pad[:, : cs.shape[1]]


def _ratio_checks(c: dict, w: int | None):
    """(failed, has_data) of the four runbook ratios per (ramp, round), over the last ``w`` rounds
    (``None``: since the stage start). Each (R, N_ROUNDS, 4)."""
    g = (lambda k: c[k]) if w is None else (lambda k: _window(c[k], w))
    fills, orders, calls, blocks = g("fills"), g("orders"), g("calls"), g("blocks")
    real, mod, a, ch, live, sim = g("real"), g("mod"), g("a"), g("c"), g("live"), g("sim")
    with np.errstate(divide="ignore", invalid="ignore"):
        slip = fills > 0
        slip_f = slip & (real > RUNBOOK["slip"] * mod)
        fill = orders > 0
        fill_f = fill & (fills < RUNBOOK["fill"] * orders - 1e-9)
        prec = (calls > 0) & (a > 0)
        prec_f = prec & (ch < RUNBOOK["prec"] * a - 1e-9)
        pnl = blocks > 0
        pnl_f = pnl & ((live - sim) / np.maximum(np.abs(sim), RUNBOOK["pnl_floor"]) < RUNBOOK["pnl"])
    return np.stack([slip_f, fill_f, prec_f, pnl_f], -1), np.stack([slip, fill, prec, pnl], -1)


# ----------------------------------------------------------------------------- policies
# each returns (outcome (R,), decision round (R,)); round N_ROUNDS = no decision


def _finish(d: S.Ramps, rb_round: np.ndarray, pr_round: np.ndarray, last_round: int):
    """Combine a policy's rollback and promotion rounds with the hard guard."""
    rb = np.minimum(rb_round, d.guard_round)
    out = np.full(rb.shape, INCONCLUSIVE)
    rnd = np.full(rb.shape, last_round)
    prom = pr_round < rb
    out[prom], rnd[prom] = PROMOTE, pr_round[prom]
    roll = ~prom & (rb < S.N_ROUNDS) & (rb <= last_round)
    out[roll], rnd[roll] = ROLLBACK, rb[roll]
    return out, rnd, roll & (d.guard_round <= rb_round)


def p0_runbook(d: S.Ramps, c: dict):
    r = S.first_ok_round(d.round_ok, np.full(len(d.guard_round), S.DWELL_ROUND))
    failed, has = _ratio_checks(c, None)
    i = np.arange(len(r))
    rr = np.minimum(r, S.N_ROUNDS - 1)
    f, h = failed[i, rr], has[i, rr]
    seen = r < S.N_ROUNDS
    rb = np.where(seen & f.any(1), r, S.N_ROUNDS)
    pr = np.where(seen & ~f.any(1) & h.all(1), r, S.N_ROUNDS)
    return _finish(d, rb, pr, S.DWELL_ROUND)


def p_threshold(d: S.Ramps, c: dict, limit: int, flagger: bool):
    """Argo-style (failures > limit) or Flagger-style (failures >= limit, no data fails)."""
    failed, has = _ratio_checks(c, int(round(1.0 / S.ROUND_H)))
    fail = failed.any(-1)
    nodata = ~has.any(-1)
    ok = d.round_ok[:, : S.DWELL_ROUND + 1]
    fail, nodata = fail[:, : S.DWELL_ROUND + 1] & ok, nodata[:, : S.DWELL_ROUND + 1] & ok
    if flagger:
        hit = np.cumsum(fail | nodata, axis=1) >= limit
    else:
        hit = np.cumsum(fail, axis=1) > limit
        # 5 consecutive errors (no data at all) abort the analysis; missing rounds do not reset the run
        run = np.zeros(ok.shape[0])
        err = np.zeros(ok.shape, bool)
        for j in range(ok.shape[1]):
            run = np.where(nodata[:, j], run + 1, np.where(ok[:, j], 0, run))
            err[:, j] = run >= 5
        hit |= err
    rb = np.where(hit.any(1), hit.argmax(1), S.N_ROUNDS)
    pr = S.first_ok_round(d.round_ok, np.full(len(rb), S.DWELL_ROUND))
    pr = np.where(pr == S.DWELL_ROUND, pr, S.N_ROUNDS)  # promote only if the last check ran
    pr = np.where(pr < S.N_ROUNDS, pr, S.N_ROUNDS)
    return _finish(d, rb, pr, S.DWELL_ROUND)


def _moses(x: np.ndarray, y: np.ndarray):
    """Per row: Hodges-Lehmann shift of x - y and the 98% Moses interval (normal approximation),
    ignoring NaNs. Returns (hl, lower, upper, has_data)."""
    R = x.shape[0]
    nx, ny = np.isfinite(x).sum(1), np.isfinite(y).sum(1)
    dd = np.sort((x[:, :, None] - y[:, None, :]).reshape(R, -1), axis=1)  # NaN last
    nv = nx * ny
    has = nv > 0
    i = np.arange(R)
    mid = np.maximum(nv - 1, 0)
    hl = 0.5 * (dd[i, mid // 2] + dd[i, mid - mid // 2])
    kk = np.floor(nv / 2 - Z98 * np.sqrt(nx * ny * (nx + ny + 1) / 12.0)).astype(int)
    finite = kk >= 1
    lo = np.where(finite, dd[i, np.clip(kk - 1, 0, None)], -np.inf)
    hi = np.where(finite, dd[i, np.clip(nv - kk, 0, dd.shape[1] - 1)], np.inf)
    return hl, lo, hi, has


def p3_kayenta(d: S.Ramps, c: dict):
    per = int(round(1.0 / S.ROUND_H))
    hours = int(S.DWELL_H)  # 32 hourly judgements within the dwell
    ends = np.arange(1, hours + 1) * per - 1

    def hourly(k):
        v = c[k][:, ends]
        return np.diff(np.concatenate([np.zeros((v.shape[0], 1)), v], 1), axis=1)

    h = {k: hourly(k) for k in c}
    with np.errstate(divide="ignore", invalid="ignore"):
        nanify = lambda num, den: np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)  # noqa: E731
        metrics = [  # (challenger, control, +1: an increase is bad / -1: a decrease is bad)
            (nanify(h["real"], h["mod"]), nanify(h["c_real"], h["c_mod"]), +1),
            (nanify(h["fills"], h["orders"]), nanify(h["c_fills"], h["c_orders"]), -1),
            (nanify(h["c"], h["calls"]), nanify(h["a"], h["calls"]), -1),
            (np.where(h["blocks"] > 0, h["live"], np.nan), np.where(h["blocks"] > 0, h["sim"], np.nan), -1),
        ]
    R = len(d.guard_round)
    rb = np.full(R, S.N_ROUNDS)
    last_score = np.zeros(R)
    for j in range(hours):
        passes = np.zeros(R)
        counted = np.zeros(R)
        nodata = np.zeros(R)
        for x, y, direction in metrics:
            hl, lo, hi, has = _moses(x[:, : j + 1], y[:, : j + 1])
            band = 0.25 * np.abs(hl)
            bad = (lo > band) if direction > 0 else (hi < -band)
            passes += has & ~bad
            counted += has
            nodata += ~has
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(counted > 0, 100.0 * passes / np.maximum(counted, 1), 100.0)
        score[nodata >= len(metrics) / 2] = 0.0
        fresh = rb == S.N_ROUNDS
        rb[fresh & (score <= 75)] = ends[j]
        last_score = score
    pr = np.where((rb == S.N_ROUNDS) & (last_score >= 95), S.DWELL_ROUND, S.N_ROUNDS)
    return _finish(d, rb, pr, S.DWELL_ROUND)


#: exploration only (``--p5 key=value``): Plan fields overriding the operator's defaults in P5
P5_OVERRIDES: dict = {}


def p5_plans(sc: S.Scenario) -> dict:
    """The anytime-valid judge's plan per criterion, with the operator's defaults (see module doc).
    t_star: the expected n at the dwell for a healthy challenger."""
    ar = J.rollback_alpha(0.05, len(CRITERIA), 3)
    base = dict(alpha_promote=0.05, alpha_rollback=ar, min_samples=30)
    base.update(P5_OVERRIDES)
    p_prec = RUNBOOK["prec"] * S.P_CHAMP  # the threshold hit rate
    return {
        "slippage": J.Plan(sign=-1, t_star=S.ORDERS_PER_H * S.P_FILL * S.DWELL_H, **base),
        "fill": J.Plan(t_star=S.ORDERS_PER_H * S.DWELL_H, prior_variance=0.95 * 0.05, prior_weight=30, **base),
        "precision": J.Plan(t_star=S.CALLS_PER_H * S.DWELL_H, prior_variance=p_prec * (1 - p_prec),
                            prior_weight=30, **base),
        "fidelity": J.Plan(t_star=S.DWELL_H / S.BLOCK_H, **base),
    }


def p5_anytime(d: S.Ramps, sc: S.Scenario):
    """Returns {policy: (outcome, round, guard)} for P5 and P5-nofid, and per-criterion first
    PASS / FAIL rounds (R, 4) for the diagnostics."""
    plans = p5_plans(sc)
    R = len(d.guard_round)
    pass_r = np.full((R, 4), S.N_ROUNDS)
    fail_r = np.full((R, 4), S.N_ROUNDS)
    fo = d.order_ok & d.filled
    for i in range(R):
        ok = d.round_ok[i]
        streams = (
            (d.order_t[i][fo[i]], d.realised[i][fo[i]] - 1.5 * d.modelled[i][fo[i]]),
            (d.order_t[i][d.order_ok[i]], d.filled[i][d.order_ok[i]] - 0.95),
            (d.call_t[d.call_ok[i]], d.chal_correct[i][d.call_ok[i]] - 0.9 * d.champ_correct[i][d.call_ok[i]]),
            (d.block_t[d.block_ok[i]], d.live[i][d.block_ok[i]] - d.sim[i][d.block_ok[i]]
             + 0.1 * np.abs(d.sim[i][d.block_ok[i]])),
        )
        for k, ((t, x), name) in enumerate(zip(streams, CRITERIA)):
            if x.size < 2:
                continue
            _, lcb, ucb = J.path(x, plans[name])
            idx = np.searchsorted(t, S.ROUND_T, side="right") - 1
            valid = (idx >= 0) & ok
            idx = np.maximum(idx, 0)
            lo = np.where(valid, lcb[idx], np.nan)
            hi = np.where(valid, ucb[idx], np.nan)
            p = lo > 0
            f = hi < 0
            if p.any():
                pass_r[i, k] = p.argmax()
            if f.any():
                fail_r[i, k] = f.argmax()
    fail_r = np.where(fail_r < pass_r, fail_r, S.N_ROUNDS)  # a PASS is sticky: the criterion is done
    out = {}
    for name, cols in (("P5", [0, 1, 2, 3]), ("P5-nofid", [0, 1, 2])):
        rb = fail_r[:, cols].min(1)
        all_pass = pass_r[:, cols].max(1)
        pr = S.first_ok_round(d.round_ok, np.maximum(all_pass, S.DWELL_ROUND))
        out[name] = _finish(d, rb, pr, S.N_ROUNDS - 1)
    return out, pass_r, fail_r


# ----------------------------------------------------------------------------- DSR gate
def deflated_sharpe_dsr(returns: np.ndarray, n_trials: int, var_trials_sr: float) -> float:
    """DSR = PSR(SR0) (Bailey & Lopez de Prado 2014; review §3). Uses
    ``quantramp.trader.sharpe.deflated_sharpe`` when it exists; otherwise this local stand-in
    (TO BE REPLACED by that import once it lands): SR0 = sqrt(V) ((1 - g) z(1 - 1/N) + g z(1 - 1/(N e))),
    PSR = Phi((SR - SR0) sqrt(T - 1) / sqrt(1 - skew SR + (kurt - 1)/4 SR^2)), per-period SRs."""
    try:
        from quantramp.trader.sharpe import deflated_sharpe  # type: ignore
    except ImportError:
        deflated_sharpe = None
    if deflated_sharpe is not None:
        return float(deflated_sharpe(returns, n_trials, var_trials_sr).dsr)
    r = np.asarray(returns, float)
    T = r.size
    sd = r.std(ddof=1)
    sr = r.mean() / sd
    z = (r - r.mean()) / r.std()
    skew, kurt = float(np.mean(z ** 3)), float(np.mean(z ** 4))
    g = 0.5772156649015329
    sr0 = math.sqrt(var_trials_sr) * ((1 - g) * norm.ppf(1 - 1 / n_trials) + g * norm.ppf(1 - 1 / (n_trials * math.e)))
    den = math.sqrt(max(1 - skew * sr + (kurt - 1) / 4 * sr * sr, 1e-12))
    return float(norm.cdf((sr - sr0) * math.sqrt(T - 1) / den))


def dsr_source() -> str:
    try:
        from quantramp.trader.sharpe import deflated_sharpe  # type: ignore  # noqa: F401
        return "quantramp.trader.sharpe"
    except ImportError:
        return "local stand-in (bench/judge.py)"


# ----------------------------------------------------------------------------- metrics
def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float, float]:
    """Proportion and its Wilson 95% interval."""
    if n == 0:
        return (float("nan"),) * 3
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return p, max(0.0, mid - half), min(1.0, mid + half)


def cell(outcome: np.ndarray, rnd: np.ndarray, guard: np.ndarray, label: str) -> dict:
    n = len(outcome)
    t = S.ROUND_T[np.minimum(rnd, S.N_ROUNDS - 1)]

    def q(mask):
        return (None, None) if not mask.any() else (round(float(np.median(t[mask])), 2),
                                                    round(float(np.percentile(t[mask], 90)), 2))

    rb, pr = outcome == ROLLBACK, outcome == PROMOTE
    ramped = outcome != REJECTED
    days = np.where(ramped, t / S.HOURS_PER_DAY, 0.0)
    car = None
    if label == "BAD":
        car = float(np.mean(100 * (S.CAPITAL_FRACTION * days + pr * S.NEXT_STAGE_CAPITAL_DAYS)))
    res = {k: [round(v, 4) for v in wilson(int((outcome == code).sum()), n)]
           for k, code in (("promote", PROMOTE), ("rollback", ROLLBACK), ("inconclusive", INCONCLUSIVE))}
    res["rollback_judge"] = [round(v, 4) for v in wilson(int((rb & ~guard).sum()), n)]
    res.update(n=n, rejected=round(float((outcome == REJECTED).mean()), 4),
               guard_share=round(float(guard[rb].mean()), 3) if rb.any() else None,
               t_rollback_h=q(rb), t_promote_h=q(pr), car_pct_days=None if car is None else round(car, 3))
    return res


# ----------------------------------------------------------------------------- run
def run(ramps: int = 2000, seed: int = 20261128, only: list[str] | None = None, progress=None) -> dict:
    """Simulate every scenario (same seed for each: common random numbers) and run every policy on
    the same ramps. Returns {"cells": {scenario: {policy: cell}}, "labels", "p5_criteria", ...}."""
    cells, labels, diag = {}, {}, {}
    for sc in S.scenarios():
        if only and not any(o in sc.name for o in only):
            continue
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        d = S.simulate(sc, ramps, rng)
        c = round_sums(d)
        res = {"P0": p0_runbook(d, c), "P1-L0": p_threshold(d, c, 0, False),
               "P1-L3": p_threshold(d, c, 3, False), "P2": p_threshold(d, c, 10, True), "P3": p3_kayenta(d, c)}
        p5, pass_r, fail_r = p5_anytime(d, sc)
        res.update(p5)
        diag[sc.name] = {name: {"passed": round(float((pass_r[:, k] < S.N_ROUNDS).mean()), 4),
                                "failed": round(float((fail_r[:, k] < S.N_ROUNDS).mean()), 4)}
                         for k, name in enumerate(CRITERIA)}
        if sc.best_of:
            best, var_sr = S.admission(np.random.default_rng([seed, sc.best_of]), ramps, sc.best_of)
            admitted = np.array([deflated_sharpe_dsr(best[i], sc.best_of, var_sr[i]) >= 0.95 for i in range(ramps)])
            diag[sc.name]["admitted"] = round(float(admitted.mean()), 4)
            rows = {}
            for pol, (o, r, g) in res.items():
                rows[pol] = cell(o, r, g, sc.label)
            cells[sc.name + " (no gate)"] = rows
            labels[sc.name + " (no gate)"] = sc.label
            rows = {}
            for pol, (o, r, g) in res.items():
                o2 = np.where(admitted, o, REJECTED)
                rows[pol] = cell(o2, r, g & admitted, sc.label)
            cells[sc.name + " + DSR gate"] = rows
            labels[sc.name + " + DSR gate"] = sc.label
        else:
            cells[sc.name] = {pol: cell(o, r, g, sc.label) for pol, (o, r, g) in res.items()}
            labels[sc.name] = sc.label
        if progress:
            progress(f"{sc.name}: {time.perf_counter() - t0:.1f} s")
    return {"cells": cells, "labels": labels, "p5_criteria": diag}


def targets(out: dict) -> list[dict]:
    """The issue-14 targets for P5, on the Wilson upper bound (review §6b)."""
    rows = []
    cells, labels = out["cells"], out["labels"]
    dwell = S.DWELL_H
    for name, lab in labels.items():
        c = cells[name]["P5"]
        if name.startswith("S2"):
            if "gate" in name and "no gate" not in name:
                rows.append(dict(target=f"{name}: false promotion <= 5%", value=c["promote"][2], limit=0.05))
            continue
        if name.startswith("S8"):
            rows.append(dict(target=f"{name}: zero promotions", value=c["promote"][0], limit=0.0))
        elif lab == "BAD":
            rows.append(dict(target=f"{name}: false promotion <= 6%", value=c["promote"][2], limit=0.06))
        elif lab == "GOOD":
            rows.append(dict(target=f"{name}: false rollback <= 6%", value=c["rollback"][2], limit=0.06))
            rows.append(dict(target=f"{name}: false rollback by the judge (drawdown guard excluded) <= 6%",
                             value=c["rollback_judge"][2], limit=0.06))
        for k, frac in ((" 2x", 0.4), (" 3x", 0.2)):
            if name.startswith("S3") and k in name:
                med, p90 = c["t_rollback_h"]
                rows.append(dict(target=f"{name}: median time to rollback <= {frac:.0%} of dwell ({frac * dwell:g} h)",
                                 value=med, limit=frac * dwell))
                if k == " 2x":
                    rows.append(dict(target=f"{name}: p90 time to rollback <= dwell ({dwell:g} h)",
                                     value=p90, limit=dwell))
    for r in rows:
        r["met"] = r["value"] is not None and r["value"] <= r["limit"] + 1e-12
    return rows


def _pct(v) -> str:
    return f"{100 * v[0]:.1f} [{100 * v[1]:.1f}, {100 * v[2]:.1f}]"


def markdown(out: dict) -> str:
    lines = []
    for pol in POLICIES:
        lines += [f"### {pol}", "",
                  "| scenario | label | promote % [95% CI] | rollback % [95% CI] | guard share | inconclusive % [95% CI] "
                  "| rollback h (median / p90) | promote h (median / p90) | capital at risk %-days |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name, lab in out["labels"].items():
            c = out["cells"][name][pol]
            tr, tp = c["t_rollback_h"], c["t_promote_h"]
            fmt = lambda t: "–" if t[0] is None else f"{t[0]:g} / {t[1]:g}"  # noqa: E731
            gs = "–" if c["guard_share"] is None else f"{c['guard_share']:.2f}"
            car = "–" if c["car_pct_days"] is None else f"{c['car_pct_days']:.2f}"
            rej = f" (+{100 * c['rejected']:.1f}% rejected)" if c["rejected"] else ""
            lines.append(f"| {name} | {lab} | {_pct(c['promote'])}{rej} | {_pct(c['rollback'])} | {gs} | "
                         f"{_pct(c['inconclusive'])} | {fmt(tr)} | {fmt(tp)} | {car} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ramps", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=20261128)
    ap.add_argument("--json-only", action="store_true")
    ap.add_argument("--only", nargs="*", help="scenario name substrings (development)")
    ap.add_argument("--p5", nargs="*", default=[], metavar="KEY=VALUE",
                    help="exploration only: override P5 Plan fields (e.g. alpha_rollback=0.0125 rho_margin=0.5)")
    a = ap.parse_args(argv)
    P5_OVERRIDES.clear()
    P5_OVERRIDES.update({k: float(v) for k, v in (kv.split("=", 1) for kv in a.p5)})
    t0 = time.perf_counter()
    say = None if a.json_only else (lambda m: print(m, file=sys.stderr, flush=True))
    out = run(a.ramps, a.seed, a.only, progress=say)
    wall = time.perf_counter() - t0
    tg = targets(out)
    if not a.json_only:
        print(f"## bench/judge: {a.ramps} ramps per cell, seed {a.seed}, wall {wall:.1f} s, DSR: {dsr_source()}"
              + (f", P5 overrides {P5_OVERRIDES}" if P5_OVERRIDES else "") + "\n")
        print(markdown(out))
        print("### P5 per-criterion: share of ramps in which the criterion PASSed / FAILed (before max dwell)\n")
        print("| scenario | " + " | ".join(CRITERIA) + " |")
        print("|---|" + "---|" * len(CRITERIA))
        for name, dg in out["p5_criteria"].items():
            print(f"| {name} | " + " | ".join(f"{dg[k]['passed']:.3f} / {dg[k]['failed']:.3f}" for k in CRITERIA) + " |")
        for name, dg in out["p5_criteria"].items():
            if "admitted" in dg:
                print(f"\nDSR admission gate, {name}: {100 * dg['admitted']:.2f}% of backtest winners admitted")
        print("\n### P5 targets (Wilson upper bound)\n")
        for r in tg:
            print(f"- [{'x' if r['met'] else ' '}] {r['target']}: {r['value']}")
        print()
    print(json.dumps({"bench": "judge", "ramps": a.ramps, "seed": a.seed, "wall_s": round(wall, 1),
                      "dsr": dsr_source(), "p5_overrides": P5_OVERRIDES, "targets": tg, **out}, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
