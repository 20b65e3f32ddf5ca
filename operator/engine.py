"""The ramp engine: a pure state machine of one TradingStrategy's ramp.

``step(spec, status, evidence, now, action, effects_pending)`` and ``start(...)`` return a
:class:`Decision` (the new status, with its effects appended to the outbox). No I/O: the
shell (:mod:`.handlers`) gathers evidence, registry facts and manual actions before the call,
writes the status with optimistic concurrency, converges the Deployments to
``status.allocation`` and runs the outbox.

Phases and the events that move them (:data:`TRANSITIONS` is the whole table)::

    Pending ──start──► Progressing ──advance──► Progressing (next stage)
                         │   ▲  └──promote (entering the last stage)──► Promoted (watched)
              pause /    │   │ resume / promote                             │
       inconclusive /    ▼   │                                   watch fails │
       deadline(pause)  Paused                                              ▼
    Progressing|Paused ──fail / deadline(rollback) / error(rollback)──► RolledBack
    Progressing|Paused ──abort──► Aborted;  RolledBack|Aborted ──retry──► new ramp
    any ──candidate or stage-table change──► new ramp (the shell calls start)

A ramp pins what it judges (model, candidate, champion, stage table) in ``status.ramp``; the
engine judges and allocates only from the pin, never from ``spec.model.version``. Analysis
follows Argo Rollouts' AnalysisRun (see :class:`~.models.Analysis`), with InsufficientData,
safety guards judged on every round, non-finite values as Errors, an error policy with a
staleness budget, and a progress deadline per stage (:mod:`.criteria`).

Stage-table edits mid-ramp follow one rule: a changed table (any field of any stage) starts a
new ramp of the same candidate at the first stage, as Argo resets the step index on a steps
change. A Promoted strategy keeps being watched with the *current* spec's last stage.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Literal

from . import criteria as C
from .admission import Verdict
from .criteria import Evidence, RoleEvidence  # noqa: F401  (re-exported for callers)
from .models import (
    AnalysisResult,
    Condition,
    Criteria,
    CriterionStatus,
    EffectRecord,
    HistoryRecord,
    KillRecord,
    KillState,
    KillSwitch,
    Measurement,
    Pause,
    Ramp,
    ReducedSizing,
    RoleAllocation,
    Stage,
    TradingStrategySpec,
    TradingStrategyStatus,
    parse_duration,
)

#: measurements kept per criterion (Argo's default measurement retention)
KEEP_MEASUREMENTS = 10
#: history records kept in status
KEEP_HISTORY = 50
#: finished effects kept in the outbox for inspection
KEEP_DONE_EFFECTS = 20
#: a mark further in the future than this is clock skew: it is clamped to now
CLOCK_SKEW = timedelta(seconds=5)

ActionName = Literal["promote", "promote-full", "abort", "retry", "pause", "resume", "clear"]
ACTIONS: tuple[str, ...] = ("promote", "promote-full", "abort", "retry", "pause", "resume", "clear")
#: the champion's share of capital after an automated rollback, until cleared (seed 003 §3.1 step 5,
#: §2.1: "resume with reduced position sizes (10% normal)")
REDUCED_SIZING_PERCENT = 10.0
_WORST = ("Failed", "Error", "Inconclusive", "InsufficientData", "Continue", "Successful", "Skipped")


@dataclass(frozen=True)
class Action:
    """A manual action from the API server (annotation ``quantramp.io/action``): taken once, by id."""

    id: str
    action: ActionName
    reason: str = ""
    by: str = "unknown"


@dataclass(frozen=True)
class StartFacts:
    """Facts a new ramp needs: is the candidate registered, the ``champion`` alias now,
    ``holder``: another TradingStrategy (``namespace/name``) that owns the registered model (one
    strategy per model: the aliases it moves are the model's, see :func:`start`), and the
    admission gate's verdict on the candidate's training evidence."""

    candidate_exists: bool
    champion_version: str | None
    error: str = ""
    holder: str = ""
    #: the admission gate's verdict on the candidate (None: not checked, spec.admission.mode off)
    admission: "Verdict | None" = None


@dataclass(frozen=True)
class Decision:
    """The outcome of one step: the status to write (outbox included) and what happened."""

    status: TradingStrategyStatus
    action: str  # none, hold, start, advance, promote, rollback, demote, pause, resume, abort, refused, ...

    @property
    def changed(self) -> bool:
        return self.action != "none"


# --- small pure helpers -------------------------------------------------------------------


def clone(status: TradingStrategyStatus) -> TradingStrategyStatus:
    """A deep copy of ``status`` for the engine to mutate; through pydantic-core, about 3x faster
    than ``model_copy(deep=True)`` (Python's deepcopy), which dominated the operator's CPU at 500
    strategies (``bench/bench_operator.py``)."""
    return TradingStrategyStatus.model_validate(status.model_dump())


def stages_hash(stages: list[Stage]) -> str:
    """A stable hash of a stage table (what a ramp pins)."""
    raw = json.dumps([s.model_dump(by_alias=True, mode="json") for s in stages], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def set_condition(
    conditions: list[Condition], type_: str, status: str, reason: str, message: str, now: datetime, generation: int | None
) -> list[Condition]:
    """``conditions`` with ``type_`` set; lastTransitionTime moves only when its status changes."""
    old = next((c for c in conditions if c.type == type_), None)
    moved = old is None or old.status != status
    new = Condition(
        type=type_, status=status, reason=reason, message=message[:1000],  # type: ignore[arg-type]
        last_transition_time=now if moved or old is None else old.last_transition_time,
        observed_generation=generation,
    )
    if old is None:
        return [*conditions, new]
    return [new if c.type == type_ else c for c in conditions]


def _cond(st: TradingStrategyStatus, type_: str, status: str, reason: str, message: str, now: datetime) -> None:
    st.conditions = set_condition(st.conditions, type_, status, reason, message, now, st.observed_generation)


def _record(st: TradingStrategyStatus, now: datetime, event: str, frm: str, by: str = "operator", reason: str = "") -> None:
    st.history = [*st.history, HistoryRecord(
        seq=st.seq, time=now, event=event, from_phase=frm, to_phase=st.phase, stage=st.stage or "", by=by, reason=reason[:500],
    )][-KEEP_HISTORY:]


def _effects(st: TradingStrategyStatus, new: list[EffectRecord]) -> None:
    """Append ``new`` to the outbox with ids ``<ramp>.<seq>.<i>``; a pending alias effect on the same
    (model, alias), or a pending tag of the same version and key, is superseded by the later one;
    finished ones are trimmed to the last few."""
    ramp = st.ramp.id if st.ramp else "r0"
    targets = {(e.model, e.alias) for e in new if e.kind in ("SetAlias", "RemoveAlias")}
    tagged = {(e.model, e.version, k) for e in new if e.kind == "TagVersion" for k in e.tags}
    kept = []
    for e in st.effects:
        if e.state == "Pending" and (
            (e.kind in ("SetAlias", "RemoveAlias") and (e.model, e.alias) in targets)
            or (e.kind == "TagVersion" and any((e.model, e.version, k) in tagged for k in e.tags))
        ):
            e = e.model_copy(update={"state": "Superseded"})
        kept.append(e)
    fresh = [e.model_copy(update={"id": f"{ramp}.{st.seq}.{i}"}) for i, e in enumerate(new)]
    done = [e for e in kept if e.state != "Pending"][-KEEP_DONE_EFFECTS:]
    st.effects = [e for e in kept if e.state == "Pending" or e in done] + fresh


def _set_alias(model: str, alias: str, version: str) -> EffectRecord:
    return EffectRecord(id="", kind="SetAlias", model=model, alias=alias, version=version)


def _remove_alias(model: str, alias: str) -> EffectRecord:
    return EffectRecord(id="", kind="RemoveAlias", model=model, alias=alias)


def _tag(model: str, version: str, tags: dict[str, str]) -> EffectRecord:
    return EffectRecord(id="", kind="TagVersion", must=False, model=model, version=version, tags=tags)


def _event(type_: str, reason: str, message: str) -> EffectRecord:
    return EffectRecord(id="", kind="RecordEvent", must=False, type=type_, reason=reason, message=message[:1000])


def kill_fingerprint(ks: KillSwitch) -> str:
    """A stable fingerprint of a ``spec.killSwitch``: a new one is a new request by a human."""
    raw = json.dumps(ks.model_dump(mode="json"), sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


#: engagements and releases kept in status.killHistory
KEEP_KILLS = 20


def latch(st: TradingStrategyStatus, now: datetime, reason: str, by: str, trigger: str, flatten: bool, command_id: str,
          observed: str, trigger_key: str, incident: str) -> None:
    """Engage the kill switch's state in ``st`` (mutated): ``status.killSwitch`` for the broadcast
    ``command_id`` (released automatic triggers carried over) and an ``Engaged`` record in
    ``status.killHistory`` (the last :data:`KEEP_KILLS`). The caller adds the effects and conditions."""
    old = st.kill_switch
    st.kill_switch = KillState(
        engaged=True, reason=reason[:500], by=by, trigger=trigger, flatten=flatten, since=now, command_id=command_id,
        observed=observed, trigger_key=trigger_key, released_triggers=old.released_triggers if old else [], incident=incident)
    st.kill_history = [*st.kill_history, KillRecord(time=now, action="Engaged", by=by, reason=reason[:500], trigger=trigger,
                                                    command_id=command_id)][-KEEP_KILLS:]


def killed(status: TradingStrategyStatus | None) -> bool:
    """True while the kill switch is engaged: the ramp is frozen (no advance, no promotion, no progress
    deadline, no new ramp). Rounds are still judged: a failing criterion rolls back (seed 003 §3.1: an
    AUTO_KILL_SWITCH alert engages the kill switch *and* rolls the model back), and an abort goes."""
    return bool(status and status.kill_switch and status.kill_switch.engaged)


def _notify(kind: str) -> EffectRecord:
    return EffectRecord(id="", kind="Notify", must=False, reason=kind)


def _ticket(kind: str, trigger: str, severity: str) -> EffectRecord:
    return EffectRecord(id="", kind="OpenTicket", must=False, reason=kind, message=trigger[:1000], type=severity)


def _comment(transition: str, marker: str, text: str) -> EffectRecord:
    return EffectRecord(id="", kind="CommentTicket", must=False, ticket=transition, reason=marker, message=text[:1000])


def must_effects_pending(status: TradingStrategyStatus) -> bool:
    """True while a must effect (an alias move) of an earlier transition is not done."""
    return any(e.state == "Pending" and e.must for e in status.effects)


# --- allocation ---------------------------------------------------------------------------


def _allocate(st: TradingStrategyStatus) -> None:
    """Set ``st.allocation`` (what each Deployment runs) from the phase and the pinned ramp; the
    champion's share is capped while ``st.reduced_sizing`` is set (after an automated rollback)."""
    _allocate_phase(st)
    cap = st.reduced_sizing.percent if st.reduced_sizing else None
    if cap is not None and st.allocation.champion.capital_percent > cap:
        st.allocation.champion = st.allocation.champion.model_copy(update={"capital_percent": cap})


def _allocate_phase(st: TradingStrategyStatus) -> None:
    ramp = st.ramp
    idx = st.stage_index or 0
    stage = ramp.stages[idx] if ramp and 0 <= idx < len(ramp.stages) else None
    if ramp is None or st.phase in ("Pending", "Failed"):
        v = st.champion_version
        st.allocation.champion = RoleAllocation(version=v, capital_percent=100.0, replicas=1 if v else 0, stage="")
        st.allocation.challenger = RoleAllocation()
        st.capital_percent = 0.0
        return
    if st.phase in ("Progressing", "Paused") and stage is not None:
        pct = stage.capital_percent
        champ = ramp.champion_version
        st.allocation.champion = RoleAllocation(
            version=champ, capital_percent=100.0 - pct, replicas=1 if champ and pct < 100 else 0, stage=stage.name
        )
        paper = pct == 0
        st.allocation.challenger = RoleAllocation(
            version=ramp.candidate_version, capital_percent=100.0 if paper else pct, paper=paper, replicas=1, stage=stage.name
        )
        st.capital_percent = pct
    elif st.phase == "Promoted":
        last = ramp.stages[-1]
        st.allocation.champion = RoleAllocation(version=ramp.candidate_version, capital_percent=100.0, replicas=1, stage=last.name)
        st.allocation.challenger = RoleAllocation(version=ramp.candidate_version, replicas=0, stage=last.name)
        st.capital_percent = 100.0
    else:  # RolledBack, Aborted: the last known good version alone (at reduced size after a rollback)
        champ = ramp.champion_version
        st.allocation.champion = RoleAllocation(version=champ, capital_percent=100.0, replicas=1 if champ else 0, stage="")
        st.allocation.challenger = RoleAllocation(version=ramp.candidate_version, replicas=0)
        st.capital_percent = 0.0


# --- start: a new ramp --------------------------------------------------------------------


def start_reason(spec: TradingStrategySpec, status: TradingStrategyStatus | None, action: Action | None = None) -> str | None:
    """Why a new ramp must start now (``NewStrategy``, ``CandidateChanged``, ``StagesChanged``,
    ``Retry``), or None. The shell then gathers :class:`StartFacts` and calls :func:`start`."""
    if status is None or status.ramp is None:
        return "NewStrategy"
    ramp = status.ramp
    if (ramp.model, ramp.candidate_version) != (spec.model.name, spec.model.version):
        return "CandidateChanged"
    if status.phase in ("Progressing", "Paused") and ramp.stages_hash != stages_hash(spec.stages):
        return "StagesChanged"
    if action is not None and action.id != status.handled_action and action.action == "retry" and status.phase in ("RolledBack", "Aborted"):
        return "Retry"
    return None


def start(
    spec: TradingStrategySpec,
    status: TradingStrategyStatus | None,
    facts: StartFacts,
    now: datetime,
    reason: str,
    generation: int | None,
    action: Action | None = None,
) -> Decision:
    """Begin a ramp of ``spec.model.version`` at the first stage, pinning model, candidate,
    champion (``facts.champion_version``) and the stage table.

    The outbox of the previous ramp is carried, never dropped. If another strategy holds the
    model (``facts.holder``) or the candidate is not registered, the strategy waits in Pending
    (the champion keeps running); if the candidate is
    the champion itself, the strategy is Failed (nothing to ramp).
    """
    old = status or TradingStrategyStatus()
    st = clone(old)
    frm = old.phase
    st.seq = old.seq + 1
    st.observed_generation = generation
    by = action.by if action and reason == "Retry" else "operator"
    if action is not None and reason == "Retry":
        st.handled_action = action.id
    name, cand = spec.model.name, spec.model.version
    if facts.holder:
        return _wait(old, st, now, "ModelInUse", f"waiting for {facts.holder}, which ramps or watches {name}: one TradingStrategy "
                     "per registered model, since the champion and challenger aliases are the model's (use another model "
                     "name, or delete that strategy)", facts.champion_version, f"waiting for {facts.holder}, which")
    if not facts.candidate_exists:
        return _wait(old, st, now, "ModelNotFound", f"waiting for {name} v{cand} in the MLflow registry: {facts.error}",
                     facts.champion_version, f"waiting for {name} v{cand} ")
    verdict = facts.admission
    if verdict is not None and not verdict.admitted:
        return _wait(old, st, now, "AdmissionRefused",
                     f"{name} v{cand} is not admitted by the admission gate (spec.admission): " + "; ".join(verdict.reasons)
                     + ". Register a version with the evidence, or set spec.admission.mode to warn to ramp it anyway",
                     facts.champion_version, f"{name} v{cand} is not admitted")
    if facts.champion_version == cand:
        st.phase = "Failed"
        st.champion_version = facts.champion_version
        st.ramp, st.challenger_version = None, None
        st.message = f"{name} v{cand} is already the champion: nothing to ramp (set spec.model.version to a new candidate)"
        _cond(st, "Progressing", "False", "CandidateIsChampion", st.message, now)
        _allocate(st)
        _record(st, now, "CandidateIsChampion", frm, reason=st.message)
        return Decision(status=st, action="failed")
    number = (old.ramp.number if old.ramp else 0) + 1
    st.ramp = Ramp(
        id=f"r{number}", number=number, model=name, candidate_version=cand, champion_version=facts.champion_version,
        stages=[s.model_copy(deep=True) for s in spec.stages], stages_hash=stages_hash(spec.stages), started_at=now,
    )
    st.phase = "Progressing"
    st.champion_version, st.challenger_version = facts.champion_version, cand
    st.pause = None
    st.last_analysis = None
    _enter_stage(st, 0, now)
    first = st.ramp.stages[0]
    champ = f"v{facts.champion_version}" if facts.champion_version else "(none: a first model)"
    st.message = f"ramp {st.ramp.id} ({reason}): {name} v{cand} against champion {champ}, stage {first.name} at {first.capital_percent:g}%"
    for t in ("Promoted", "RolledBack", "Paused", "Stalled"):
        if any(c.type == t for c in st.conditions):
            _cond(st, t, "False", "NewRamp", st.message, now)
    _cond(st, "Progressing", "True", "RampStarted", st.message, now)
    if verdict is not None:
        figures = ", ".join(f"{k} {v:.3g}" for k, v in verdict.figures.items())
        if verdict.reasons:
            _cond(st, "Admitted", "False", "AdmissionAdvisory", ("ramping anyway (spec.admission.mode warn): "
                  + "; ".join(verdict.reasons))[:1000], now)
        else:
            _cond(st, "Admitted", "True", "AdmissionPassed", f"training evidence passes the gate: {figures}", now)
    _cond(st, "AnalysisPassing", "Unknown", "AwaitingAnalysis", "no analysis in this stage yet", now)
    _allocate(st)
    effects = [_set_alias(name, "challenger", cand), _event("Normal", "RampStarted", st.message), _notify("RampStarted")]
    if reason == "Retry" and old.incident:
        effects.append(_comment(old.incident, f"retry-{st.ramp.id}", f"retried by {by} as ramp {st.ramp.id}: {st.message}"))
    _effects(st, effects)
    _record(st, now, f"RampStarted:{reason}", frm, by=by, reason=st.message)
    return Decision(status=st, action="start")


def _wait(old: TradingStrategyStatus, st: TradingStrategyStatus, now: datetime, reason: str, message: str,
          champion: str | None, same: str) -> Decision:
    """A ramp that cannot start: ``st`` (a copy of ``old``) becomes Pending with ``reason`` (no ramp
    pinned, the challenger scaled to zero, the previous outbox kept); ``none`` if ``old`` already
    waits for the same thing (its message starts with ``same``)."""
    message = message[:1000]
    if old.phase == "Pending" and old.ramp is None and old.message.startswith(same):
        return Decision(status=old, action="none")
    frm = old.phase
    st.phase = "Pending"
    st.champion_version = champion
    st.ramp, st.stage, st.stage_index, st.stage_start_time = None, None, None, None
    st.challenger_version = None
    st.message = message
    _cond(st, "Progressing", "False", reason, message, now)
    _allocate(st)
    _record(st, now, reason, frm, reason=message)
    return Decision(status=st, action="pending")


def _enter_stage(st: TradingStrategyStatus, index: int, now: datetime) -> None:
    assert st.ramp is not None
    stage = st.ramp.stages[index]
    st.stage, st.stage_index, st.stage_start_time = stage.name, index, now
    st.capital_percent = stage.capital_percent
    st.criteria = {}
    st.error_since = None


# --- analysis -----------------------------------------------------------------------------


def _judged_stage(spec: TradingStrategySpec, st: TradingStrategyStatus) -> Stage:
    assert st.ramp is not None
    if st.phase == "Promoted":
        return spec.stages[-1]  # the watch uses the current spec's production caps
    return st.ramp.stages[st.stage_index or 0]


def next_round(spec: TradingStrategySpec, st: TradingStrategyStatus) -> datetime | None:
    """When the next analysis round is due (None: this phase is not analysed).

    Rounds fall on a fixed grid, every ``interval`` from the stage's start, so a round taken late
    (the operator busy, a slow query) does not push every later round back: with N strategies the
    operator keeps N / interval analyses per second. After an Error the next round comes
    ``errorRetry`` after it, off the grid.
    """
    if st.phase not in ("Progressing", "Paused", "Promoted") or st.stage_start_time is None:
        return None
    last = st.last_analysis
    step = parse_duration(spec.analysis.interval)
    if last is not None and last.time >= st.stage_start_time:
        if last.verdict == "Error":
            return last.time + parse_duration(spec.analysis.error_retry)
        if step <= timedelta(0):
            return last.time
        return st.stage_start_time + ((last.time - st.stage_start_time) // step + 1) * step
    return st.stage_start_time + step


@dataclass(frozen=True)
class WatchProbe:
    """What the shell needs to check a strategy's safety guards between rounds without parsing
    its status: the role judged, its stage label, the caps that apply, the criteria."""

    subject: str
    stage_label: str
    stage: Stage
    criteria: Criteria


def watch_probe(spec: TradingStrategySpec, st: TradingStrategyStatus) -> WatchProbe | None:
    """The probe for a strategy in an analysed phase (None otherwise)."""
    if next_round(spec, st) is None or st.ramp is None:
        return None
    subject = "champion" if st.phase == "Promoted" else "challenger"
    return WatchProbe(subject, st.stage or "", _judged_stage(spec, st), spec.analysis.criteria)


def analyse(spec: TradingStrategySpec, st: TradingStrategyStatus, evidence: Evidence, now: datetime) -> AnalysisResult:
    """One round: judge every built-in criterion, update the per-criterion counters in ``st``
    (mutated), and return the round with the worst criterion's verdict."""
    stage = _judged_stage(spec, st)
    has_champion = bool(st.ramp and st.ramp.champion_version) and st.phase != "Promoted"
    ctx = C.Context(evidence=evidence, stage=stage, criteria=spec.analysis.criteria, has_champion=has_champion)
    watched = ("drawdown", "criticalAlerts", "pnlDeviation") if st.phase == "Promoted" else None
    ms: dict[str, Measurement] = {}
    judges = [(c.name, c.judge) for c in C.BUILTIN if watched is None or c.name in watched]
    judges += [(m.name, lambda ctx, m=m: C.judge_custom(ctx, m)) for m in spec.analysis.metrics
               if watched is None or m.kind == "safety"]
    jm = spec.analysis.judgement
    elapsed = (now - st.stage_start_time).total_seconds() if st.stage_start_time else 0.0
    n_stages = len(st.ramp.stages) if st.ramp else len(spec.stages)
    for name, judge in judges:
        cs = st.criteria.get(name, CriterionStatus()).model_copy()  # shallow: its list is replaced, never mutated
        if watched is None and jm.sequential(name):
            m, cs.sequential = C.judge_stream(name, evidence, stage, spec.analysis.criteria, jm, cs.sequential,
                                              elapsed, n_stages, now, has_champion)
            m = m.model_copy(update={"time": now})
        else:
            m = judge(ctx).model_copy(update={"time": now})
        ms[name] = m
        if m.result != "Skipped":
            cs.count += 1
            attr = {"Successful": "successful", "Failed": "failed", "Inconclusive": "inconclusive",
                    "Error": "error", "InsufficientData": "insufficient_data"}.get(m.result)
            if attr:
                setattr(cs, attr, getattr(cs, attr) + 1)
            cs.consecutive_error = cs.consecutive_error + 1 if m.result == "Error" else 0
            # the history keeps a message only where it explains a bad result (as Argo's measurements do):
            # a status small enough that hundreds of strategies' writes stay cheap for the API server
            kept = m if m.result in ("Failed", "Error", "Inconclusive") else m.model_copy(update={"message": ""})
            cs.measurements = [*cs.measurements, kept][-KEEP_MEASUREMENTS:]
        st.criteria[name] = cs
    dry = _dry_run(spec)
    results = [m.result for k, m in ms.items() if k not in dry]
    verdict = next((r for r in _WORST if r in results), "Successful")
    if verdict == "Skipped":
        verdict = "Successful"
    named = [(f"{k}={m.value} (threshold {m.threshold}" + (f"; {m.message})" if m.message else ")")) if verdict == "Failed"
             else f"{k}: {m.message}" for k, m in ms.items() if m.result == verdict and k not in dry]
    waved = [k for k, m in ms.items() if m.result == "Successful" and (seq := st.criteria[k].sequential) is not None
             and seq.decision == "INCONCLUSIVE"]
    message = ("all criteria passed" + (f" ({', '.join(waved)} undecided at the maximum dwell, passed by onInconclusive)" if waved else "")
               if verdict == "Successful" else f"{verdict}: " + "; ".join(named))
    if "Error" in results:
        st.error_since = st.error_since or now
    else:
        st.error_since = None
    return AnalysisResult(time=now, verdict=verdict, measurements=ms, message=message[:2000])  # type: ignore[arg-type]


def _dry_run(spec: TradingStrategySpec) -> set[str]:
    return {m.name for m in spec.analysis.metrics if m.dry_run}


def _limits(spec: TradingStrategySpec, name: str) -> tuple[str, int, int]:
    """(kind, failureLimit, inconclusiveLimit) of a built-in or user criterion."""
    a = spec.analysis
    user = next((m for m in a.metrics if m.name == name), None)
    if user is None:
        return C.BY_NAME[name].kind, a.failure_limit, a.inconclusive_limit
    fl = a.failure_limit if user.failure_limit is None else user.failure_limit
    il = a.inconclusive_limit if user.inconclusive_limit is None else user.inconclusive_limit
    return user.kind, fl, il


def _failing(spec: TradingStrategySpec, st: TradingStrategyStatus, result: AnalysisResult) -> list[str]:
    """Criteria that fail the stage: a safety guard failed this round, or a promotion criterion
    failed more than its failureLimit times in the stage (Argo: failed > failureLimit). Dry-run
    criteria never fail a stage."""
    out = []
    dry = _dry_run(spec)
    for name, m in result.measurements.items():
        if name in dry or name not in st.criteria:
            continue
        kind, limit, _ = _limits(spec, name)
        if kind == "safety" and m.result == "Failed":
            out.append(f"{name}={m.value} ({m.message or 'threshold ' + str(m.threshold)})")
        elif kind == "promotion" and m.result == "Failed" and spec.analysis.judgement.sequential(name) and st.phase != "Promoted":
            out.append(f"{name} {m.message}")  # anytime-valid: its error is the stated alpha, not a count
        elif kind == "promotion" and st.criteria[name].failed > limit:
            out.append(f"{name}={m.value} failed {st.criteria[name].failed}x (threshold {m.threshold}, failureLimit {limit})")
    return out


def _blind(spec: TradingStrategySpec, st: TradingStrategyStatus, now: datetime) -> str | None:
    """Why the evidence counts as unavailable beyond the budget (Argo consecutiveErrorLimit, plus a time budget)."""
    limit = spec.analysis.consecutive_error_limit
    dry = _dry_run(spec)
    over = [n for n, c in st.criteria.items() if c.consecutive_error > limit and n not in dry]
    if not over or st.error_since is None or now - st.error_since < parse_duration(spec.analysis.metric_error_budget):
        return None
    return f"no evidence for {', '.join(over)}: more than {limit} consecutive errors since {st.error_since.isoformat()}"


def _inconclusive(spec: TradingStrategySpec, st: TradingStrategyStatus) -> list[str]:
    dry = _dry_run(spec)
    known = {c.name for c in C.BUILTIN} | {m.name for m in spec.analysis.metrics}
    return [n for n, c in st.criteria.items() if n in known and n not in dry and c.inconclusive > _limits(spec, n)[2]]


def _deadline_passed(spec: TradingStrategySpec, st: TradingStrategyStatus, now: datetime) -> bool:
    """Past dwell + progressDeadline; with anytime-valid criteria the dwell counts up to its maximum
    (maxDwellFactor x dwell), where an undecided criterion applies its onInconclusive first."""
    assert st.ramp is not None and st.stage_start_time is not None
    stage = st.ramp.stages[st.stage_index or 0]
    dwell = parse_duration(stage.dwell)
    if spec.analysis.judgement.method == "anytimeValid":
        dwell = dwell * spec.analysis.judgement.max_dwell_factor
    return now - st.stage_start_time > dwell + parse_duration(spec.analysis.progress_deadline)


def _dwell_left(st: TradingStrategyStatus, now: datetime) -> timedelta:
    assert st.ramp is not None and st.stage_start_time is not None
    stage = st.ramp.stages[st.stage_index or 0]
    return parse_duration(stage.dwell) - (now - st.stage_start_time)


def _all_pass(result: AnalysisResult | None, dry: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
    return result is not None and all(m.result in ("Successful", "Skipped") for k, m in result.measurements.items() if k not in dry)


def _evidence_allows_promote(result: AnalysisResult | None, dry: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
    """A human may promote over Inconclusive, Continue (an undecided anytime-valid criterion) and dwell,
    never over Failed, Error or InsufficientData."""
    return result is not None and all(
        m.result in ("Successful", "Skipped", "Inconclusive", "Continue") for k, m in result.measurements.items() if k not in dry
    )


# --- transitions --------------------------------------------------------------------------
# Each takes (spec, st, now, why, by) with st a private copy, mutates it and returns the action.

Transition = Callable[[TradingStrategySpec, TradingStrategyStatus, datetime, str, str], str]


def _advance(spec: TradingStrategySpec, st: TradingStrategyStatus, now: datetime, why: str, by: str) -> str:
    assert st.ramp is not None
    frm, idx = st.phase, st.stage_index or 0
    if idx + 1 >= len(st.ramp.stages) - 1:
        return _promote(spec, st, now, why, by)
    old = st.ramp.stages[idx]
    st.phase, st.pause = "Progressing", None
    st.seq += 1
    _enter_stage(st, idx + 1, now)
    new = st.ramp.stages[idx + 1]
    st.message = f"advanced {old.name} -> {new.name} at {new.capital_percent:g}% ({why})"
    _cond(st, "Progressing", "True", "StageAdvanced", st.message, now)
    if any(c.type == "Paused" for c in st.conditions):
        _cond(st, "Paused", "False", "Resumed", st.message, now)
    _allocate(st)
    _effects(st, [_event("Normal", "StageAdvanced", st.message), _notify("StageAdvanced")])
    _record(st, now, "StageAdvanced", frm, by, why)
    return "advance"


def _promote(spec: TradingStrategySpec, st: TradingStrategyStatus, now: datetime, why: str, by: str) -> str:
    ramp = st.ramp
    assert ramp is not None
    frm = st.phase
    st.seq += 1
    _enter_stage(st, len(ramp.stages) - 1, now)
    st.phase, st.pause = "Promoted", None
    st.champion_version = ramp.candidate_version
    prev = ramp.champion_version
    st.message = (
        f"promoted {ramp.model} v{ramp.candidate_version} to champion at {ramp.stages[-1].name} "
        f"({ramp.stages[-1].capital_percent:g}%), watched with the production caps"
        + (f"; v{prev} kept as last known good" if prev else "") + f" ({why})"
    )
    _cond(st, "Progressing", "False", "Promoted", st.message, now)
    _cond(st, "Promoted", "True", "Promoted", st.message, now)
    if any(c.type == "Paused" for c in st.conditions):
        _cond(st, "Paused", "False", "Promoted", st.message, now)
    effects = []
    if prev:
        effects.append(_tag(ramp.model, prev, {"quantramp.last_known_good": "true"}))
    effects += [
        _tag(ramp.model, ramp.candidate_version, {"quantramp.status": "promoted", "quantramp.promoted_at": now.isoformat(),
                                                  "quantramp.ramp": ramp.id}),
        _set_alias(ramp.model, "champion", ramp.candidate_version),
        _remove_alias(ramp.model, "challenger"),
        _event("Normal", "Promoted", st.message),
        _notify("Promoted"),
    ]
    _allocate(st)
    _effects(st, effects)
    _record(st, now, "Promoted", frm, by, why)
    return "promote"


def _end(kind: Literal["RolledBack", "Aborted"], critical: bool = False) -> Transition:
    """A rollback (or abort), as the seed runbook orders it (seed 003 §3.1; DESIGN.md "Rollback, in
    order"): (1) the challenger stopped and flattened (its Deployment scales to zero; the StopRole
    effect waits for its pods to be gone and its book flat), (2) the kill switch engaged when the
    trigger was critical (a safety guard failed), (3) the version tagged rejected with the reason,
    (4) the champion alias kept or restored to the last known good version, (4b) no online learning
    to freeze: quantramp models are fixed versions, (5) the champion at 10% of the capital until
    cleared (automated rollbacks), (6) an Event and a Slack notice, (7) a JIRA ticket."""
    def end(spec: TradingStrategySpec, st: TradingStrategyStatus, now: datetime, why: str, by: str) -> str:
        ramp = st.ramp
        assert ramp is not None
        frm, stage = st.phase, st.stage or ""
        retired_stage = (ramp.stages[-1].name if frm == "Promoted" else stage)
        st.seq += 1
        tid = f"{ramp.id}.{st.seq}"
        st.phase, st.pause = kind, None
        st.champion_version = ramp.champion_version
        verb = "rolled back" if kind == "RolledBack" else "aborted"
        keep = f"; champion back to v{ramp.champion_version}" if ramp.champion_version else "; no last known good version: trading stopped"
        st.message = f"{verb} {ramp.model} v{ramp.candidate_version} in {frm} stage {stage}: {why}{keep}"[:1000]
        _cond(st, "Progressing", "False", kind, st.message, now)
        _cond(st, "RolledBack", "True", "Aborted" if kind == "Aborted" else "AnalysisFailed", st.message, now)
        if frm == "Promoted":
            _cond(st, "Promoted", "False", kind, st.message, now)
        status = "rejected" if kind == "RolledBack" else "aborted"
        effects = [] if frm == "Promoted" else [
            EffectRecord(id="", kind="StopRole", must=False, role="challenger", stage=retired_stage, reason=why[:500])]
        if critical and not killed(st):
            reason = f"critical rollback of {ramp.model} v{ramp.candidate_version}: {why}"[:500]
            old_ks = st.kill_switch
            # the spec's kill switch is taken as seen: the automatic kill is not a human's request to undo
            latch(st, now, reason, "quantramp-operator", "Rollback", True, f"{tid}.{len(effects)}",
                  old_ks.observed if old_ks else kill_fingerprint(spec.kill_switch), f"Rollback:{tid}", tid)
            _cond(st, "KillSwitch", "True", "Rollback", reason, now)
            effects.append(EffectRecord(id="", kind="BroadcastKill", engaged=True, flatten=True, reason=reason))
        effects += [
            _tag(ramp.model, ramp.candidate_version, {
                "quantramp.status": status, f"quantramp.{status}_reason": f"{frm} stage {stage}: {why}"[:5000],
                f"quantramp.{status}_at": now.isoformat(), "quantramp.ramp": ramp.id}),
        ]
        effects.append(_set_alias(ramp.model, "champion", ramp.champion_version) if ramp.champion_version
                       else _remove_alias(ramp.model, "champion"))
        effects += [_remove_alias(ramp.model, "challenger")]
        if kind == "RolledBack" and st.reduced_sizing is None:
            st.reduced_sizing = ReducedSizing(percent=REDUCED_SIZING_PERCENT, since=now, reason=st.message[:500])
            _cond(st, "ReducedSizing", "True", "RolledBack",
                  f"the champion trades at most {REDUCED_SIZING_PERCENT:g}% of the capital until cleared (kubectl quantramp clear)", now)
        effects += [_event("Warning", kind, st.message), _notify(kind)]
        if kind == "RolledBack":
            st.incident = tid
            effects.append(_ticket(kind, why, "critical" if critical else "major"))
        _allocate(st)
        _effects(st, effects)
        _record(st, now, kind, frm, by, why)
        return "rollback" if kind == "RolledBack" else "abort"
    return end


def _clear(spec: TradingStrategySpec, st: TradingStrategyStatus, now: datetime, why: str, by: str) -> str:
    """A human clears the reduced sizing of an automated rollback: the champion's full share again."""
    st.reduced_sizing = None
    st.seq += 1
    _cond(st, "ReducedSizing", "False", "Cleared", f"cleared by {by}: {why}", now)
    _allocate(st)
    msg = f"reduced sizing cleared by {by}: {why}"
    _effects(st, [_event("Normal", "SizingCleared", msg), _notify("SizingCleared")]
             + ([_comment(st.incident, f"cleared-{st.seq}", msg)] if st.incident else []))
    _record(st, now, "SizingCleared", st.phase, by, why)
    return "clear"


def _demote(spec: TradingStrategySpec, st: TradingStrategyStatus, now: datetime, why: str, by: str) -> str:
    if (st.stage_index or 0) == 0:
        return _stall(spec, st, now, why, by)
    frm = st.phase
    st.seq += 1
    st.phase, st.pause = "Progressing", None
    _enter_stage(st, 0, now)
    st.message = f"demoted to {st.stage} (paper): {why}"
    _cond(st, "Progressing", "True", "Demoted", st.message, now)
    _allocate(st)
    _effects(st, [_event("Warning", "Demoted", st.message)])
    _record(st, now, "Demoted", frm, by, why)
    return "demote"


def _stall(spec: TradingStrategySpec, st: TradingStrategyStatus, now: datetime, why: str, by: str) -> str:
    st.message = f"stage {st.stage}: stalled, {why}"
    _cond(st, "Stalled", "True", "Stalled", why, now)
    return "hold"


def _pause(reason: str) -> Transition:
    def pause(spec: TradingStrategySpec, st: TradingStrategyStatus, now: datetime, why: str, by: str) -> str:
        frm = st.phase
        st.seq += 1
        st.phase = "Paused"
        st.pause = Pause(reason=reason, message=why[:1000], since=now)
        st.message = f"paused in stage {st.stage} ({reason}): {why}; `kubectl quantramp promote` or `resume` to go on"[:1000]
        _cond(st, "Paused", "True", reason, st.message, now)
        _allocate(st)
        _effects(st, [_event("Warning" if reason != "Manual" else "Normal", "Paused", st.message), _notify("Paused")])
        _record(st, now, "Paused", frm, by, why)
        return "pause"
    return pause


def _resume(spec: TradingStrategySpec, st: TradingStrategyStatus, now: datetime, why: str, by: str) -> str:
    frm = st.phase
    st.seq += 1
    after_kill = st.pause is not None and st.pause.reason == "KillSwitch"
    st.phase, st.pause = "Progressing", None
    for cs in st.criteria.values():
        cs.inconclusive = 0
    if after_kill:  # the evidence of a halted stage is not evidence: the stage starts again (seed 003 §3.2, re-test)
        _enter_stage(st, st.stage_index or 0, now)
        st.last_analysis = None
    st.message = f"resumed in stage {st.stage}" + (" (restarted after the kill switch)" if after_kill else "") + (f": {why}" if why else "")
    _cond(st, "Paused", "False", "Resumed", st.message, now)
    _allocate(st)
    _effects(st, [_event("Normal", "Resumed", st.message)])
    _record(st, now, "Resumed", frm, by, why)
    return "resume"


_rollback = _end("RolledBack")
_rollback_critical = _end("RolledBack", critical=True)
_abort = _end("Aborted")

#: the state machine: (phase, event) -> transition. Events not listed for a phase do nothing
#: (manual ones are refused and recorded).
TRANSITIONS: dict[tuple[str, str], Transition] = {
    ("Progressing", "fail"): _rollback,
    ("Paused", "fail"): _rollback,
    ("Promoted", "fail"): _rollback,
    ("Progressing", "fail:critical"): _rollback_critical,
    ("Paused", "fail:critical"): _rollback_critical,
    ("Promoted", "fail:critical"): _rollback_critical,
    ("Progressing", "pass"): _advance,
    ("Progressing", "inconclusive"): _pause("InconclusiveLimit"),
    ("Progressing", "blind:hold"): _stall,
    ("Paused", "blind:hold"): _stall,
    ("Promoted", "blind:hold"): _stall,
    ("Progressing", "blind:demote"): _demote,
    ("Paused", "blind:demote"): _demote,
    ("Promoted", "blind:demote"): _stall,  # production is not demoted for a monitoring outage
    ("Progressing", "blind:rollback"): _rollback,
    ("Paused", "blind:rollback"): _rollback,
    ("Promoted", "blind:rollback"): _stall,
    ("Progressing", "deadline:pause"): _pause("ProgressDeadlineExceeded"),
    ("Progressing", "deadline:demote"): _demote,
    ("Progressing", "deadline:rollback"): _rollback,
    ("Progressing", "action:pause"): _pause("Manual"),
    ("Paused", "action:resume"): _resume,
    ("Progressing", "action:promote"): _advance,
    ("Paused", "action:promote"): _advance,
    ("Progressing", "action:promote-full"): _promote,
    ("Paused", "action:promote-full"): _promote,
    ("Progressing", "action:abort"): _abort,
    ("Paused", "action:abort"): _abort,
    ("Promoted", "action:abort"): _abort,
    **{(phase, "action:clear"): _clear for phase in ("Progressing", "Paused", "Promoted", "RolledBack", "Aborted")},
}


def _fire(spec: TradingStrategySpec, st: TradingStrategyStatus, event: str, now: datetime, why: str, by: str = "operator") -> str | None:
    fn = TRANSITIONS.get((st.phase, event))
    return None if fn is None else fn(spec, st, now, why, by)


# --- the step -----------------------------------------------------------------------------


def _clamp_skew(st: TradingStrategyStatus, now: datetime) -> bool:
    """Clamp marks written by a clock that ran ahead (another replica): they become ``now``."""
    skewed = False
    if st.stage_start_time and st.stage_start_time > now + CLOCK_SKEW:
        st.stage_start_time, skewed = now, True
    if st.last_analysis and st.last_analysis.time > now + CLOCK_SKEW:
        st.last_analysis = st.last_analysis.model_copy(update={"time": now})
        skewed = True
    if st.error_since and st.error_since > now + CLOCK_SKEW:
        st.error_since, skewed = now, True
    if skewed:
        _cond(st, "ClockSkew", "True", "MarkInFuture", "a status time was ahead of this operator's clock; clamped to now", now)
    return skewed


def _take_action(spec: TradingStrategySpec, st: TradingStrategyStatus, action: Action, now: datetime) -> str:
    st.handled_action = action.id
    if (st.phase, f"action:{action.action}") not in TRANSITIONS:
        return _refuse(st, action, now, f"{action.action} does not apply in phase {st.phase}")
    if killed(st) and action.action in ("promote", "promote-full", "resume"):
        return _refuse(st, action, now, "the kill switch is engaged: release it first (kubectl quantramp kill off NAME --reason ...)")
    if action.action == "clear" and st.reduced_sizing is None:
        return _refuse(st, action, now, "nothing to clear: the champion is not at reduced size")
    if action.action == "clear" and not action.reason.strip():
        return _refuse(st, action, now, "clear needs a reason (recorded in history)")
    if action.action in ("promote", "promote-full") and not _evidence_allows_promote(st.last_analysis, _dry_run(spec)):
        why = "the last analysis has Failed, Error or InsufficientData criteria (or there is none): "
        why += st.last_analysis.message if st.last_analysis else "no analysis in this stage yet"
        return _refuse(st, action, now, why)
    out = _fire(spec, st, f"action:{action.action}", now, action.reason or f"manual {action.action}", action.by)
    if out is None:
        return _refuse(st, action, now, f"{action.action} does not apply in phase {st.phase}")
    return out


def _refuse(st: TradingStrategyStatus, action: Action, now: datetime, why: str) -> str:
    st.seq += 1
    st.message = f"refused {action.action} by {action.by}: {why}"[:1000]
    _record(st, now, f"Refused:{action.action}", st.phase, action.by, why)
    _effects(st, [_event("Warning", "ActionRefused", st.message)])
    return "refused"


def step(
    spec: TradingStrategySpec,
    status: TradingStrategyStatus,
    evidence: Evidence | None,
    now: datetime,
    action: Action | None = None,
    effects_pending: bool = False,
    generation: int | None = None,
    urgent: bool = False,
) -> Decision:
    """Advance the state machine of a started ramp by one step.

    ``evidence`` is this round's (None: no round is taken now); ``urgent``: take the round now,
    before it is due (the shell saw a safety guard breached, :func:`watch_probe`). ``action`` is a manual action
    not yet handled (taken once, by id). ``effects_pending``: must effects of an earlier
    transition are not done yet; the ramp then does not advance or promote (rollbacks, aborts
    and pauses still happen). Returns action ``none`` when nothing changed.
    """
    if status.ramp is None:
        return Decision(status=status, action="none")
    st = clone(status)
    if generation is not None:
        st.observed_generation = generation
    changed = _clamp_skew(st, now)
    if action is not None and action.id != st.handled_action and action.action != "retry":
        return Decision(status=st, action=_take_action(spec, st, action, now))
    if action is not None and action.id != st.handled_action:  # a retry that start_reason did not take
        why = "the kill switch is engaged: release it first" if killed(st) else f"retry does not apply in phase {st.phase}"
        return Decision(status=st, action=_refuse(st, action, now, why))
    due = next_round(spec, st)
    if evidence is None or due is None or (now < due and not urgent):
        return Decision(status=st, action="hold" if changed else "none")

    result = analyse(spec, st, evidence, now)
    st.last_analysis = result
    reason = {"Successful": "AnalysisSuccessful", "Failed": "AnalysisFailed", "Error": "AnalysisError",
              "Inconclusive": "Inconclusive", "InsufficientData": "InsufficientData"}.get(result.verdict, result.verdict)
    _cond(st, "AnalysisPassing", {"Successful": "True", "Failed": "False"}.get(result.verdict, "Unknown"), reason, result.message, now)
    if result.verdict != "Error" and any(c.type == "Stalled" and c.status == "True" for c in st.conditions):
        _cond(st, "Stalled", "False", "EvidenceBack", "evidence is available again", now)

    failing = _failing(spec, st, result)
    if failing:
        critical = any(_limits(spec, n)[0] == "safety" and m.result == "Failed" for n, m in result.measurements.items()
                       if n not in _dry_run(spec))
        event = "fail:critical" if critical else "fail"
        return Decision(status=st, action=_fire(spec, st, event, now, "failed: " + "; ".join(failing)) or "hold")
    blind = _blind(spec, st, now)
    if blind:
        policy = "hold" if st.phase == "Promoted" else spec.analysis.on_metric_error
        return Decision(status=st, action=_fire(spec, st, f"blind:{policy}", now, blind) or "hold")
    stuck = _inconclusive(spec, st)
    if stuck and st.phase == "Progressing":
        return Decision(status=st, action=_fire(spec, st, "inconclusive", now,
                                                f"inconclusive beyond inconclusiveLimit {spec.analysis.inconclusive_limit}: {', '.join(stuck)}") or "hold")
    if killed(st):  # frozen: judged (a failing guard still rolls back, as the runbook's automated rollback does), never advanced
        st.message = f"stage {st.stage}: kill switch engaged ({st.kill_switch.trigger}), the ramp is frozen; {result.message}"[:1000]
        return Decision(status=st, action="hold")
    dry = _dry_run(spec)
    if st.phase == "Progressing" and _all_pass(result, dry) and _dwell_left(st, now) <= timedelta(0) and not effects_pending:
        return Decision(status=st, action=_fire(spec, st, "pass", now, result.message) or "hold")
    if st.phase == "Progressing" and _deadline_passed(spec, st, now):
        policy = spec.analysis.on_progress_deadline
        why = f"stage {st.stage} did not pass its criteria within dwell + progressDeadline {spec.analysis.progress_deadline}: {result.message}"
        return Decision(status=st, action=_fire(spec, st, f"deadline:{policy}", now, why) or "hold")
    if st.phase == "Progressing":
        left = _dwell_left(st, now)
        st.message = (f"stage {st.stage}: criteria pass, dwelling {int(left.total_seconds())}s more" if _all_pass(result, dry) and left > timedelta(0)
                      else f"stage {st.stage}: holding, {result.message}")[:1000]
    elif st.phase == "Promoted":
        st.message = f"promoted v{st.ramp.candidate_version}, watched: {result.message}"[:1000]
    return Decision(status=st, action="hold")


def parse_action(raw: str | None) -> Action | str | None:
    """The manual action in annotation ``quantramp.io/action`` (JSON ``{"id", "action", "reason", "by"}``),
    None if absent, or an error message if malformed."""
    if not raw:
        return None
    try:
        d = json.loads(raw)
    except ValueError as exc:
        return f"quantramp.io/action is not JSON: {exc}"
    if not isinstance(d, dict) or not isinstance(d.get("id"), str) or not d["id"]:
        return "quantramp.io/action needs a non-empty string id"
    if d.get("action") not in ACTIONS:
        return f"quantramp.io/action: unknown action {d.get('action')!r}; one of {', '.join(ACTIONS)}"
    return Action(id=d["id"][:100], action=d["action"], reason=str(d.get("reason", ""))[:500], by=str(d.get("by", "unknown"))[:200])


__all__ = [
    "Action", "Decision", "Evidence", "RoleEvidence", "StartFacts", "TRANSITIONS", "analyse", "must_effects_pending",
    "next_round", "parse_action", "set_condition", "stages_hash", "start", "start_reason", "step",
]
