"""Incident response, pure (quantramp.operator.incident and the engine's rollback): the kill switch
from the spec, the ramp frozen while it is engaged, the automatic kills (AUTO_KILL_SWITCH alerts,
the daily and monthly stop-losses of seed 004), released triggers that do not re-fire, the live
P&L ledger, and the runbook's rollback order (seed 003 §3.1)."""

from __future__ import annotations

from datetime import timedelta

from quantramp.operator import engine, incident
from quantramp.operator.engine import Action, StartFacts
from quantramp.operator.incident import KillEvidence
from quantramp.operator.models import KillSwitch, PnlDay

from test_engine import GOOD, T0, ev, make_spec, run, started, to_stage


def with_kill(spec, **ks):
    return spec.model_copy(update={"kill_switch": KillSwitch(**ks)})


def last(st):
    """The effects of the latest transition (ids ``<ramp>.<seq>.<i>``), in order."""
    prefix = f"{st.ramp.id if st.ramp else 'r0'}.{st.seq}."
    return [e for e in st.effects if e.id.startswith(prefix)]


def kinds(st):
    return [e.kind for e in last(st)]


# -- the kill switch from the spec --------------------------------------------------------------
def test_a_kill_in_the_spec_engages_freezes_the_ramp_and_queues_the_broadcast_first():
    spec, st = started()
    st = to_stage(spec, st, "canary-1")
    killed = with_kill(spec, engaged=True, reason="feed looks wrong", by="alice")
    d = incident.kill_step(killed, st, None, st.stage_start_time)
    st = d.status
    assert d.action == "kill" and st.kill_switch.engaged and st.kill_switch.by == "alice"
    assert st.phase == "Paused" and st.pause.reason == "KillSwitch"
    assert kinds(st)[:1] == ["BroadcastKill"] and {"Notify", "OpenTicket"} <= set(kinds(st))
    b = next(e for e in st.effects if e.kind == "BroadcastKill")
    assert b.engaged is True and b.flatten is True and st.kill_switch.command_id == b.id
    assert st.kill_history[-1].action == "Engaged" and st.history[-1].event == "KillSwitchEngaged"
    # taken once: the same spec is no new request
    assert incident.kill_step(killed, st, None, st.stage_start_time) is None
    # frozen: promote and resume are refused; good rounds past the dwell and the progress deadline never move it
    for act in ("promote", "promote-full", "resume"):
        r = engine.step(killed, st, GOOD, st.stage_start_time + timedelta(hours=1), Action(act, act, by="bob"))
        assert r.action == "refused" and "kill switch" in r.status.message
    d, st2, _ = run(killed, st, GOOD, seconds=3600, times=30)
    assert st2.stage == "canary-1" and st2.phase == "Paused" and st2.last_analysis.verdict == "Successful"
    # but it is still judged: a critical alert (an AUTO_KILL_SWITCH one engaged the switch) rolls the model back
    d, st3, _ = run(killed, st2, ev(alerts=1))
    assert d.action == "rollback" and st3.phase == "RolledBack" and engine.killed(st3)
    assert "BroadcastKill" not in kinds(st3)  # already engaged: not broadcast twice


def test_a_release_needs_a_new_spec_and_a_resume_restarts_the_stage():
    spec, st = started()
    st = to_stage(spec, st, "canary-1")
    now = st.stage_start_time + timedelta(seconds=20)
    st = incident.kill_step(with_kill(spec, engaged=True, reason="halt", by="alice"), st, None, now).status
    released = with_kill(spec, engaged=False, reason="feed fixed", by="risk-lead")
    d = incident.kill_step(released, st, None, now + timedelta(minutes=5))
    st = d.status
    assert d.action == "release" and not st.kill_switch.engaged and st.kill_switch.by == "risk-lead"
    assert kinds(st)[0] == "BroadcastKill" and last(st)[0].engaged is False
    assert any(e.kind == "CommentTicket" and e.ticket == st.kill_switch.incident for e in st.effects)
    assert st.phase == "Paused" and "resume" in st.message  # a human resumes the ramp
    later = now + timedelta(minutes=6)
    d = engine.step(released, st, None, later, Action("r", "resume", by="risk-lead"))
    assert d.action == "resume" and d.status.stage == "canary-1" and d.status.stage_start_time == later
    assert d.status.criteria == {} and d.status.last_analysis is None  # evidence of the halted stage is not evidence


