"""Simulator for ``bench/judge.py``: champion/challenger evidence streams over one canary-1 stage,
with ground-truth scenarios (issue 14 part 4; ``reviews/statistical-judgement.md`` §5, §6b).

Units: time in **trading hours** from the stage start (6.5 h per trading day); slippage in **bp**
per fill; P&L in **fractions of the challenger's allocated capital** per 30-minute block.

Model (every number below is a module constant; where it comes from is said next to it):

- **Stage.** canary-1 at 1% capital; dwell 5 trading days = 32.5 h (runbook); the anytime-valid
  policy may extend to 2x the dwell (65 h). The operator judges in rounds every 5 minutes
  (780 rounds to the maximum dwell).
- **Orders / fills.** Orders arrive as a Poisson process at 40 / 0.97 per trading day, so a
  healthy challenger (fill probability 0.97) has ~40 fills a day, ~200 per dwell (review §5).
  Each order fills with probability ``p_fill`` (Bernoulli; under AR(phi) the fill indicator is
  a thresholded AR(1) Gaussian, so misses cluster).
- **Slippage** per fill: modelled = 1 bp x exp(0.3 z - 0.045) (square-root impact ~1 bp on
  average with a lognormal spread of order size; review §5 "modelled 1 bp/fill"); realised =
  k x modelled + noise, noise Student-t(3) scaled to sd 2 bp (review §5), AR(1) with coefficient
  phi along the fills.
- **Precision** (paired, per scored directional call): 30 calls per trading hour (the model
  makes a call on about half of the 60 one-minute bars; an assumption: the trader scores a call
  whenever the signal is non-zero and the next close moved, ``trader/engine.py``). The champion
  is correct with probability 0.53 (brief); champion and challenger correctness come from a
  bivariate Gaussian copula with correlation 0.7 (two versions of the same model mostly agree;
  an assumption), each latent AR(phi). Labels arrive one bar later; that delay is ignored.
- **P&L** per 30-minute block (13 a day): the challenger's simulated-book return = mu + h_t^0.5
  u_b e_t with GARCH(1,1) variance h (alpha 0.08, beta 0.90; review §6b), Student-t(4) e with
  unit variance, an intraday U-shape u_b (1 + 0.5 ((b - 6)/6)^2, normalised to mean square 1)
  and an unconditional volatility of 6% a year (an intraday strategy holding up to 50% of
  capital in an index of ~16% vol for part of the day, ``config/risk-limits.yaml``;
  an assumption) and a Sharpe ratio of 1.5 a year (review §3). Live = simulated - loss x |simulated|
  - (1 - scale) x simulated + tracking noise (t4, sd 0.1 x the block's volatility, AR(phi)): same
  decisions, different fills. ``loss``: the share of each block's simulated move lost to execution
  (a fidelity defect: S7); ``scale``: live a scaled copy of simulated (S7b).
- **Hard guard.** Drawdown of the challenger's live equity (1 + cumulative live P&L) from its
  peak >= 2% (canary-1 ``maxDrawdown: 0.02``, ``config/examples/demo-good.yaml``) rolls back at
  the first operator round after the block in which it happened. Critical alerts are not
  modelled separately: in these scenarios the only alert-worthy event is the tail loss, which the
  drawdown guard sees.
- **Data faults** (S8): 10% of rounds missing (no look), one 30-minute outage (6 rounds), two
  counter resets per ramp that lose the observations of the 5 minutes before each reset
  (what ``increase()`` cannot recover); or a challenger that exports no evidence at all.
- **Champion control streams** (used only by the Kayenta-style policy, which compares two
  samples): the champion's fills and slippage are simulated at the same rate as the challenger's
  (the "fresh baseline of the same size" of Google/Waze, review §1) with k = 1, p_fill = 0.97.

Simplifications: the P&L, slippage and fill streams are independent of each other (no
feedback from slippage to P&L); compounding ignored in equity; the drawdown guard sees block
ends only; the volatility regime (S9) scales P&L volatility, modelled slippage and slippage
noise by the same factor from mid-stage on; no intraday seasonality in fills or calls.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.signal import lfilter
from scipy.stats import norm

HOURS_PER_DAY = 6.5
DWELL_H = 5 * HOURS_PER_DAY  # runbook canary-1 dwell: 5 trading days
MAX_DWELL_H = 2 * DWELL_H  # the anytime-valid policy's maximum dwell
ROUND_H = 5 / 60  # operator round: 5 minutes
N_ROUNDS = int(round(MAX_DWELL_H / ROUND_H))  # 780
ROUND_T = np.arange(1, N_ROUNDS + 1) * ROUND_H  # end time of each round (h)
DWELL_ROUND = int(round(DWELL_H / ROUND_H)) - 1  # index of the round at the end of the dwell (389)
BLOCK_H = 0.5
BLOCKS_PER_DAY = 13
N_BLOCKS = int(round(MAX_DWELL_H / BLOCK_H))  # 130
BLOCKS_PER_YEAR = 252 * BLOCKS_PER_DAY
CAPITAL_FRACTION = 0.01  # canary-1: 1% capital
NEXT_STAGE_CAPITAL_DAYS = 0.05 * 5  # canary-2 (5%, 5 days): the least further exposure of a promotion

P_FILL = 0.97
ORDERS_PER_H = 40 / P_FILL / HOURS_PER_DAY
SLIP_MODEL_BP = 1.0
SLIP_SIZE_SD = 0.3
SLIP_NOISE_BP = 2.0
CALLS_PER_H = 30.0
P_CHAMP = 0.53
CALL_COPULA_RHO = 0.7
VOL_ANN = 0.06
SR_CHAMP = 1.5
GARCH_ALPHA, GARCH_BETA = 0.08, 0.90
TRACK_SD = 0.1
DRAWDOWN_CAP = 0.02
TAIL_SIGMAS = 15.0
BARS_PER_BLOCK = 30  # one-minute bars in a 30-minute block
SIGMA_BLOCK = VOL_ANN / math.sqrt(BLOCKS_PER_YEAR)  # unconditional sd of a block's return

# how many orders to draw per ramp so that the Poisson process covers the maximum dwell
# (mean ~412; 560 is > 7 sd above it)
MAX_ORDERS = 560
N_CALLS = int(CALLS_PER_H * MAX_DWELL_H)


@dataclass(frozen=True)
class Scenario:
    """One ground-truth scenario. ``label``: GOOD (must not be rolled back), BAD (must not be
    promoted), INDIFFERENT (reported, not scored). Parameters default to a healthy challenger."""

    name: str
    label: str
    k: float = 1.0  # realised / modelled slippage
    p_fill: float = P_FILL
    prec_ratio: float = 1.0  # challenger hit rate / champion's
    sr: float = SR_CHAMP  # challenger's annualised Sharpe ratio (simulated book)
    tail_p: float = 0.0  # probability per one-minute bar of a -15 (bar) sigma loss
    tail_per_block: bool = False  # tail_p per 30-minute block instead, each -15 block sigmas (S6b)
    loss: float = 0.0  # live loses this share of each block's simulated move: live = sim - loss |sim|
    scale: float = 1.0  # live = scale x sim (a scaled copy: no loss per block beyond the scaling)
    phi: float = 0.0  # AR(1) coefficient of every per-observation noise
    vol_shift: float = 1.0  # volatility multiplier from mid-stage on
    faults: str = ""  # "" | "faults" (missing rounds, outage, resets) | "silent" (no evidence)
    best_of: int = 0  # S2: the challenger is the best of N zero-edge trials (admission gate)
    note: str = ""


def scenarios() -> list[Scenario]:
    """The benchmark's scenarios (brief / review §6b). Every operational one also with AR(0.5)."""
    base = [
        Scenario("S0 identical", "GOOD"),
        Scenario("S1 better +1 SR", "GOOD", sr=SR_CHAMP + 1.0),
        Scenario("S3 slippage 1.25x", "GOOD", k=1.25),
        Scenario("S3 slippage 1.5x", "INDIFFERENT", k=1.5),
        Scenario("S3 slippage 2x", "BAD", k=2.0),
        Scenario("S3 slippage 3x", "BAD", k=3.0),
        Scenario("S4 fill ratio 0.90", "BAD", p_fill=0.90),
        Scenario("S5 precision 80%", "BAD", prec_ratio=0.8),
        Scenario("S6 tail 2% of bars x -15sd", "BAD", tail_p=0.02),
        Scenario("S6b tail 2% of blocks x -15sd", "BAD", tail_p=0.02, tail_per_block=True,
                 note="rare, large losses (0.26 a day): no mean test resolves them within a ramp"),
        Scenario("S7 fidelity gap -20%", "BAD", loss=0.20,
                 note="live loses 20% of each block's simulated move to execution"),
        Scenario("S7b live = 0.8 x sim", "INDIFFERENT", scale=0.8,
                 note="a scaled copy of a near-zero-mean P&L: as unresolvable in a ramp as edge (review §3)"),
        Scenario("S8 faults + 2x slippage", "BAD", k=2.0, faults="faults"),
        Scenario("S9 vol x3 mid-stage", "GOOD", vol_shift=3.0),
    ]
    out: list[Scenario] = []
    for s in base:
        out.append(s)
        out.append(replace(s, name=s.name + " AR.5", phi=0.5))
    out.append(Scenario("S8 no evidence", "BAD", faults="silent", note="must never promote"))
    for n in (20, 100):
        out.append(Scenario(f"S2 best-of-{n} zero edge", "BAD", sr=0.0, best_of=n))
    return out


