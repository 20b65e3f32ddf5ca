"""The canary engine: pure ramp decisions.

``decide(spec, status, evidence, now)`` → :class:`Decision` (new status and effects).  No I/O:
adapters gather :class:`Evidence` from Prometheus before the call and execute the effects
after it, idempotently.

Analysis semantics follow Argo Rollouts' AnalysisRun (a measurement is Successful, Failed,
Inconclusive or Error; the run fails when failures exceed ``failureLimit``; inconclusive
holds), plus InsufficientData: too few challenger trades in the stage holds and never
promotes.  Missing evidence never promotes.

Criteria (seed runbook, DESIGN.md "Default stages"), each judged on the challenger in the
current stage:

* ``pnlDeviation``: ``|live − simulated| / max(|simulated|, pnlFloorRatio × capital)`` ≤ stage
  ``pnlBand`` (skipped where the stage has no band, e.g. shadow);
* ``slippageRatio``: realised / modelled slippage (bps) ≤ ``maxSlippageRatio`` (1.5);
* ``fillRatio`` ≥ ``minFillRatio`` (0.95);
* ``precisionRatio``: challenger precision / champion precision ≥ ``minPrecisionRatio`` (0.9);
* ``drawdown`` ≤ stage ``maxDrawdown`` (skipped where the stage has no cap);
* ``criticalAlerts``: firing critical alerts for the strategy = 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

from .models import (
    AnalysisResult,
    Condition,
    Measurement,
    Stage,
    TradingStrategySpec,
    TradingStrategyStatus,
    parse_duration,
)

Result = Literal["Successful", "Failed", "Inconclusive", "Error"]


@dataclass(frozen=True)
class RoleEvidence:
    """What one trader role reported for the current stage (None = not reported).

    P&L in USD, drawdown/fill/precision as ratios 0–1, slippage in bps, trades a count,
    capital in USD.
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


@dataclass(frozen=True)
class Evidence:
    """Evidence for one strategy: per-role figures, firing critical alerts, or a query error."""

    challenger: RoleEvidence | None = None
    champion: RoleEvidence | None = None
    critical_alerts: int = 0
    error: str | None = None


# --- effects ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApplyWorkloads:
    """Converge the champion and challenger Deployments to the (new) status."""


@dataclass(frozen=True)
class SetAlias:
    """Point MLflow alias ``alias`` of registered model ``model`` at ``version``."""

    model: str
    alias: str
    version: str


@dataclass(frozen=True)
class RemoveAlias:
    """Remove MLflow alias ``alias`` of registered model ``model`` if it is set."""

    model: str
    alias: str