def test_no_new_ramp_starts_while_killed_and_a_strategy_can_be_killed_before_its_first_ramp():
    spec = with_kill(make_spec(), engaged=True, reason="not yet", by="alice")
    d = incident.kill_step(spec, None, None, T0)
    assert d.action == "kill" and d.status.phase == "Pending" and d.status.kill_switch.engaged
    assert kinds(d.status)[0] == "BroadcastKill"


# -- automatic kills ----------------------------------------------------------------------------
def test_an_auto_kill_switch_alert_engages_and_a_released_trigger_does_not_fire_again():
    spec, st = started()
    kev = KillEvidence(day="2026-07-29", day_pnl_usd=0.0, alerts=("QuantrampHardLimitBreach/champion",))
    d = incident.kill_step(spec, st, kev, T0)
    st = d.status
    assert d.action == "kill" and st.kill_switch.trigger == "Alert" and st.kill_switch.by == "quantramp-operator"
    assert st.kill_switch.trigger_key == "Alert:QuantrampHardLimitBreach:champion:2026-07-29"
    # a human releases after review while the alert still fires: it does not re-kill
    st = incident.kill_step(with_kill(spec, engaged=False, reason="reviewed: a bad tick", by="risk"), st, kev, T0).status
    assert not st.kill_switch.engaged
    again = incident.kill_step(with_kill(spec, engaged=False, reason="reviewed: a bad tick", by="risk"), st, kev, T0)
    assert again is None or again.action == "ledger"
    # the same alert on another trading day is a new trigger
    d = incident.kill_step(with_kill(spec, engaged=False, reason="reviewed: a bad tick", by="risk"), st,
                           KillEvidence(day="2026-07-30", day_pnl_usd=0.0, alerts=kev.alerts), T0)
    assert d is not None and d.action == "kill"


def test_daily_stop_loss_fires_at_minus_0_8_percent_of_capital_not_before():
    spec, st = started()  # capital 100,000: the limit is -800 USD
    assert incident.auto_trigger(spec, st, KillEvidence(day="2026-07-29", day_pnl_usd=-799.0), T0) is None
    fired = incident.auto_trigger(spec, st, KillEvidence(day="2026-07-29", day_pnl_usd=-800.0), T0)
    assert fired is not None and fired[0] == "DailyStopLoss" and fired[1] == "DailyStopLoss:2026-07-29"
    off = spec.model_copy(update={"stop_loss": spec.stop_loss.model_copy(update={"enabled": False})})
    assert incident.auto_trigger(off, st, KillEvidence(day="2026-07-29", day_pnl_usd=-5000.0), T0) is None
    tight = spec.model_copy(update={"stop_loss": spec.stop_loss.model_copy(update={"daily_percent": 0.5})})
    assert incident.auto_trigger(tight, st, KillEvidence(day="2026-07-29", day_pnl_usd=-500.0), T0)[0] == "DailyStopLoss"


def test_monthly_stop_loss_needs_ten_days_of_history_then_fires_at_minus_3_percent():
    spec, st = started()
    days = [PnlDay(date=f"2026-07-{d:02d}", pnl_usd=-290.0) for d in range(1, 10)]  # 9 days, -2,610
    st = st.model_copy(update={"pnl_days": days, "pnl_day": PnlDay(date="2026-07-10", pnl_usd=-400.0, at=T0)})
    kev = KillEvidence(day="2026-07-10", day_pnl_usd=-400.0)  # month -3,010 <= -3,000, daily -400 > -800
    assert incident.auto_trigger(spec, st, kev, T0) is None, "9 days of history: the monthly stop-loss waits"
    st = st.model_copy(update={"pnl_days": [PnlDay(date="2026-06-30", pnl_usd=0.0), *days]})
    fired = incident.auto_trigger(spec, st, kev, T0)
    assert fired is not None and fired[0] == "MonthlyStopLoss" and "10 days of history" in fired[2]
    assert incident.auto_trigger(spec, st, KillEvidence(day="2026-07-10", day_pnl_usd=-380.0), T0) is None  # -2,990


