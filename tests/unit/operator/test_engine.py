"""The pure ramp engine (quantramp.operator.engine): the state machine, Argo's AnalysisRun
counters, the safety guards and every engine-level bug of the operator review (B1-B14)."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs

from quantramp.operator import engine
from quantramp.operator.engine import Action, Evidence, RoleEvidence, StartFacts
from quantramp.operator.models import TradingStrategySpec

T0 = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)
STAGES = [
    {"name": "shadow", "capitalPercent": 0, "dwell": "30s"},
    {"name": "canary-1", "capitalPercent": 1, "dwell": "30s", "maxDrawdown": 0.02, "pnlBand": 0.1},
    {"name": "canary-2", "capitalPercent": 5, "dwell": "30s", "maxDrawdown": 0.03, "pnlBand": 0.1},
    {"name": "production", "capitalPercent": 100, "dwell": "0s", "maxDrawdown": 0.1, "pnlBand": 0.15},
]


def make_spec(version="2", analysis=None, stages=None, **criteria):
    a = {"interval": "10s", "criteria": {"minTrades": 5, **criteria}}
    a.update(analysis or {})
    return TradingStrategySpec.model_validate(
        {"model": {"name": "m", "version": version}, "capitalUsd": 100_000, "stages": stages or STAGES, "analysis": a}
    )


def role(**kw):
    base = dict(pnl_usd=100.0, simulated_pnl_usd=102.0, drawdown_ratio=0.005, slippage_realized_bps=1.1,
                slippage_modeled_bps=1.0, fill_ratio=0.99, precision_ratio=0.54, trades=30, capital_usd=1000.0)
    base.update(kw)
    return RoleEvidence(**base)


CHAMP = RoleEvidence(precision_ratio=0.53, trades=40, capital_usd=99_000)


def ev(alerts=0, **kw):
    return Evidence(subject=role(**kw), champion=CHAMP, critical_alerts=alerts)


GOOD = ev()


def started(spec=None, champion="1"):
    spec = spec or make_spec()
    d = engine.start(spec, None, StartFacts(True, champion), T0, "NewStrategy", 1)
    return spec, d.status


def run(spec, st, evidence, seconds=11, times=1, **kw):
    """``times`` steps, ``seconds`` apart; returns (last decision, status, now)."""
    now = kw.pop("now", None) or (st.last_analysis.time if st.last_analysis else st.stage_start_time)
    d = None
    for _ in range(times):
        now = now + timedelta(seconds=seconds)
        d = engine.step(spec, st, evidence, now, **kw)
        st = d.status
    return d, st, now


def kinds(st, state="Pending"):
    return [(e.kind, e.alias or e.version, e.version) for e in st.effects if e.state == state]


def to_stage(spec, st, name):
    while st.stage != name:
        d, st, _ = run(spec, st, GOOD, seconds=31)
        assert d.action in ("advance", "hold", "promote")
    return st


# -- start and the pin -----------------------------------------------------------------------
def test_start_pins_the_ramp_and_allocates_from_the_pin():
    spec, st = started()
    assert st.phase == "Progressing" and st.stage == "shadow" and st.seq == 1
    assert (st.ramp.id, st.ramp.candidate_version, st.ramp.champion_version) == ("r1", "2", "1")
    assert st.ramp.stages_hash == engine.stages_hash(spec.stages)
    ch, champ = st.allocation.challenger, st.allocation.champion
    assert (ch.version, ch.paper, ch.replicas, champ.version, champ.capital_percent) == ("2", True, 1, "1", 100.0)
    assert [e.id for e in st.effects] == ["r1.1.0", "r1.1.1", "r1.1.2"]
    assert kinds(st) == [("SetAlias", "challenger", "2"), ("RecordEvent", "", ""), ("Notify", "", "")]


def test_b1_a_version_edit_is_a_new_ramp_and_never_promotes_the_new_version():
    spec, st = started()
    st = to_stage(spec, st, "canary-2")
    v3 = make_spec(version="3")
    assert engine.start_reason(v3, st) == "CandidateChanged"
    # even if the shell called step with the edited spec, the engine judges and promotes the pin (v2) only
    d, st2, _ = run(v3, st, GOOD, seconds=31)
    assert d.action == "promote" and st2.ramp.candidate_version == "2"
    assert ("SetAlias", "champion", "2") in kinds(st2) and all(e.version != "3" for e in st2.effects)
    assert st2.allocation.champion.version == "2"
    # the new ramp starts from the first stage, carrying the outbox of the old one
    d = engine.start(v3, st2, StartFacts(True, "2"), T0 + timedelta(hours=1), "CandidateChanged", 2)
    assert (d.status.ramp.id, d.status.stage, d.status.ramp.candidate_version, d.status.ramp.champion_version) == ("r2", "shadow", "3", "2")
    carried = {e.id: e.state for e in d.status.effects}
    assert all(carried[e.id] in ("Pending", "Superseded") for e in st2.effects if e.state == "Pending")
    # only the old challenger-alias removal gives way, to the new ramp's challenger alias
    assert [e.kind for e in d.status.effects if carried[e.id] == "Superseded" and e.id.startswith("r1.4")] == ["RemoveAlias"]


def test_a_candidate_that_is_not_registered_waits_in_pending_with_the_champion_running():
    spec = make_spec()
    d = engine.start(spec, None, StartFacts(False, "1", "RESOURCE_DOES_NOT_EXIST"), T0, "NewStrategy", 1)
    st = d.status
    assert st.phase == "Pending" and "waiting for m v2" in st.message
    assert st.allocation.champion.version == "1" and st.allocation.challenger.replicas == 0
    assert engine.start(spec, st, StartFacts(False, "1", "x"), T0, "NewStrategy", 1).action == "none"


def test_b14_ramping_the_champion_against_itself_is_refused():
    d = engine.start(make_spec(version="1"), None, StartFacts(True, "1"), T0, "NewStrategy", 1)
    assert d.status.phase == "Failed" and "already the champion" in d.status.message
    assert not d.status.effects


# -- advancing -----------------------------------------------------------------------------
def test_a_sound_candidate_advances_one_stage_per_dwell_and_is_promoted_and_watched():
    spec, st = started()
    d, st, _ = run(spec, st, GOOD)  # criteria pass, dwell not over
    assert d.action == "hold" and "dwelling" in st.message
    seen = []
    for _ in range(10):
        d, st, _ = run(spec, st, GOOD, seconds=31)
        seen.append((d.action, st.stage))
        if st.phase == "Promoted":
            break
    assert seen == [("advance", "canary-1"), ("advance", "canary-2"), ("promote", "production")]
    assert st.allocation.champion.version == "2" and st.allocation.champion.capital_percent == 100
    assert ("SetAlias", "champion", "2") in kinds(st) and ("TagVersion", "1", "1") in kinds(st)
    assert [h.event for h in st.history] == ["RampStarted:NewStrategy", "StageAdvanced", "StageAdvanced", "Promoted"]


def test_b3_a_first_model_without_champion_can_be_promoted():
    spec, st = started(champion=None)
    assert st.allocation.champion.replicas == 0
    d, st, _ = run(spec, st, Evidence(subject=role(), champion=None), seconds=31)
    assert d.action == "advance"
    assert st.last_analysis.measurements["precisionRatio"].result == "Skipped"
    st = to_stage(spec, st, "production")
    assert st.phase == "Promoted"
    # with a configured baseline the first model is compared with it
    spec_b, st_b = started(make_spec(baselinePrecision=0.7), champion=None)
    d, st_b, _ = run(spec_b, st_b, Evidence(subject=role(precision_ratio=0.54)), seconds=31)
    assert d.action == "rollback" and "precisionRatio" in st_b.message


def test_effects_pending_holds_advance_but_not_rollback():
    spec, st = started()
    d, _, _ = run(spec, st, GOOD, seconds=31, effects_pending=True)
    assert d.action == "hold"
    d, _, _ = run(spec, st, ev(alerts=1), seconds=31, effects_pending=True)
    assert d.action == "rollback"


# -- the safety guards and Argo's counters --------------------------------------------------
def test_b4_safety_guards_are_judged_under_min_trades():
    spec, st = started()
    st = to_stage(spec, st, "canary-1")
    d, st2, _ = run(spec, st, ev(trades=4, drawdown_ratio=0.40))
    assert d.action == "rollback" and "drawdown" in st2.message
    d, st2, _ = run(spec, st, ev(trades=4, alerts=3))
    assert d.action == "rollback" and "criticalAlerts" in st2.message
    # a silent challenger (no series at all) with critical alerts still rolls back
    d, st2, _ = run(spec, st, Evidence(subject=None, champion=CHAMP, critical_alerts=2))
    assert d.action == "rollback"
    # and a clean small sample only holds, InsufficientData per promotion criterion
    d, st2, _ = run(spec, st, ev(trades=4))
    assert d.action == "hold"
    ms = st2.last_analysis.measurements
    assert ms["fillRatio"].result == "InsufficientData" and ms["drawdown"].result == "Successful"


def test_b5_failure_limit_counts_every_failure_of_the_stage():
    spec, st = started(make_spec(analysis={"failureLimit": 1}))
    actions = []
    for i in range(6):
        d, st, _ = run(spec, st, ev(fill_ratio=0.5) if i % 2 == 0 else GOOD)
        actions.append(d.action)
        if d.action == "rollback":
            break
    assert actions == ["hold", "hold", "rollback"]
    c = st.criteria["fillRatio"]
    assert (c.count, c.failed, c.successful) == (3, 2, 1)


def test_counters_reset_on_stage_entry_and_keep_the_last_ten_measurements():
    spec, st = started()
    d, st, _ = run(spec, st, GOOD, times=8, seconds=2.5)
    assert st.criteria["fillRatio"].count >= 1
    d, st, _ = run(spec, st, ev(trades=2), times=14)
    c = st.criteria["fillRatio"]
    assert c.count == c.successful + 14 and c.insufficient_data == 14 and len(c.measurements) == 10
    st = to_stage(spec, st, "canary-1")
    assert st.criteria == {}


def test_b10_non_finite_evidence_is_an_error_never_a_number():
    spec, st = started()
    for bad in (dict(trades=math.nan), dict(fill_ratio=math.inf), dict(precision_ratio=math.inf),
                dict(slippage_realized_bps=-math.inf)):
        d, st2, _ = run(spec, st, ev(**bad), seconds=31)
        assert d.action == "hold", bad
        assert st2.last_analysis.verdict == "Error", bad
    spec1, st1 = started()
    st1 = to_stage(spec1, st1, "canary-1")
    d, st2, _ = run(spec1, st1, ev(drawdown_ratio=-math.inf), seconds=31)
    assert d.action == "hold" and st2.last_analysis.measurements["drawdown"].result == "Error"
    d, st2, _ = run(spec1, st1, ev(pnl_usd=math.nan), seconds=31)
    assert d.action == "hold" and st2.last_analysis.measurements["pnlDeviation"].result == "Error"


def test_an_error_is_retried_after_error_retry_not_a_full_interval():
    spec = make_spec(analysis={"interval": "5m", "errorRetry": "10s"})
    spec, st = started(spec)
    d, st, now = run(spec, st, Evidence(error="ConnectionError"), seconds=301)
    assert st.last_analysis.verdict == "Error"
    assert engine.next_round(spec, st) == now + timedelta(seconds=10)
    d, st, now = run(spec, st, GOOD, seconds=11)
    assert engine.next_round(spec, st) == now + timedelta(minutes=5)


def test_rounds_fall_on_a_grid_from_the_stage_start_so_a_late_round_does_not_delay_the_next():
    spec = make_spec(analysis={"interval": "10s"}, stages=[{**STAGES[0], "dwell": "1h"}, STAGES[3]])
    spec, st = started(spec)
    assert engine.next_round(spec, st) == T0 + timedelta(seconds=10)
    d = engine.step(spec, st, GOOD, T0 + timedelta(seconds=17))  # taken 7 s late (a busy operator)
    assert d.action == "hold" and d.status.last_analysis.time == T0 + timedelta(seconds=17)
    assert engine.next_round(spec, d.status) == T0 + timedelta(seconds=20)  # not 27: no drift
    d = engine.step(spec, d.status, GOOD, T0 + timedelta(seconds=45))  # more than a whole interval late
    assert engine.next_round(spec, d.status) == T0 + timedelta(seconds=50)
    assert engine.step(spec, d.status, GOOD, T0 + timedelta(seconds=49)).action == "none"


def test_b8_prometheus_down_demotes_after_the_error_limit_and_budget_never_advances():
    spec, st = started(make_spec(analysis={"consecutiveErrorLimit": 2, "metricErrorBudget": "30s", "errorRetry": "10s"}))
    st = to_stage(spec, st, "canary-2")
    down = Evidence(error="ConnectionError: refused")
    actions = []
    for _ in range(6):
        d, st, _ = run(spec, st, down)
        actions.append(d.action)
        if d.action != "hold":
            break
    assert actions[-1] == "demote" and st.stage == "shadow" and st.allocation.challenger.paper
    assert "advance" not in actions and "promote" not in actions


@pytest.mark.parametrize("policy, phase", [("rollback", "RolledBack"), ("pause", "Paused")])
def test_b8_a_stage_without_evidence_meets_its_progress_deadline(policy, phase):
    spec = make_spec(analysis={"progressDeadline": "1m", "onProgressDeadline": policy})
    spec, st = started(spec)
    st = to_stage(spec, st, "canary-1")
    d, st, _ = run(spec, st, ev(trades=0), times=12)
    assert st.phase == phase and "progressDeadline" in st.message


def test_b7_the_promoted_model_stays_watched_and_rolls_back_to_last_known_good():
    spec, st = started()
    st = to_stage(spec, st, "production")
    assert st.phase == "Promoted"
    d, st, _ = run(spec, st, GOOD, seconds=3 * 86400)
    assert d.action == "hold" and st.phase == "Promoted"
    d, st, _ = run(spec, st, ev(drawdown_ratio=0.45))
    assert d.action == "rollback" and st.phase == "RolledBack"
    assert st.allocation.champion.version == "1" and st.champion_version == "1"
    pend = kinds(st)
    assert ("SetAlias", "champion", "1") in pend and ("TagVersion", "2", "2") in pend
    tag = next(e for e in st.effects if e.kind == "TagVersion" and e.version == "2" and e.state == "Pending" and "quantramp.status" in e.tags)
    assert tag.tags["quantramp.status"] == "rejected" and "drawdown" in tag.tags["quantramp.rejected_reason"]
    # the superseded promotion alias move is never run after the rollback's
    assert ("SetAlias", "champion", "2") not in kinds(st)


def test_b9_a_stage_table_edit_restarts_the_ramp_and_never_raises():
    spec, st = started()
    st = to_stage(spec, st, "canary-2")
    shrunk = make_spec(stages=[STAGES[0], STAGES[3]])
    assert engine.start_reason(shrunk, st) == "StagesChanged"
    assert engine.step(shrunk, st, GOOD, st.stage_start_time + timedelta(seconds=31)).status.ramp.stages_hash == st.ramp.stages_hash
    d = engine.start(shrunk, st, StartFacts(True, "1"), T0, "StagesChanged", 2)
    assert d.status.stage == "shadow" and d.status.ramp.number == 2 and len(d.status.ramp.stages) == 2


def test_b13_a_mark_in_the_future_is_clamped():
    spec, st = started()
    st = st.model_copy(update={"stage_start_time": T0 + timedelta(hours=6)})
    d = engine.step(spec, st, ev(alerts=4), T0 + timedelta(minutes=30))
    assert d.changed and d.status.stage_start_time == T0 + timedelta(minutes=30)
    assert any(c.type == "ClockSkew" for c in d.status.conditions)
    d2, st2, _ = run(spec, d.status, ev(alerts=4), now=T0 + timedelta(minutes=30))
    assert d2.action == "rollback"


def test_b14_edge_cases():
    spec, st = started()
    st = to_stage(spec, st, "canary-1")
    d, _, _ = run(spec, st, ev(slippage_modeled_bps=0.0, slippage_realized_bps=0.01))
    assert d.action != "rollback"
    d, st2, _ = run(spec, st, ev(capital_usd=0.0))
    assert st2.last_analysis.measurements["pnlDeviation"].result == "Error"


# -- manual control ------------------------------------------------------------------------
def act(name, i=1, **kw):
    return Action(id=f"a{i}", action=name, reason=kw.get("reason", "test"), by="alice")


def test_pause_resume_promote_abort_and_retry():
    spec, st = started()
    d, st, now = run(spec, st, GOOD, action=act("pause"))
    assert d.action == "pause" and st.phase == "Paused" and st.pause.reason == "Manual"
    assert st.history[-1].by == "alice"
    d, st, _ = run(spec, st, GOOD, seconds=31)
    assert st.phase == "Paused" and d.action == "hold"  # judged, not advanced
    d, st, _ = run(spec, st, GOOD, action=act("resume", 2))
    assert st.phase == "Progressing"
    # the same action id is taken once
    d, st2, _ = run(spec, st, GOOD, action=act("resume", 2), seconds=1)
    assert d.action == "none"
    d, st, _ = run(spec, st, GOOD, seconds=1, action=act("promote", 3))
    assert d.action == "advance" and st.stage == "canary-1"
    d, st, _ = run(spec, st, GOOD, action=act("abort", 4, reason="desk call"))
    assert st.phase == "Aborted" and st.history[-1].reason == "desk call"
    retry = act("retry", 5)
    assert engine.start_reason(spec, st, retry) == "Retry"
    d = engine.start(spec, st, StartFacts(True, "1"), T0 + timedelta(hours=1), "Retry", 1, retry)
    assert d.status.ramp.id == "r2" and d.status.stage == "shadow" and d.status.handled_action == "a5"


def test_manual_promote_is_refused_over_insufficient_data_and_promote_full_goes_to_production():
    spec, st = started()
    d, st, _ = run(spec, st, ev(trades=1))
    d, st, _ = run(spec, st, ev(trades=1), seconds=1, action=act("promote"))
    assert d.action == "refused" and st.stage == "shadow" and st.history[-1].event == "Refused:promote"
    d, st, _ = run(spec, st, GOOD)
    d, st, _ = run(spec, st, GOOD, seconds=1, action=act("promote-full", 2))
    assert d.action == "promote" and st.phase == "Promoted"
    d, st, _ = run(spec, st, GOOD, seconds=1, action=act("resume", 3))
    assert d.action == "refused"


def test_a_malformed_action_is_an_error_message():
    assert "not JSON" in engine.parse_action("{")
    assert "unknown action" in engine.parse_action('{"id": "x", "action": "yolo"}')
    assert engine.parse_action('{"id": "x", "action": "abort", "by": "bob"}') == Action("x", "abort", "", "bob")


# -- outbox ----------------------------------------------------------------------------------
def test_an_alias_move_is_superseded_by_a_later_one_and_other_effects_are_kept():
    spec, st = started()
    st = to_stage(spec, st, "production")
    d, st, _ = run(spec, st, ev(alerts=2))
    states = {(e.kind, e.alias, e.version): e.state for e in st.effects if e.kind == "SetAlias"}
    assert states[("SetAlias", "champion", "2")] == "Superseded"
    assert states[("SetAlias", "champion", "1")] == "Pending"
    ids = [e.id for e in st.effects]
    assert len(ids) == len(set(ids))


# -- properties ------------------------------------------------------------------------------
EVIDENCE = hs.sampled_from([
    GOOD, ev(trades=2), ev(fill_ratio=0.5), ev(drawdown_ratio=0.5), ev(alerts=1), ev(trades=math.nan),
    Evidence(error="down"), Evidence(subject=None, champion=CHAMP), ev(precision_ratio=0.1),
])
STEP = hs.one_of(
    hs.tuples(hs.just("evidence"), EVIDENCE, hs.integers(1, 120)),
    hs.tuples(hs.just("action"), hs.sampled_from(engine.ACTIONS), hs.integers(1, 60)),
    hs.tuples(hs.just("edit"), hs.sampled_from(["3", "2"]), hs.integers(1, 60)),
)


@settings(max_examples=300, deadline=None)
@given(hs.lists(STEP, min_size=1, max_size=40))
def test_property_never_promotes_on_bad_evidence_never_skips_stages_never_judges_another_version(steps):
    spec, st = started()
    now = T0
    n = 0
    for kind, arg, dt in steps:
        now += timedelta(seconds=dt)
        n += 1
        if kind == "edit":
            spec = make_spec(version=arg)
            continue
        action = Action(id=f"x{n}", action=arg, by="p") if kind == "action" else None
        reason = engine.start_reason(spec, st, action)
        if reason:
            d = engine.start(spec, st, StartFacts(True, "1"), now, reason, 1, action)
            st = d.status
            continue
        before = st
        d = engine.step(spec, st, arg if kind == "evidence" else None, now, action)
        st = d.status
        assert st.ramp.candidate_version == before.ramp.candidate_version  # never another version
        assert {st.allocation.champion.version, st.allocation.challenger.version} <= {before.ramp.champion_version, before.ramp.candidate_version, None}
        if st.phase == "Promoted" and before.phase != "Promoted":
            ms = st.last_analysis.measurements if st.last_analysis else {}
            assert ms and all(m.result not in ("Failed", "Error", "InsufficientData") for m in ms.values())
        if st.phase in ("Progressing", "Paused", "Promoted") and before.phase in ("Progressing", "Paused"):
            jump = (st.stage_index or 0) - (before.stage_index or 0)
            assert jump <= 1 or (action is not None and action.action == "promote-full")


# -- user criteria (Argo metrics with CEL conditions) ----------------------------------------
def with_metric(**m):
    metric = {"name": "edge", "query": "x", "successCondition": "result >= 1", "failureCondition": "result < 0.5", **m}
    return make_spec(analysis={"metrics": [metric]})


def cev(value=None, **kw):
    e = ev(**kw)
    return Evidence(subject=e.subject, champion=e.champion, critical_alerts=0, custom={} if value is None else {"edge": value})


@pytest.mark.parametrize("value, result", [(1.2, "Successful"), (0.2, "Failed"), (0.7, "Inconclusive"),
                                          (math.nan, "Error"), (math.inf, "Error"), (None, "InsufficientData")])
def test_a_user_metric_is_judged_by_its_conditions(value, result):
    spec, st = started(with_metric())
    d, st, _ = run(spec, st, cev(value))
    assert st.last_analysis.measurements["edge"].result == result


def test_one_condition_only_decides_by_its_negation():
    spec, st = started(make_spec(analysis={"metrics": [{"name": "edge", "query": "x", "successCondition": "result > 1"}]}))
    d, st2, _ = run(spec, st, cev(0.7))
    assert st2.last_analysis.measurements["edge"].result == "Failed"
    spec, st = started(make_spec(analysis={"metrics": [{"name": "edge", "query": "x", "failureCondition": "result > 1"}]}))
    d, st2, _ = run(spec, st, cev(0.7))
    assert st2.last_analysis.measurements["edge"].result == "Successful"


def test_inconclusive_pauses_for_a_human_and_promote_releases_it():
    spec, st = started(with_metric())
    d, st, _ = run(spec, st, cev(0.7))
    assert d.action == "pause" and st.phase == "Paused" and st.pause.reason == "InconclusiveLimit"
    d, st, _ = run(spec, st, cev(0.7), seconds=31)
    assert st.phase == "Paused"  # still judged, never advanced by itself
    d, st, _ = run(spec, st, cev(0.7), seconds=1, action=act("promote"))
    assert d.action == "advance" and st.phase == "Progressing" and st.stage == "canary-1"


def test_a_failed_user_metric_rolls_back_beyond_its_failure_limit():
    spec, st = started(with_metric(failureLimit=1))
    d, st, _ = run(spec, st, cev(0.2))
    assert d.action == "hold"
    d, st, _ = run(spec, st, cev(0.2))
    assert d.action == "rollback" and "edge" in st.message


def test_a_safety_user_metric_is_judged_under_min_trades_and_fails_at_once():
    spec, st = started(with_metric(kind="safety", failureLimit=5))
    d, st, _ = run(spec, st, cev(0.2, trades=1))
    assert d.action == "rollback"


def test_a_dry_run_metric_is_recorded_but_never_decides():
    spec, st = started(with_metric(dryRun=True))
    d, st, _ = run(spec, st, cev(0.2), seconds=31)
    assert d.action == "advance" and st.history[-1].event == "StageAdvanced"
    d, st, _ = run(spec, st, cev(0.2), seconds=31)
    assert st.last_analysis.measurements["edge"].result == "Failed" and d.action == "advance"


def test_a_failed_user_query_is_an_error_of_that_criterion_only():
    spec, st = started(with_metric())
    e = cev(1.2)
    e = Evidence(subject=e.subject, champion=e.champion, errors={"custom:edge": "bad_data: parse error"})
    d, st, _ = run(spec, st, e)
    ms = st.last_analysis.measurements
    assert ms["edge"].result == "Error" and "parse error" in ms["edge"].message and ms["fillRatio"].result == "Successful"


def test_an_automated_rollback_leaves_the_champion_at_10_percent_until_a_human_clears_it():
    spec, st = started()
    st = to_stage(spec, st, "canary-2")
    assert st.allocation.champion.capital_percent == 95
    d, st, now = run(spec, st, ev(drawdown_ratio=0.5), seconds=11)
    assert d.action == "rollback" and st.allocation.champion.capital_percent == engine.REDUCED_SIZING_PERCENT == 10
    assert any(c.type == "ReducedSizing" and c.status == "True" for c in st.conditions)
    # a retry ramps again, still at reduced size: the champion never trades more than 10% until cleared
    d = engine.start(spec, st, StartFacts(True, "1"), now, "Retry", 1, Action("a1", "retry", by="oncall"))
    st = d.status
    assert st.phase == "Progressing" and st.allocation.champion.capital_percent == 10
    # clear is refused without a reason, then taken once, by id, and recorded
    d = engine.step(spec, st, None, now, Action("c0", "clear", reason=" ", by="risk"))
    assert d.action == "refused" and d.status.reduced_sizing is not None
    d = engine.step(spec, d.status, None, now, Action("c1", "clear", reason="post-mortem done", by="risk"))
    st = d.status
    assert d.action == "clear" and st.reduced_sizing is None and st.allocation.champion.capital_percent == 100
    assert st.history[-1].event == "SizingCleared" and st.history[-1].by == "risk"
    assert engine.step(spec, st, None, now, Action("c2", "clear", reason="again", by="risk")).action == "refused"


def test_a_manual_abort_does_not_reduce_the_champion():
    spec, st = started()
    st = to_stage(spec, st, "canary-1")
    d = engine.step(spec, st, None, st.stage_start_time, Action("x", "abort", reason="wrong model", by="me"))
    assert d.action == "abort" and d.status.reduced_sizing is None and d.status.allocation.champion.capital_percent == 100