@dataclass
class Ramps:
    """R simulated ramps of one scenario (arrays with a leading ramp axis). Observation times in
    hours; ``*_ok`` masks say which observations reach the operator (data faults drop some)."""

    order_t: np.ndarray  # (R, MAX_ORDERS) order times (h); inf past the maximum dwell
    order_ok: np.ndarray  # (R, MAX_ORDERS) observed by the operator
    filled: np.ndarray  # (R, MAX_ORDERS) bool
    modelled: np.ndarray  # (R, MAX_ORDERS) bp
    realised: np.ndarray  # (R, MAX_ORDERS) bp (meaningful where filled)
    call_t: np.ndarray  # (N_CALLS,) call times (h)
    call_ok: np.ndarray  # (R, N_CALLS)
    champ_correct: np.ndarray  # (R, N_CALLS) bool
    chal_correct: np.ndarray  # (R, N_CALLS) bool
    block_t: np.ndarray  # (N_BLOCKS,) block end times (h)
    block_ok: np.ndarray  # (R, N_BLOCKS)
    sim: np.ndarray  # (R, N_BLOCKS) simulated-book return, fraction of capital
    live: np.ndarray  # (R, N_BLOCKS) live return, fraction of capital
    round_ok: np.ndarray  # (R, N_ROUNDS) the operator got a scrape in this round
    guard_round: np.ndarray  # (R,) first round at which the drawdown guard fires; N_ROUNDS if never
    control: dict = field(default_factory=dict)  # champion's order_t/filled/modelled/realised/order_ok


