"""The built-in analysis criteria: the seed runbook's acceptance criteria as named templates.

Each :class:`Criterion` names the evidence it reads (fields of :class:`RoleEvidence`, filled
by one batched PromQL query per field for all strategies, :mod:`.evidence`), whether it is a
*safety* guard or a *promotion* criterion, and a judge that turns evidence into a
:class:`~.models.Measurement`.

- Safety guards (``drawdown``, ``criticalAlerts``) are judged on every round whatever the
  sample size, and fail the stage on their first failure (failureLimit 0): a breach is a breach.
- Promotion criteria (``pnlDeviation``, ``slippageRatio``, ``fillRatio``, ``precisionRatio``)
  are ``InsufficientData`` until the challenger has ``minTrades`` trades in the stage: they
  never fail on a handful of trades and never promote without them.
- A non-finite value (NaN, +-Inf) or a failed query is an ``Error``, never a number.

Thresholds are the seed production ops runbook's (seed 003 section 4, DESIGN.md "Default
stages"): P&L within the stage's band of simulated, realised slippage <= 1.5x modelled, fill
ratio >= 95%, precision >= 90% of the champion's, drawdown under the stage cap, no critical
alert firing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Literal

from quantramp.trader.evidence import Sums

from .models import Criteria, Measurement, MetricCriterion, Stage

if TYPE_CHECKING:
    from datetime import datetime

    from .models import Judgement, SequentialStatus

Kind = Literal["safety", "promotion"]


@dataclass(frozen=True)
class RoleEvidence:
    """What one trader role reported for one stage (None = no series).

    P&L in USD, drawdown/fill/precision as ratios 0-1, slippage in bps, trades a count,
    capital in USD. Values may be non-finite as Prometheus returned them; criteria judge that.
    """

    pnl_usd: float | None = None
    simulated_pnl_usd: float | None = None
    drawdown_ratio: float | None = None
    slippage_realized_bps: float | None = None
    slippage_modeled_bps: float | None = None
    fill_ratio: float | None = None
    precision_ratio: float | None = None
    trades: float | None = None
    capital_usd: float | None = None
    day_pnl_usd: float | None = None
    trading_date: float | None = None


@dataclass(frozen=True)
class Evidence:
    """Evidence for one strategy and one round.

    ``subject`` is the role under judgement (the challenger while ramping, the champion once
    promoted), ``champion`` the role compared against. ``critical_alerts`` counts firing
    critical alerts of the subject (None: not measured). ``errors`` maps an evidence field
    (or ``"alerts"``) to the error of its query; ``error`` is an error of the whole round.
    """

    subject: RoleEvidence | None = None
    champion: RoleEvidence | None = None
    critical_alerts: float | None = 0
    errors: dict[str, str] = field(default_factory=dict)
    error: str | None = None
    #: values of the user criteria's queries for the subject (name -> value; absent: no series)
    custom: dict[str, float] = field(default_factory=dict)
    #: the subject's evidence-stream counters in its book scope: criterion -> sums (absent: no series)
    streams: dict[str, Sums] = field(default_factory=dict)


@dataclass(frozen=True)
class Context:
    """What a judge sees: the evidence, the stage's caps, the strategy's thresholds, and whether a
    champion exists to compare with."""

    evidence: Evidence
    stage: Stage
    criteria: Criteria
    has_champion: bool


Judge = Callable[[Context], Measurement]


@dataclass(frozen=True)
class Criterion:
    """A named acceptance criterion: ``reads`` the evidence fields it needs, ``kind`` safety or promotion."""

    name: str
    kind: Kind
    reads: tuple[str, ...]
    judge: Judge
    doc: str


def _m(result: str, value: float | None = None, threshold: float | None = None, message: str = "") -> Measurement:
    return Measurement(value=value, threshold=threshold, result=result, message=message)  # type: ignore[arg-type]


def _bad(ctx: Context, names: tuple[str, ...]) -> Measurement | None:
    """An Error measurement if a query behind ``names`` failed or a value is not finite, else None."""
    ev = ctx.evidence
    if ev.error:
        return _m("Error", message=f"measurement error: {ev.error}")
    for n in names:
        if n in ev.errors:
            return _m("Error", message=f"query for {n} failed: {ev.errors[n]}")
    role = ev.subject
    for n in names:
        v = None if role is None else getattr(role, n, None)
        if v is not None and not math.isfinite(v):
            return _m("Error", message=f"{n} is {v!r}: not a finite number")
    return None


def _sample(ctx: Context) -> Measurement | None:
    """InsufficientData while the subject has fewer than minTrades trades in the stage."""
    role = ctx.evidence.subject
    need = ctx.criteria.min_trades
    trades = None if role is None else role.trades
    if trades is None:
        return _m("InsufficientData", None, need, "no evidence from the trader in this stage yet")
    if trades < need:
        return _m("InsufficientData", float(trades), need, f"{int(trades)} trades in stage, need {need}")
    return None


def _r(v: float) -> float:
    return round(v, 6)


def judge_drawdown(ctx: Context) -> Measurement:
    cap = ctx.stage.max_drawdown
    if cap is None:
        return _m("Skipped", message="the stage has no drawdown cap")
    bad = _bad(ctx, ("drawdown_ratio",))
    if bad:
        return bad
    dd = None if ctx.evidence.subject is None else ctx.evidence.subject.drawdown_ratio
    if dd is None:
        return _m("InsufficientData", None, cap, "drawdown not reported")
    return _m("Successful" if dd <= cap else "Failed", _r(dd), cap, "" if dd <= cap else f"drawdown {dd:.2%} over the {cap:.2%} cap")


def judge_alerts(ctx: Context) -> Measurement:
    ev = ctx.evidence
    if ev.error:
        return _m("Error", message=f"measurement error: {ev.error}")
    if "alerts" in ev.errors:
        return _m("Error", message=f"alerts query failed: {ev.errors['alerts']}")
    n = ev.critical_alerts
    if n is None or not math.isfinite(n):
        return _m("Error", message=f"critical alert count is {n!r}")
    return _m("Successful" if n == 0 else "Failed", float(n), 0, "" if n == 0 else f"{int(n)} critical alert(s) firing")


def judge_pnl(ctx: Context) -> Measurement:
    band = ctx.stage.pnl_band
    if band is None:
        return _m("Skipped", message="the stage has no P&L band")
    names = ("pnl_usd", "simulated_pnl_usd", "capital_usd", "trades")
    bad = _bad(ctx, names) or _sample(ctx)
    if bad:
        return bad
    r = ctx.evidence.subject
    assert r is not None
    if r.pnl_usd is None or r.simulated_pnl_usd is None or r.capital_usd is None:
        return _m("InsufficientData", None, band, "P&L, simulated P&L or capital not reported")
    if r.capital_usd <= 0:
        return _m("Error", None, band, f"trader reports capital {r.capital_usd} USD")
    denom = max(abs(r.simulated_pnl_usd), ctx.criteria.pnl_floor_ratio * r.capital_usd)
    dev = abs(r.pnl_usd - r.simulated_pnl_usd) / denom
    return _m(
        "Successful" if dev <= band else "Failed", _r(dev), band,
        f"live {r.pnl_usd:.2f} USD vs simulated {r.simulated_pnl_usd:.2f} USD",
    )


#: realised slippage within this many bps of a zero model counts as zero (quote rounding)
SLIPPAGE_ZERO_BPS = 0.5


def judge_slippage(ctx: Context) -> Measurement:
    limit = ctx.criteria.max_slippage_ratio
    bad = _bad(ctx, ("slippage_realized_bps", "slippage_modeled_bps", "trades")) or _sample(ctx)
    if bad:
        return bad
    r = ctx.evidence.subject
    assert r is not None
    if r.slippage_realized_bps is None or r.slippage_modeled_bps is None:
        return _m("InsufficientData", None, limit, "slippage not reported")
    if r.slippage_modeled_bps <= 0:
        ok = r.slippage_realized_bps <= SLIPPAGE_ZERO_BPS
        return _m("Successful" if ok else "Failed", None, limit,
                  f"modelled slippage is zero, realised {r.slippage_realized_bps:.3f} bps")
    ratio = r.slippage_realized_bps / r.slippage_modeled_bps
    return _m(
        "Successful" if ratio <= limit else "Failed", _r(ratio), limit,
        f"realised {r.slippage_realized_bps:.3f} bps vs modelled {r.slippage_modeled_bps:.3f} bps",
    )


def judge_fill(ctx: Context) -> Measurement:
    floor = ctx.criteria.min_fill_ratio
    bad = _bad(ctx, ("fill_ratio", "trades")) or _sample(ctx)
    if bad:
        return bad
    r = ctx.evidence.subject
    assert r is not None
    if r.fill_ratio is None:
        return _m("InsufficientData", None, floor, "fill ratio not reported")
    return _m("Successful" if r.fill_ratio >= floor else "Failed", _r(r.fill_ratio), floor)


def judge_precision(ctx: Context) -> Measurement:
    floor = ctx.criteria.min_precision_ratio
    bad = _bad(ctx, ("precision_ratio", "trades")) or _sample(ctx)
    if bad:
        return bad
    r = ctx.evidence.subject
    assert r is not None
    if r.precision_ratio is None:
        return _m("InsufficientData", None, floor, "challenger precision not reported")
    if ctx.has_champion:
        champ = ctx.evidence.champion
        ref = None if champ is None else champ.precision_ratio
        if "precision_ratio" in ctx.evidence.errors:
            return _m("Error", None, floor, "champion precision query failed")
        if ref is None:
            return _m("InsufficientData", None, floor, "champion precision not reported")
        if not math.isfinite(ref):
            return _m("Error", None, floor, f"champion precision is {ref!r}")
        what = "champion"
    elif ctx.criteria.baseline_precision is not None:
        ref, what = ctx.criteria.baseline_precision, "baseline"
    else:
        return _m("Skipped", None, floor, "no champion to compare with and no baselinePrecision set")
    if ref <= 0:
        return _m("InsufficientData", None, floor, f"{what} precision is {ref}: nothing to compare with")
    ratio = r.precision_ratio / ref
    return _m(
        "Successful" if ratio >= floor else "Failed", _r(ratio), floor,
        f"challenger {r.precision_ratio:.4f} vs {what} {ref:.4f}",
    )


_CEL: dict[str, object] = {}


def condition(expr: str) -> Callable[[float], bool]:
    """A compiled success/failure condition (CEL over ``result``; :data:`~.models.CONDITION_RE`
    guarantees the form). Raises ``ValueError`` if it does not compile."""
    import celpy

    prog = _CEL.get(expr)
    if prog is None:
        env = celpy.Environment()
        try:
            prog = env.program(env.compile(expr))
        except Exception as exc:  # noqa: BLE001 - celpy raises its own parse errors
            raise ValueError(f"condition {expr!r}: {exc}") from exc
        _CEL[expr] = prog

    def run(result: float) -> bool:
        return bool(prog.evaluate({"result": celpy.celtypes.DoubleType(result)}))  # type: ignore[attr-defined]

    return run


def judge_custom(ctx: Context, metric: MetricCriterion) -> Measurement:
    """Argo's rule for a user metric: failure condition true -> Failed; else success true ->
    Successful; else Inconclusive (one condition only: its negation decides)."""
    ev = ctx.evidence
    if ev.error:
        return _m("Error", message=f"measurement error: {ev.error}")
    key = f"custom:{metric.name}"
    if key in ev.errors:
        return _m("Error", message=f"query failed: {ev.errors[key]}")
    if metric.kind == "promotion":
        small = _sample(ctx)
        if small:
            return small
    v = ev.custom.get(metric.name)
    if v is None:
        return _m("InsufficientData", message="the query returned no series for this strategy, role and stage")
    if not math.isfinite(v):
        return _m("Error", message=f"the query returned {v!r}: not a finite number")
    try:
        failed = metric.failure_condition is not None and condition(metric.failure_condition)(v)
        ok = metric.success_condition is not None and condition(metric.success_condition)(v)
    except Exception as exc:  # noqa: BLE001 - an evaluation error is an Error measurement
        return _m("Error", _r(v), message=f"condition evaluation failed: {exc}")
    if failed:
        return _m("Failed", _r(v), message=f"failureCondition {metric.failure_condition!r} is true")
    if ok:
        return _m("Successful", _r(v))
    if metric.failure_condition is None:
        return _m("Failed", _r(v), message=f"successCondition {metric.success_condition!r} is false")
    if metric.success_condition is None:
        return _m("Successful", _r(v))
    return _m("Inconclusive", _r(v), message="neither the success nor the failure condition holds")


#: the built-in criteria, in the order they are reported
BUILTIN: tuple[Criterion, ...] = (
    Criterion("drawdown", "safety", ("drawdown_ratio",), judge_drawdown,
              "Max drawdown of the subject in the stage <= the stage's maxDrawdown (seed 003: 2% / 3% / 10%)."),
    Criterion("criticalAlerts", "safety", (), judge_alerts,
              "No critical alert firing for the subject (seed 003: any critical alert fails the stage)."),
    Criterion("pnlDeviation", "promotion", ("pnl_usd", "simulated_pnl_usd", "capital_usd"), judge_pnl,
              "|live - simulated| / max(|simulated|, pnlFloorRatio x capital) <= the stage's pnlBand (seed 003: +-10% / +-15%)."),
    Criterion("slippageRatio", "promotion", ("slippage_realized_bps", "slippage_modeled_bps"), judge_slippage,
              "Realised slippage <= maxSlippageRatio x modelled (seed 003: 1.5x)."),
    Criterion("fillRatio", "promotion", ("fill_ratio",), judge_fill,
              "Fill ratio >= minFillRatio (seed 003: 95%)."),
    Criterion("precisionRatio", "promotion", ("precision_ratio",), judge_precision,
              "Directional precision >= minPrecisionRatio x the champion's (seed 003: 90%), or x baselinePrecision for a first model."),
)
BY_NAME = {c.name: c for c in BUILTIN}


def safety_breached(evidence: Evidence, stage: Stage, criteria: Criteria) -> list[str]:
    """Names of the built-in safety guards (drawdown cap, critical alerts) that ``evidence`` fails
    for ``stage``: the same judges as a round, so that the shell can take a round at once, off
    the interval's grid, when a guard is breached between two rounds."""
    ctx = Context(evidence=evidence, stage=stage, criteria=criteria, has_champion=False)
    return [c.name for c in BUILTIN if c.kind == "safety" and c.judge(ctx).result == "Failed"]



