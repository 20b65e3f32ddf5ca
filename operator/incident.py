"""Incident response, pure: the kill switch, the automatic kills (``AUTO_KILL_SWITCH`` alerts, the
daily and monthly stop-losses) and the live P&L ledger they are judged on.

:func:`kill_step` is called by the shell on every tick before :func:`.engine.step`, with the
latest evidence snapshot's :class:`KillEvidence` (no query is sent for it). It returns a
:class:`~.engine.Decision` or None:

- a new ``spec.killSwitch`` (a human: ``kubectl quantramp kill on|off``) engages or releases;
- else, while not engaged, an automatic trigger engages: a firing alert labelled
  ``action="AUTO_KILL_SWITCH"`` (seed 003 §3.1), the day's live P&L at or below
  ``-stopLoss.dailyPercent`` % of capital, or the month's at or below ``-stopLoss.monthlyPercent`` %
  once ``monthlyMinHistoryDays`` days are recorded (seed 004). Each trigger has a key
  (``DailyStopLoss:2026-07-29``, ``Alert:QuantrampHardLimitBreach:champion:2026-07-29``); a
  trigger a human has released does not engage again, so releasing after review does not
  re-kill on the same, still-breached figure;
- else, at most once per analysis interval or when the trading day rolls, the day's live P&L
  is recorded (``status.pnlDay``; a finished day moves to ``status.pnlDays``).

Engaging records who, when, why and the trigger in ``status.killSwitch`` and
``status.killHistory``, freezes the ramp (Progressing -> Paused with reason ``KillSwitch``; no
advance or promotion while engaged, :func:`.engine.killed`), and queues, in order: the broadcast on
the strategy's Redis kill channel (a must effect: the trader pods acknowledge, the shell
records each acknowledgement and the broadcast-to-last-ack latency), an Event, a Slack
notice and a JIRA ticket. Releasing broadcasts the release, notifies, and comments on the
engagement's ticket; a ramp paused by the kill switch stays Paused until a human resumes it,
and resuming restarts the stage's dwell and evidence (seed 003 §3.2: re-test before the ramp
goes on).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from . import engine as E
from .models import (
    EffectRecord, KillRecord, KillState, KillSwitch, Pause, PnlDay, TradingStrategySpec, TradingStrategyStatus, parse_duration,
)

KEEP_KILLS = E.KEEP_KILLS  # kill records kept in status.killHistory
#: finished trading days kept in status.pnlDays (a month of trading days, and some)
KEEP_DAYS = 31
#: trading days summed by the monthly stop-loss (today included): about one calendar month
MONTH_TRADING_DAYS = 21
#: released automatic triggers remembered
KEEP_RELEASED = 20


@dataclass(frozen=True)
class KillEvidence:
    """What the latest evidence snapshot says about one strategy's automatic kill triggers.

    ``day``: the trading date (YYYY-MM-DD, market time) of the live pods' latest bar (None: no
    live pod reports one); ``day_pnl_usd``: the live roles' P&L of that day summed, USD (champion,
    and the challenger in a live stage; paper fills never count); ``alerts``: firing alerts
    labelled ``action="AUTO_KILL_SWITCH"`` for the strategy, as ``alertname/role`` strings;
    ``error``: the snapshot failed (nothing is judged, nothing recorded).
    """

    day: str | None = None
    day_pnl_usd: float | None = None
    alerts: tuple[str, ...] = ()
    error: str | None = None


fingerprint = E.kill_fingerprint
_DEFAULT = fingerprint(KillSwitch())


engaged = E.killed


def requested(spec: TradingStrategySpec, status: TradingStrategyStatus | None) -> bool:
    """True if ``spec.killSwitch`` changed since the operator last took it."""
    seen = status.kill_switch.observed if status and status.kill_switch else _DEFAULT
    return fingerprint(spec.kill_switch) != seen


def month_pnl(status: TradingStrategyStatus) -> tuple[float, int]:
    """(the live P&L of the last :data:`MONTH_TRADING_DAYS` trading days, today included, in USD;
    the number of finished days recorded)."""
    days = status.pnl_days[-(MONTH_TRADING_DAYS - 1):] if MONTH_TRADING_DAYS > 1 else []
    today = status.pnl_day.pnl_usd if status.pnl_day else 0.0
    return sum(d.pnl_usd for d in days) + today, len(status.pnl_days)


def auto_trigger(spec: TradingStrategySpec, status: TradingStrategyStatus, kev: KillEvidence | None, now: datetime) -> tuple[str, str, str] | None:
    """The automatic trigger that should engage the kill switch now: (trigger, key, reason), or None.

    Alerts first (they are the runbook's critical ones), then the daily, then the monthly
    stop-loss. Thresholds: ``spec.stopLoss`` percent of ``spec.capitalUsd`` (seed 004: -0.8% a
    day, -3% a month after 10 days of history). A key in ``killSwitch.releasedTriggers`` never
    fires again.
    """
    if kev is None or kev.error:
        return None
    released = set(status.kill_switch.released_triggers) if status.kill_switch else set()
    day = kev.day or (status.pnl_day.date if status.pnl_day else now.date().isoformat())
    for alert in sorted(kev.alerts):
        name, _, role = alert.partition("/")
        key = f"Alert:{name}:{role}:{day}"
        if key not in released:
            return "Alert", key, f"alert {name} firing for the {role} (action AUTO_KILL_SWITCH)"
    sl = spec.stop_loss
    if not sl.enabled or kev.day_pnl_usd is None or kev.day is None:
        return None
    cap = spec.capital_usd
    daily_limit = -sl.daily_percent / 100 * cap
    key = f"DailyStopLoss:{kev.day}"
    if kev.day_pnl_usd <= daily_limit and key not in released:
        return "DailyStopLoss", key, (f"daily stop-loss: live P&L of {kev.day} is {kev.day_pnl_usd:,.2f} USD "
                                      f"({kev.day_pnl_usd / cap:.3%} of {cap:,.0f}), at or below -{sl.daily_percent:g}%")
    probe = status.model_copy(update={"pnl_day": PnlDay(date=kev.day, pnl_usd=kev.day_pnl_usd)}) if (
        status.pnl_day is None or status.pnl_day.date == kev.day) else status
    month, history = month_pnl(probe)
    key = f"MonthlyStopLoss:{kev.day}"
    if history >= sl.monthly_min_history_days and month <= -sl.monthly_percent / 100 * cap and key not in released:
        return "MonthlyStopLoss", key, (f"monthly stop-loss: live P&L of the last {min(history + 1, MONTH_TRADING_DAYS)} trading days is "
                                        f"{month:,.2f} USD ({month / cap:.3%} of {cap:,.0f}), at or below -{sl.monthly_percent:g}% "
                                        f"({history} days of history)")
    return None


def _broadcast(engage: bool, flatten: bool, reason: str) -> EffectRecord:
    return EffectRecord(id="", kind="BroadcastKill", engaged=engage, flatten=flatten, reason=reason[:500])


def transition_id(st: TradingStrategyStatus) -> str:
    """``<ramp>.<seq>`` of the transition being built in ``st`` (its effects' id prefix)."""
    return f"{st.ramp.id if st.ramp else 'r0'}.{st.seq}"


def engage(spec: TradingStrategySpec, st: TradingStrategyStatus, now: datetime, reason: str, by: str, trigger: str,
           flatten: bool, observed: str, trigger_key: str = "") -> None:
    """Engage the kill switch in ``st`` (a private copy, mutated): state, history, freeze, effects."""
    st.seq += 1
    tid = transition_id(st)
    E.latch(st, now, reason, by, trigger, flatten, f"{tid}.0", observed, trigger_key, tid)
    st.incident = tid
    frm = st.phase
    msg = f"kill switch engaged by {by} ({trigger}): {reason}"
    if st.phase == "Progressing":
        st.phase = "Paused"
        st.pause = Pause(reason="KillSwitch", message=msg[:1000], since=now)
        E._cond(st, "Paused", "True", "KillSwitch", msg, now)
    st.message = f"{msg}; no orders that add risk" + ("; flattening" if flatten else "") + (
        "; the ramp is frozen" if st.ramp else "")
    E._cond(st, "KillSwitch", "True", trigger, msg, now)
    severity = "critical"
    E._effects(st, [_broadcast(True, flatten, reason), E._event("Warning", "KillSwitchEngaged", msg),
                    E._notify("KillEngaged"), E._ticket("KillEngaged", msg, severity)])
    E._record(st, now, "KillSwitchEngaged", frm, by, reason)


def release(spec: TradingStrategySpec, st: TradingStrategyStatus, now: datetime, reason: str, by: str, observed: str) -> None:
    """Release the kill switch in ``st`` (mutated); the automatic trigger that engaged it, if any, is
    remembered as released and does not engage again."""
    old = st.kill_switch
    assert old is not None
    st.seq += 1
    tid = transition_id(st)
    released = [*old.released_triggers, old.trigger_key][-KEEP_RELEASED:] if old.trigger_key else old.released_triggers
    st.kill_switch = KillState(
        engaged=False, reason=reason[:500], by=by, trigger="Manual", flatten=False, since=now, command_id=f"{tid}.0",
        observed=observed, released_triggers=released, incident=old.incident,
    )
    st.kill_history = [*st.kill_history, KillRecord(time=now, action="Released", by=by, reason=reason[:500],
                                                    command_id=f"{tid}.0")][-KEEP_KILLS:]
    msg = f"kill switch released by {by}: {reason}"
    st.message = msg + ("; `kubectl quantramp resume` restarts the stage (dwell and evidence from zero)"
                        if st.phase == "Paused" and st.pause and st.pause.reason == "KillSwitch" else "")
    E._cond(st, "KillSwitch", "False", "Released", msg, now)
    effects = [_broadcast(False, False, reason), E._event("Normal", "KillSwitchReleased", msg), E._notify("KillReleased")]
    if old.incident:
        effects.append(E._comment(old.incident, f"released-{tid}", msg))
    E._effects(st, effects)
    E._record(st, now, "KillSwitchReleased", st.phase, by, reason)


def day_due(spec: TradingStrategySpec, status: TradingStrategyStatus, kev: KillEvidence | None, now: datetime) -> bool:
    """Whether the day's live P&L should be recorded now (cheap, no copy): the trading day rolled
    forward, or an analysis interval passed and the figure moved. A pod reporting an older day
    (a replay restarted) never rewrites the ledger backwards."""
    if kev is None or kev.error or kev.day is None or kev.day_pnl_usd is None:
        return False
    cur = status.pnl_day
    if cur is None or kev.day > cur.date:
        return True
    if kev.day < cur.date or cur.pnl_usd == kev.day_pnl_usd:
        return False
    return cur.at is None or now - cur.at >= parse_duration(spec.analysis.interval)


def record_day(st: TradingStrategyStatus, kev: KillEvidence, now: datetime) -> None:
    """Record the day's live P&L in ``st`` (mutated; call when :func:`day_due`): a finished day
    moves to ``pnlDays``."""
    assert kev.day is not None and kev.day_pnl_usd is not None
    cur = st.pnl_day
    if cur is not None and cur.date < kev.day and all(d.date != cur.date for d in st.pnl_days):
        st.pnl_days = [*st.pnl_days, cur.model_copy(update={"at": None})][-KEEP_DAYS:]
    st.pnl_day = PnlDay(date=kev.day, pnl_usd=kev.day_pnl_usd, at=now)


def kill_step(spec: TradingStrategySpec, status: TradingStrategyStatus | None, kev: KillEvidence | None, now: datetime,
              generation: int | None = None) -> E.Decision | None:
    """The kill switch's step (see the module docstring): a Decision with action ``kill``,
    ``release`` or ``ledger``, or None when nothing changes."""
    ks = spec.kill_switch
    if requested(spec, status):
        st = E.clone(status or E.TradingStrategyStatus())
        st.observed_generation = generation if generation is not None else st.observed_generation
        fp = fingerprint(ks)
        if ks.engaged:
            if engaged(st):  # already engaged (automatically): the human's request is taken over it
                st.kill_switch = st.kill_switch.model_copy(update={"observed": fp, "by": ks.by or "unknown", "reason": ks.reason,
                                                                   "trigger": ks.trigger})
                return E.Decision(status=st, action="kill-taken")
            engage(spec, st, now, ks.reason, ks.by or "unknown", ks.trigger, ks.flatten, fp)
            return E.Decision(status=st, action="kill")
        if engaged(st):
            release(spec, st, now, ks.reason or "released", ks.by or "unknown", fp)
            return E.Decision(status=st, action="release")
        st.kill_switch = (st.kill_switch.model_copy(update={"observed": fp}) if st.kill_switch
                          else KillState(engaged=False, since=now, command_id="", observed=fp))
        return E.Decision(status=st, action="kill-taken")
    if status is None:
        return None
    if not engaged(status):
        fired = auto_trigger(spec, status, kev, now)
        if fired is not None:
            trigger, key, reason = fired
            st = E.clone(status)
            engage(spec, st, now, reason, "quantramp-operator", trigger, True,
                   status.kill_switch.observed if status.kill_switch else _DEFAULT, key)
            return E.Decision(status=st, action="kill")
    if day_due(spec, status, kev, now):
        assert kev is not None
        st = E.clone(status)
        record_day(st, kev, now)
        return E.Decision(status=st, action="ledger")
    return None


__all__ = ["KillEvidence", "auto_trigger", "engaged", "fingerprint", "day_due", "kill_step", "month_pnl", "record_day", "requested"]