def _ar(e: np.ndarray, phi: float) -> np.ndarray:
    """AR(1) along axis 1 with the same stationary variance as the innovations ``e``."""
    if phi == 0:
        return e
    k = math.sqrt(1 - phi * phi)
    e = e.copy()
    e[:, 0] /= k  # start in the stationary distribution
    return lfilter([k], [1.0, -phi], e, axis=1)


def _t(rng: np.random.Generator, df: float, shape) -> np.ndarray:
    """Student-t with unit variance."""
    return rng.standard_t(df, shape) / math.sqrt(df / (df - 2))


def _vol_mult(t: np.ndarray, sc: Scenario) -> np.ndarray:
    return np.where(t > DWELL_H / 2, sc.vol_shift, 1.0) if sc.vol_shift != 1.0 else np.ones_like(t)


def _orders(rng: np.random.Generator, R: int, sc: Scenario, k: float, p_fill: float):
    gaps = rng.exponential(1.0 / ORDERS_PER_H, (R, MAX_ORDERS))
    t = np.cumsum(gaps, axis=1)
    t[t > MAX_DWELL_H] = np.inf
    z = _ar(rng.standard_normal((R, MAX_ORDERS)), sc.phi)
    filled = z < norm.ppf(p_fill)
    vm = _vol_mult(np.where(np.isfinite(t), t, 0.0), sc)
    modelled = SLIP_MODEL_BP * np.exp(SLIP_SIZE_SD * rng.standard_normal((R, MAX_ORDERS)) - SLIP_SIZE_SD ** 2 / 2) * vm
    noise = _ar(_t(rng, 3, (R, MAX_ORDERS)), sc.phi) * SLIP_NOISE_BP * vm
    # the AR runs along orders; a fill's noise is that of its order (misses just skip values)
    realised = k * modelled + noise
    return t, filled, modelled, realised