# --- anytime-valid criteria (judgement.method: anytimeValid) ------------------------------------

#: the sign of each stream criterion's statistic: +1 if larger is better, -1 if smaller is
_STREAM_SIGN = {"slippageRatio": -1, "fillRatio": 1, "pnlDeviation": 1, "precisionRatio": 1}


def _prior_variance(name: str, criteria: Criteria) -> float | None:
    """The prior variance a 0/1-valued statistic is shrunk toward (weight minSamples), None for the
    others: the fill indicator's at its floor, f (1 - f); the paired precision difference's at most
    0.25 (a coin's), since it is unknown."""
    if name == "fillRatio":
        return criteria.min_fill_ratio * (1 - criteria.min_fill_ratio)
    return 0.25 if name == "precisionRatio" else None


def _sig(v: float | None) -> float | None:
    return None if v is None else float(f"{v:.6g}")


def judge_stream(
    name: str, evidence: Evidence, stage: Stage, criteria: Criteria, judgement: "Judgement",
    prev: "SequentialStatus | None", elapsed_s: float, n_stages: int, now: "datetime", has_champion: bool = True,
) -> "tuple[Measurement, SequentialStatus | None]":
    """One round of an anytime-valid criterion (:mod:`.judgement`): read the subject's stream counters,
    carry resets, judge the confidence sequence and map its outcome to a Measurement.

    ``prev``: the criterion's sequence so far in this stage (None at the stage's first round);
    ``elapsed_s``: seconds since the stage started; ``n_stages``: stages of the ramp (the rollback
    error is split over the stages before the last and over ``judgement.criteria``). Returns the
    measurement and the new sequence state. A missing reading (a scrape gap, a pod restarting)
    judges the sums seen so far: no data is never a pass. A passed criterion stays passed, but is
    still failed if its upper bound later crosses (the rollback sequence is valid at all times).
    """
    from . import judgement as J
    from .models import SequentialStatus, parse_duration

    if name == "pnlDeviation" and stage.pnl_band is None:
        return _m("Skipped", message="the stage has no P&L band"), prev
    if name == "precisionRatio" and not has_champion:
        return _m("Skipped", message="a first model: no champion to pair its calls with"), prev
    ev = evidence
    if ev.error:
        return _m("Error", message=f"measurement error: {ev.error}"), prev
    if "streams" in ev.errors:
        return _m("Error", message=f"evidence stream query failed: {ev.errors['streams']}"), prev
    seq = prev or SequentialStatus()
    counter = J.Counter(*(Sums(*v) for v in seq.counter)) if len(seq.counter) == 2 else J.Counter()
    reading = ev.streams.get(name)
    if reading is not None:
        if not reading.finite():
            return _m("Error", message=f"{name} evidence stream is not finite"), prev
        counter = counter.observe(reading)
    sums = counter.since_start()
    dwell_s = parse_duration(stage.dwell).total_seconds()
    at_max = dwell_s > 0 and elapsed_s >= judgement.max_dwell_factor * dwell_s
    t_star = seq.t_star
    if t_star is None and sums.n >= judgement.min_samples:
        t_star = J.t_star_for(sums.n, elapsed_s, dwell_s, judgement.min_samples)
    prior = _prior_variance(name, criteria)
    plan = J.Plan(
        alpha_promote=judgement.alpha_promote,
        alpha_rollback=J.rollback_alpha(judgement.alpha_rollback, len(judgement.criteria), max(1, n_stages - 1)),
        min_samples=judgement.min_samples,
        t_star=t_star or float(judgement.min_samples),
        prior_variance=prior or 0.0,
        prior_weight=0.0 if prior is None else float(judgement.min_samples),
        sign=_STREAM_SIGN[name],
    )
    j = J.judge(sums, plan, at_max_dwell=at_max, p_before=seq.p_value)
    outcome = j.outcome
    if seq.decision == "PASS" and outcome != "FAIL":
        outcome = "PASS"
    decided = seq.decided_at if outcome == seq.decision else (now if outcome in ("PASS", "FAIL", "INCONCLUSIVE") else None)
    new = SequentialStatus(
        observations=j.n, mean=_sig(j.mean), lower=_sig(j.lcb), upper=_sig(j.ucb), sigma=_sig(j.sigma), rho1=_sig(j.rho1),
        p_value=float(f"{j.p:.4g}"), decision=outcome, decided_at=decided, t_star=_sig(t_star),
        alpha_rollback=_sig(plan.alpha_rollback),
        counter=[[getattr(s, f) for f in J.FAMILIES] for s in (counter.seen, counter.carry)],
    )
    units = {"slippageRatio": "bps per fill (1.5x modelled - realised)", "fillRatio": "per order (fill fraction - floor)",
             "pnlDeviation": "bps of capital per block", "precisionRatio": "per paired call (right - 0.9 x champion right)"}[name]
    text = f"n={j.n}, mean {_sig(j.mean)} {units}, {j.why}"
    if outcome == "INSUFFICIENT_DATA":
        return _m("InsufficientData", _sig(j.mean), 0.0, text), new
    if outcome == "CONTINUE":
        return _m("Continue", _sig(j.mean), 0.0, text), new
    if outcome == "PASS":
        return _m("Successful", _sig(j.mean), 0.0, "" if seq.decision == "PASS" else text), new
    if outcome == "FAIL":
        return _m("Failed", _sig(j.mean), 0.0, f"anytime-valid: {text} (alpha {plan.alpha_rollback:.4g})"), new
    policy = judgement.policy(name)
    if policy == "pass" and j.n < judgement.min_samples:
        # no evidence is not an undecided test: onInconclusive pass never waves a stage through on fewer
        # observations than minSamples (a challenger that never traded); it pauses for a human instead
        return _m("Inconclusive", _sig(j.mean), 0.0, f"inconclusive at the maximum dwell with too little evidence to "
                  f"pass by onInconclusive (fewer than minSamples {judgement.min_samples}): {text}"), new
    if policy == "pass":
        return _m("Successful", _sig(j.mean), 0.0, f"inconclusive at the maximum dwell, passed (onInconclusive: pass): {text}"), new
    if policy == "rollback":
        return _m("Failed", _sig(j.mean), 0.0, f"inconclusive at the maximum dwell (onInconclusive: rollback): {text}"), new
    return _m("Inconclusive", _sig(j.mean), 0.0, f"inconclusive at the maximum dwell: {text}"), new