def test_the_ledger_records_the_day_at_most_once_an_interval_and_closes_it_when_the_day_rolls():
    spec, st = started()  # interval 10 s
    d = incident.kill_step(spec, st, KillEvidence(day="2026-07-29", day_pnl_usd=-10.0), T0)
    st = d.status
    assert d.action == "ledger" and st.pnl_day.pnl_usd == -10.0 and st.pnl_days == []
    assert incident.kill_step(spec, st, KillEvidence(day="2026-07-29", day_pnl_usd=-12.0), T0 + timedelta(seconds=5)) is None
    st = incident.kill_step(spec, st, KillEvidence(day="2026-07-29", day_pnl_usd=-12.0), T0 + timedelta(seconds=10)).status
    st = incident.kill_step(spec, st, KillEvidence(day="2026-07-30", day_pnl_usd=3.0), T0 + timedelta(seconds=11)).status
    assert [(p.date, p.pnl_usd) for p in st.pnl_days] == [("2026-07-29", -12.0)] and st.pnl_day.date == "2026-07-30"
    # a pod replaying an older day never rewrites the ledger backwards
    assert incident.kill_step(spec, st, KillEvidence(day="2026-07-29", day_pnl_usd=-99.0), T0 + timedelta(minutes=5)) is None


# -- the runbook's rollback, in order -----------------------------------------------------------
def test_a_critical_rollback_runs_the_runbook_in_order_and_engages_the_kill_switch():
    spec, st = started()
    st = to_stage(spec, st, "canary-2")
    d, st, _ = run(spec, st, ev(drawdown_ratio=0.5))  # a safety guard: critical
    assert d.action == "rollback"
    order = kinds(st)
    assert order == ["StopRole", "BroadcastKill", "TagVersion", "SetAlias", "RemoveAlias", "RecordEvent", "Notify", "OpenTicket"]
    stop = st.effects[[e.kind for e in st.effects].index("StopRole")]
    assert stop.role == "challenger" and stop.stage == "canary-2"
    assert st.kill_switch.engaged and st.kill_switch.trigger == "Rollback"
    # the spec did not change: the next ticks keep it engaged (only a human's new spec releases it)
    later = incident.kill_step(spec, st, None, st.stage_start_time + timedelta(seconds=5))
    assert later is None or engine.killed(later.status)
    assert st.allocation.challenger.replicas == 0 and st.allocation.champion.capital_percent == 10
    ticket = next(e for e in st.effects if e.kind == "OpenTicket")
    assert ticket.type == "critical" and st.incident == ticket.id.rsplit(".", 1)[0]


def test_a_non_critical_rollback_stops_the_challenger_but_leaves_the_kill_switch_alone():
    spec, st = started()
    st = to_stage(spec, st, "canary-1")
    d, st, _ = run(spec, st, ev(slippage_realized_bps=5.0))  # promotion criterion, failureLimit 0
    assert d.action == "rollback" and not engine.killed(st)
    order = kinds(st)
    assert order == ["StopRole", "TagVersion", "SetAlias", "RemoveAlias", "RecordEvent", "Notify", "OpenTicket"]


def test_a_clear_and_a_retry_comment_on_the_rollback_ticket():
    spec, st = started()
    st = to_stage(spec, st, "canary-1")
    d, st, now = run(spec, st, ev(slippage_realized_bps=5.0))
    incident_id = st.incident
    d = engine.step(spec, st, None, now, Action("c1", "clear", reason="post-mortem done", by="risk"))
    assert any(e.kind == "CommentTicket" and e.ticket == incident_id for e in d.status.effects)
    d = engine.start(spec, st, StartFacts(True, "1"), now, "Retry", 1, Action("a1", "retry", by="oncall"))
    assert any(e.kind == "CommentTicket" and e.ticket == incident_id and e.reason.startswith("retry-") for e in d.status.effects)


def test_an_abort_stops_the_challenger_and_notifies_without_a_ticket():
    spec, st = started()
    st = to_stage(spec, st, "canary-1")
    d = engine.step(spec, st, None, st.stage_start_time, Action("x", "abort", reason="wrong model", by="me"))
    order = kinds(d.status)
    assert order[0] == "StopRole" and "Notify" in order and "OpenTicket" not in order