def simulate(sc: Scenario, R: int, rng: np.random.Generator) -> Ramps:
    """R ramps of scenario ``sc`` drawn from ``rng`` (the caller passes the same seed for every
    scenario, so policies and scenarios share random numbers)."""
    order_t, filled, modelled, realised = _orders(rng, R, sc, sc.k, sc.p_fill)
    c_t, c_filled, c_mod, c_real = _orders(rng, R, sc, 1.0, P_FILL)

    call_t = (np.arange(N_CALLS) + 1) / CALLS_PER_H
    za = _ar(rng.standard_normal((R, N_CALLS)), sc.phi)
    zw = _ar(rng.standard_normal((R, N_CALLS)), sc.phi)
    zc = CALL_COPULA_RHO * za + math.sqrt(1 - CALL_COPULA_RHO ** 2) * zw
    champ_correct = za < norm.ppf(P_CHAMP)
    chal_correct = zc < norm.ppf(P_CHAMP * sc.prec_ratio)

    block_t = (np.arange(N_BLOCKS) + 1) * BLOCK_H
    b = np.arange(N_BLOCKS) % BLOCKS_PER_DAY
    u = 1 + 0.5 * ((b - 6) / 6) ** 2
    u = u / math.sqrt(np.mean(u ** 2))
    vm = _vol_mult(block_t - BLOCK_H, sc)
    e = _t(rng, 4, (R, N_BLOCKS))
    omega = (1 - GARCH_ALPHA - GARCH_BETA) * SIGMA_BLOCK ** 2
    h = np.empty((R, N_BLOCKS))
    h[:, 0] = SIGMA_BLOCK ** 2
    for j in range(1, N_BLOCKS):
        h[:, j] = omega + GARCH_ALPHA * h[:, j - 1] * e[:, j - 1] ** 2 + GARCH_BETA * h[:, j - 1]
    vol = np.sqrt(h) * u * vm
    mu = sc.sr / math.sqrt(BLOCKS_PER_YEAR) * SIGMA_BLOCK
    sim = mu + vol * e
    if sc.tail_p:
        # 2% of the block's 30 one-minute bars lose 15 bar-sigmas each (issue 14: "hidden tail risk: 2%
        # of bars -15 sigma"): Poisson(30 x 2%) tail bars per block, each -15 x sigma_block / sqrt(30)
        if sc.tail_per_block:
            sim = sim - TAIL_SIGMAS * SIGMA_BLOCK * (rng.random((R, N_BLOCKS)) < sc.tail_p)
        else:
            tails = rng.poisson(sc.tail_p * BARS_PER_BLOCK, (R, N_BLOCKS))
            sim = sim - TAIL_SIGMAS * SIGMA_BLOCK / math.sqrt(BARS_PER_BLOCK) * tails
    track = _ar(_t(rng, 4, (R, N_BLOCKS)), sc.phi) * TRACK_SD * vol
    live = sc.scale * sim - sc.loss * np.abs(sim) + track

    order_ok = np.isfinite(order_t)
    call_ok = np.ones((R, N_CALLS), bool)
    block_ok = np.ones((R, N_BLOCKS), bool)
    round_ok = np.ones((R, N_ROUNDS), bool)
    c_ok = np.isfinite(c_t)
    if sc.faults == "faults":
        round_ok = rng.random((R, N_ROUNDS)) >= 0.10
        start = rng.integers(0, N_ROUNDS - 6, R)
        idx = start[:, None] + np.arange(6)
        np.put_along_axis(round_ok, idx, False, axis=1)
        resets = rng.uniform(0, MAX_DWELL_H, (R, 2))

        def lost(t):  # observed in the 5 minutes before a reset
            t = np.broadcast_to(t, (R,) + t.shape[-1:])
            d = resets[:, :, None] - t[:, None, :]
            return ((d >= 0) & (d < ROUND_H)).any(axis=1)

        order_ok &= ~lost(order_t)
        call_ok &= ~lost(call_t)
        block_ok &= ~lost(block_t)
    elif sc.faults == "silent":
        order_ok[:] = False
        call_ok[:] = False
        block_ok[:] = False

    # drawdown guard on live equity (it needs the P&L gauge, so a silent challenger has none)
    eq = 1.0 + np.cumsum(live, axis=1)
    peak = np.maximum.accumulate(np.maximum(eq, 1.0), axis=1)
    breach = (peak - eq) / peak >= DRAWDOWN_CAP
    if sc.faults == "silent":
        breach[:] = False
    first_block = np.where(breach.any(axis=1), breach.argmax(axis=1), N_BLOCKS)
    guard_round = np.full(R, N_ROUNDS)
    has = first_block < N_BLOCKS
    br = ((first_block[has] + 1) * int(round(BLOCK_H / ROUND_H))) - 1
    guard_round[has] = first_ok_round(round_ok[has], br)
    return Ramps(order_t, order_ok, filled, modelled, realised, call_t, call_ok, champ_correct, chal_correct,
                 block_t, block_ok, sim, live, round_ok, guard_round,
                 control=dict(order_t=c_t, order_ok=c_ok, filled=c_filled, modelled=c_mod, realised=c_real))