@dataclass(frozen=True)
class TagVersion:
    """Set MLflow model-version tags (keys under ``quantramp.``)."""

    model: str
    version: str
    tags: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordEvent:
    """A Kubernetes Event on the TradingStrategy; ``type`` Normal or Warning, CamelCase reason."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Effect = ApplyWorkloads | SetAlias | RemoveAlias | TagVersion | RecordEvent
_EFFECTS: dict[str, type] = {t.__name__: t for t in (ApplyWorkloads, SetAlias, RemoveAlias, TagVersion, RecordEvent)}


def effect_to_dict(effect: Effect) -> dict[str, Any]:
    """Serialise an effect for ``status.pendingEffects``: its fields plus ``effect`` (the class name)."""
    return {"effect": type(effect).__name__, **asdict(effect)}


def effect_from_dict(raw: dict[str, Any]) -> Effect:
    """Inverse of :func:`effect_to_dict`; raises ``ValueError`` on an unknown effect name."""
    fields = dict(raw)
    name = fields.pop("effect", None)
    if name not in _EFFECTS:
        raise ValueError(f"unknown effect {name!r}")
    return _EFFECTS[name](**fields)


@dataclass(frozen=True)
class Decision:
    """The outcome of one reconcile/analysis step: the status to write and effects to run."""

    status: TradingStrategyStatus
    effects: list[Effect]
    action: Literal["start", "hold", "advance", "promote", "rollback", "none"]


# --- helpers ------------------------------------------------------------------------------


def set_condition(
    conditions: list[Condition],
    type_: str,
    status: Literal["True", "False", "Unknown"],
    reason: str,
    message: str,
    now: datetime,
    generation: int | None,
) -> list[Condition]:
    """Return ``conditions`` with ``type_`` set; lastTransitionTime moves only when status changes."""
    old = next((c for c in conditions if c.type == type_), None)
    moved = old is None or old.status != status
    new = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        last_transition_time=now if moved else old.last_transition_time,
        observed_generation=generation,
    )
    if old is None:
        return [*conditions, new]
    return [new if c.type == type_ else c for c in conditions]


def _m(value: float | None, threshold: float | None, result: Result, message: str) -> Measurement:
    return Measurement(value=value, threshold=threshold, result=result, message=message)


def evaluate(spec: TradingStrategySpec, stage: Stage, evidence: Evidence, now: datetime) -> AnalysisResult:
    """Judge ``evidence`` against the criteria of ``stage``; returns the analysis with a verdict.

    Verdict: Error if the evidence could not be gathered; Failed if any criterion failed;
    Inconclusive if any is inconclusive (InsufficientData included); else Successful.
    """
    crit = spec.analysis.criteria
    if evidence.error:
        return AnalysisResult(time=now, verdict="Error", message=f"measurement error: {evidence.error}")
    ch = evidence.challenger
    if ch is None or ch.trades is None:
        return AnalysisResult(
            time=now, verdict="Inconclusive", message="InsufficientData: no evidence from the challenger yet"
        )
    if ch.trades < crit.min_trades:
        return AnalysisResult(
            time=now,
            verdict="Inconclusive",
            measurements={"trades": _m(ch.trades, crit.min_trades, "Inconclusive", "too few trades")},
            message=f"InsufficientData: {int(ch.trades)} challenger trades in stage, need {crit.min_trades}",
        )
    ms: dict[str, Measurement] = {"trades": _m(ch.trades, crit.min_trades, "Successful", "")}

    if stage.pnl_band is not None:
        if ch.pnl_usd is None or ch.simulated_pnl_usd is None or not ch.capital_usd:
            ms["pnlDeviation"] = _m(None, stage.pnl_band, "Inconclusive", "P&L or simulated P&L missing")
        else:
            denom = max(abs(ch.simulated_pnl_usd), crit.pnl_floor_ratio * ch.capital_usd)
            dev = abs(ch.pnl_usd - ch.simulated_pnl_usd) / denom if denom > 0 else 0.0
            ok = dev <= stage.pnl_band
            ms["pnlDeviation"] = _m(
                round(dev, 6),
                stage.pnl_band,
                "Successful" if ok else "Failed",
                f"live {ch.pnl_usd:.2f} USD vs simulated {ch.simulated_pnl_usd:.2f} USD",
            )

    if ch.slippage_realized_bps is None or ch.slippage_modeled_bps is None:
        ms["slippageRatio"] = _m(None, crit.max_slippage_ratio, "Inconclusive", "slippage not reported")
    elif ch.slippage_modeled_bps <= 0:
        ok = ch.slippage_realized_bps <= 0
        ms["slippageRatio"] = _m(
            None, crit.max_slippage_ratio, "Successful" if ok else "Failed", "modelled slippage is zero"
        )
    else:
        ratio = ch.slippage_realized_bps / ch.slippage_modeled_bps
        ms["slippageRatio"] = _m(
            round(ratio, 6),
            crit.max_slippage_ratio,
            "Successful" if ratio <= crit.max_slippage_ratio else "Failed",
            f"realised {ch.slippage_realized_bps:.3f} bps vs modelled {ch.slippage_modeled_bps:.3f} bps",
        )

    if ch.fill_ratio is None:
        ms["fillRatio"] = _m(None, crit.min_fill_ratio, "Inconclusive", "fill ratio not reported")
    else:
        ms["fillRatio"] = _m(
            round(ch.fill_ratio, 6),
            crit.min_fill_ratio,
            "Successful" if ch.fill_ratio >= crit.min_fill_ratio else "Failed",
            "",
        )

    champ = evidence.champion
    if ch.precision_ratio is None:
        ms["precisionRatio"] = _m(None, crit.min_precision_ratio, "Inconclusive", "challenger precision missing")
    elif champ is None or not champ.precision_ratio:
        ms["precisionRatio"] = _m(
            None, crit.min_precision_ratio, "Inconclusive", "no champion precision to compare against"
        )
    else:
        ratio = ch.precision_ratio / champ.precision_ratio
        ms["precisionRatio"] = _m(
            round(ratio, 6),
            crit.min_precision_ratio,
            "Successful" if ratio >= crit.min_precision_ratio else "Failed",
            f"challenger {ch.precision_ratio:.4f} vs champion {champ.precision_ratio:.4f}",
        )

    if stage.max_drawdown is not None:
        if ch.drawdown_ratio is None:
            ms["drawdown"] = _m(None, stage.max_drawdown, "Inconclusive", "drawdown not reported")
        else:
            ms["drawdown"] = _m(
                round(ch.drawdown_ratio, 6),
                stage.max_drawdown,
                "Successful" if ch.drawdown_ratio <= stage.max_drawdown else "Failed",
                "",
            )

    ms["criticalAlerts"] = _m(
        float(evidence.critical_alerts),
        0,
        "Successful" if evidence.critical_alerts == 0 else "Failed",
        "" if evidence.critical_alerts == 0 else f"{evidence.critical_alerts} critical alert(s) firing",
    )

    results = {m.result for m in ms.values()}
    failed = sorted(k for k, m in ms.items() if m.result == "Failed")
    if failed:
        verdict: Result = "Failed"
        message = "failed: " + ", ".join(f"{k}={ms[k].value} (threshold {ms[k].threshold})" for k in failed)
    elif "Inconclusive" in results:
        verdict = "Inconclusive"
        message = "inconclusive: " + ", ".join(sorted(k for k, m in ms.items() if m.result == "Inconclusive"))
    else:
        verdict, message = "Successful", "all criteria passed"
    return AnalysisResult(time=now, verdict=verdict, measurements=ms, message=message)


def _enter_stage(status: TradingStrategyStatus, spec: TradingStrategySpec, index: int, now: datetime) -> None:
    stage = spec.stages[index]
    status.stage, status.stage_index = stage.name, index
    status.capital_percent = stage.capital_percent
    status.stage_start_time = now
    status.consecutive_failures = 0


# --- decisions ----------------------------------------------------------------------------


def start(
    spec: TradingStrategySpec, champion_version: str | None, now: datetime, generation: int | None
) -> Decision:
    """Begin a ramp of ``spec.model.version`` at the first stage.

    ``champion_version`` is the MLflow ``champion`` alias when the ramp starts (None if the
    model has no champion yet); it is pinned in the status for the whole ramp.
    """
    status = TradingStrategyStatus(phase="Progressing")
    status.champion_version = champion_version
    status.challenger_version = spec.model.version
    status.observed_generation = generation
    _enter_stage(status, spec, 0, now)
    first = spec.stages[0]
    msg = (
        f"ramping {spec.model.name} v{spec.model.version} against champion "
        f"{'v' + champion_version if champion_version else '(none)'}: stage {first.name} at {first.capital_percent:g}%"
    )
    status.message = msg
    status.conditions = set_condition([], "Progressing", "True", "RampStarted", msg, now, generation)
    status.conditions = set_condition(
        status.conditions, "AnalysisPassing", "Unknown", "AwaitingAnalysis", "no analysis yet", now, generation
    )
    effects: list[Effect] = [
        SetAlias(spec.model.name, "challenger", spec.model.version),
        ApplyWorkloads(),
        RecordEvent("Normal", "RampStarted", msg),
    ]
    return Decision(status=status, effects=effects, action="start")


def decide(
    spec: TradingStrategySpec,
    status: TradingStrategyStatus,
    evidence: Evidence,
    now: datetime,
    generation: int | None = None,
) -> Decision:
    """One analysis step of a Progressing ramp: hold, advance, promote or roll back.

    Does nothing (action ``none``) unless the phase is Progressing and at least
    ``spec.analysis.interval`` has passed since the last analysis (or the stage start).
    Advances only when the verdict is Successful *and* the stage's dwell has elapsed;
    entering the last stage promotes.  Rolls back when consecutive failed analyses exceed
    ``failureLimit``.  Raises ``ValueError`` if the status points outside ``spec.stages``.
    """
    if status.phase != "Progressing":
        return Decision(status=status, effects=[], action="none")
    index = status.stage_index or 0
    if not 0 <= index < len(spec.stages):
        raise ValueError(f"status.stageIndex {index} outside the {len(spec.stages)} stages of the spec")
    stage = spec.stages[index]
    interval = parse_duration(spec.analysis.interval)
    marks = [t for t in (status.last_analysis and status.last_analysis.time, status.stage_start_time) if t]
    if marks and now - max(marks) < interval:
        return Decision(status=status, effects=[], action="none")

    new = status.model_copy(deep=True)
    new.observed_generation = generation if generation is not None else status.observed_generation
    analysis = evaluate(spec, stage, evidence, now)
    new.last_analysis = analysis
    effects: list[Effect] = []
    gen = new.observed_generation
    reason = {
        "Successful": "AnalysisSuccessful",
        "Failed": "AnalysisFailed",
        "Error": "AnalysisError",
        "Inconclusive": "InsufficientData" if analysis.message.startswith("InsufficientData") else "Inconclusive",
    }[analysis.verdict]
    cond_status = {"Successful": "True", "Failed": "False"}.get(analysis.verdict, "Unknown")
    new.conditions = set_condition(new.conditions, "AnalysisPassing", cond_status, reason, analysis.message, now, gen)

    if analysis.verdict == "Failed":
        new.consecutive_failures = status.consecutive_failures + 1
        if new.consecutive_failures > spec.analysis.failure_limit:
            return _rollback(spec, new, stage, analysis.message, now, effects)
        new.message = f"stage {stage.name}: analysis failed ({new.consecutive_failures}/{spec.analysis.failure_limit + 1})"
        return Decision(status=new, effects=effects, action="hold")

    if analysis.verdict != "Successful":
        new.message = f"stage {stage.name}: holding, {analysis.message}"
        return Decision(status=new, effects=effects, action="hold")

    new.consecutive_failures = 0
    dwell = parse_duration(stage.dwell)
    in_stage = now - status.stage_start_time if status.stage_start_time else dwell
    if in_stage < dwell:
        left = int((dwell - in_stage).total_seconds())
        new.message = f"stage {stage.name}: criteria pass, dwelling {left}s more"
        return Decision(status=new, effects=effects, action="hold")

    nxt = index + 1
    if nxt >= len(spec.stages) - 1:
        return _promote(spec, new, now, effects)
    _enter_stage(new, spec, nxt, now)
    target = spec.stages[nxt]
    msg = f"advanced {stage.name} -> {target.name} at {target.capital_percent:g}% ({analysis.message})"
    new.message = msg
    new.conditions = set_condition(new.conditions, "Progressing", "True", "StageAdvanced", msg, now, gen)
    effects += [ApplyWorkloads(), RecordEvent("Normal", "StageAdvanced", msg)]
    return Decision(status=new, effects=effects, action="advance")


def _promote(
    spec: TradingStrategySpec, new: TradingStrategyStatus, now: datetime, effects: list[Effect]
) -> Decision:
    last = len(spec.stages) - 1
    previous = new.champion_version
    _enter_stage(new, spec, last, now)
    new.phase = "Promoted"
    new.champion_version = spec.model.version
    gen = new.observed_generation
    msg = (
        f"promoted {spec.model.name} v{spec.model.version} to champion at {spec.stages[last].name} "
        f"({spec.stages[last].capital_percent:g}%)" + (f"; v{previous} kept as last known good" if previous else "")
    )
    new.message = msg
    new.conditions = set_condition(new.conditions, "Progressing", "False", "Promoted", msg, now, gen)
    new.conditions = set_condition(new.conditions, "Promoted", "True", "Promoted", msg, now, gen)
    if previous and previous != spec.model.version:
        effects.append(TagVersion(spec.model.name, previous, {"quantramp.last_known_good": "true"}))
    effects += [
        TagVersion(
            spec.model.name,
            spec.model.version,
            {"quantramp.status": "promoted", "quantramp.promoted_at": now.isoformat()},
        ),
        SetAlias(spec.model.name, "champion", spec.model.version),
        RemoveAlias(spec.model.name, "challenger"),
        ApplyWorkloads(),
        RecordEvent("Normal", "Promoted", msg),
    ]
    return Decision(status=new, effects=effects, action="promote")


def _rollback(
    spec: TradingStrategySpec,
    new: TradingStrategyStatus,
    stage: Stage,
    reason: str,
    now: datetime,
    effects: list[Effect],
) -> Decision:
    new.phase = "RolledBack"
    new.capital_percent = 0
    gen = new.observed_generation
    msg = f"rolled back {spec.model.name} v{spec.model.version} in stage {stage.name}: {reason}"
    new.message = msg
    new.conditions = set_condition(new.conditions, "Progressing", "False", "RolledBack", msg, now, gen)
    new.conditions = set_condition(new.conditions, "RolledBack", "True", "AnalysisFailed", msg, now, gen)
    effects += [
        ApplyWorkloads(),
        TagVersion(
            spec.model.name,
            spec.model.version,
            {
                "quantramp.status": "rejected",
                "quantramp.rejected_reason": f"stage {stage.name}: {reason}"[:5000],
                "quantramp.rejected_at": now.isoformat(),
            },
        ),
    ]
    if new.champion_version:
        effects.append(SetAlias(spec.model.name, "champion", new.champion_version))
    effects.append(RemoveAlias(spec.model.name, "challenger"))
    effects.append(RecordEvent("Warning", "RolledBack", msg))
    return Decision(status=new, effects=effects, action="rollback")