def first_ok_round(round_ok: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Per ramp, the first round >= r[i] with a scrape (N_ROUNDS if none): when an event at round
    r is first seen by the operator."""
    R = round_ok.shape[0]
    idx = np.arange(N_ROUNDS)
    # next_ok[i, j] = first ok round >= j
    cand = np.where(round_ok, idx, N_ROUNDS)
    next_ok = np.minimum.accumulate(cand[:, ::-1], axis=1)[:, ::-1]
    r = np.asarray(r)
    out = np.full(R, N_ROUNDS)
    inside = r < N_ROUNDS
    out[inside] = next_ok[np.arange(R)[inside], r[inside]]
    return out


def admission(rng: np.random.Generator, R: int, n_trials: int, days: int = 252, chunk: int = 100):
    """S2's backtest: for each ramp, ``n_trials`` zero-edge strategies over ``days`` daily returns
    (normal, unit sd: the Sharpe ratio is scale-free); the challenger is the trial with the best
    in-sample Sharpe ratio. Returns (best returns (R, days), variance of the trials' SRs (R,))."""
    best = np.empty((R, days))
    var_sr = np.empty(R)
    for lo in range(0, R, chunk):
        hi = min(R, lo + chunk)
        r = rng.standard_normal((hi - lo, n_trials, days))
        sr = r.mean(axis=2) / r.std(axis=2, ddof=1)
        i = sr.argmax(axis=1)
        best[lo:hi] = r[np.arange(hi - lo), i]
        var_sr[lo:hi] = sr.var(axis=1, ddof=1)
    return best, var_sr
