"""Reports and drills (issue 9 item 6), without a server: the daily report built from synthetic Prometheus
range series and a status dict (rows, formatting, "no data", the day's transitions and incidents), the
equity curve PNG, the seed 004 drill (badge thresholds, dry run and live drill against a fake API, the
operator's days-since-drill gauge), and the replay of adverse trades (round trips, a day re-run from a
durable book and verified against the next one, on the real AAPL bars)."""

from __future__ import annotations

import copy
import json
import math
from datetime import date, datetime, timedelta, timezone

import pytest

from quantramp.operator import adverse as A
from quantramp.operator import drill as D
from quantramp.operator import report as R
from quantramp.operator.plugin import PluginError, apply_kill, make_daily_report, read_books, render_replay

DAY = date(2026, 8, 3)
T0 = datetime(2026, 8, 3, tzinfo=timezone.utc)
STEP = 60.0


def ts(minutes: float) -> float:
    """Unix seconds ``minutes`` after the report day's 00:00Z."""
    return (T0 + timedelta(minutes=minutes)).timestamp()


def matrix(role: str, stage: str, values: list[tuple[float, float]], **labels: str) -> dict:
    """One query_range matrix item, values as Prometheus sends them (strings)."""
    return {"metric": {"role": role, "stage": stage, **labels}, "values": [[ts(m), repr(v)] for m, v in values]}


def iso(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat().replace("+00:00", "Z")


STATUS = {
    "phase": "RolledBack", "stage": "canary-1", "championVersion": "3", "challengerVersion": "4",
    "history": [
        {"seq": 7, "time": iso(-60), "event": "StageAdvanced", "fromPhase": "Progressing", "toPhase": "Progressing",
         "stage": "canary-1", "by": "operator", "reason": "yesterday"},
        {"seq": 8, "time": iso(120), "event": "KillSwitchEngaged", "fromPhase": "Progressing", "toPhase": "Paused",
         "stage": "canary-1", "by": "alice", "reason": "feed looks wrong"},
        {"seq": 9, "time": iso(180), "event": "RolledBack", "fromPhase": "Paused", "toPhase": "RolledBack",
         "stage": "canary-1", "by": "operator", "reason": "slippageRatio failed: 3.1 > 1.5"},
    ],
    "killHistory": [
        {"time": iso(-30), "action": "Released", "by": "bob", "reason": "old", "trigger": "Manual"},
        {"time": iso(120), "action": "Engaged", "by": "alice", "reason": "feed looks wrong", "trigger": "Manual",
         "latencySeconds": 0.021},
    ],
    "tickets": {"r2.8": "QR-11", "r2.9": "QR-12", "r1.3": "QR-5"},
    "killSwitch": {"engaged": True, "reason": "feed looks wrong"},
}
OBJ = {"metadata": {"name": "demo", "namespace": "trading"}, "spec": {"capitalUsd": 100000.0, "model": {"name": "m"}},
       "status": STATUS}


def series() -> dict:
    return {
        "pnl_usd": [matrix("champion", "production", [(0, 1000.0), (60, 1100.0), (600, 1150.0)]),
                    matrix("challenger", "canary-1", [(0, -10.0), (60, -50.0), (300, -40.0)])],
        "fees_usd": [matrix("champion", "production", [(0, 20.0), (600, 32.5)]),
                     matrix("challenger", "canary-1", [(0, 1.0), (300, 3.0)])],
        # the challenger's counter resets (pod restarted without its book): 5 -> 9, reset, 0 -> 4
        "trades": [matrix("champion", "production", [(0, 100.0), (600, 130.0)]),
                   matrix("challenger", "canary-1", [(0, 5.0), (60, 9.0), (61, 0.0), (300, 4.0)])],
        "slippage_realized_bps": [matrix("champion", "production", [(600, 3.0)])],
        "slippage_modeled_bps": [matrix("champion", "production", [(600, 2.0)])],
        "fill_ratio": [matrix("champion", "production", [(600, 0.975)])],
        "drawdown_ratio": [matrix("champion", "production", [(0, 0.01), (60, 0.034), (600, 0.02)]),
                           matrix("challenger", "canary-1", [(60, 0.005)])],
        "day_pnl_usd": [matrix("champion", "production", [(600, 75.25)])],
        "trading_date": [matrix("champion", "production", [(0, 20260731.0), (600, 20260803.0)])],
        "capital_usd": [matrix("champion", "production", [(600, 99000.0)])],
        "alerts": [matrix("challenger", "canary-1", [(100, 1), (101, 1), (102, 1), (200, 1)],
                          alertname="QuantrampSlippageCritical", severity="critical", alertstate="firing")],
    }


def build(s=None, obj=OBJ, errors=None):
    start, end = T0, T0 + timedelta(days=1)
    return R.build_daily("trading", "demo", DAY, start, end, series() if s is None else s, obj, errors=errors, step_s=STEP,
                         generated_at=T0 + timedelta(days=1, hours=1))


# -- the daily report ------------------------------------------------------------------------------------
def test_the_rows_are_the_days_figures_of_each_role_and_stage():
    rep = build()
    assert [(r.role, r.stage) for r in rep.rows] == [("champion", "production"), ("challenger", "canary-1")]
    champ, chall = rep.rows
    assert champ.pnl_usd == pytest.approx(150.0) and chall.pnl_usd == pytest.approx(-30.0)
    assert champ.fees_usd == pytest.approx(12.5)
    assert champ.trades == 30 and chall.trades == 8  # 4 before the reset, 4 after
    assert champ.slippage_ratio == pytest.approx(1.5) and chall.slippage_ratio is None
    assert champ.fill_ratio == 0.975 and chall.fill_ratio is None
    assert champ.max_drawdown_ratio == pytest.approx(0.034)
    assert champ.day_pnl_usd == 75.25 and champ.trading_date == "2026-08-03"
    assert champ.trading_dates == ["2026-07-31", "2026-08-03"]
    assert rep.totals["pnl_usd"] == pytest.approx(120.0) and rep.totals["trades"] == 38


def test_the_markdown_formats_numbers_and_says_no_data_for_a_missing_series():
    text = R.render_markdown(build(), "equity.png")
    assert "| metric | champion / production | challenger / canary-1 |" in text
    assert "| P&L over the day (net of fees) | +150.00 USD | -30.00 USD |" in text
    assert "| Fees | 12.50 USD | 2.00 USD |" in text
    assert "| Realised slippage | 3.00 bps | no data |" in text
    assert "| Slippage realised / modelled | 1.50x | no data |" in text
    assert "| Fill ratio | 97.5% | no data |" in text
    assert "| Max drawdown in the day | 3.40% | 0.50% |" in text
    assert "| Fills (trades) | 30 | 8 |" in text
    assert "| Day P&L (trading date) | +75.25 USD (2026-08-03) | no data |" in text
    assert "![Equity curve](equity.png)" in text
    assert "(kill switch ENGAGED)" in text


def test_the_days_transitions_and_incidents_come_from_the_status():
    rep = build()
    assert [t["event"] for t in rep.transitions] == ["KillSwitchEngaged", "RolledBack"]  # not yesterday's advance
    assert [r["event"] for r in rep.rollbacks] == ["RolledBack"]
    assert [(k["action"], k["by"]) for k in rep.kills] == [("Engaged", "alice")]  # not yesterday's release
    assert [(t["key"], t["event"]) for t in rep.tickets] == [("QR-11", "KillSwitchEngaged"), ("QR-12", "RolledBack")]
    text = R.render_markdown(rep)
    assert "| 02:00:00 | KillSwitchEngaged | Progressing | Paused | canary-1 | alice | feed looks wrong |" in text
    assert "03:00:00 **RolledBack** (canary-1) by operator: slippageRatio failed: 3.1 > 1.5" in text
    assert "kill switch **Engaged** (Manual) by alice: feed looks wrong, broadcast to last ack 0.021 s" in text
    assert "ticket **QR-12** for RolledBack r2.9" in text
    assert "QR-5" not in text and "yesterday" not in text
    assert "| Incidents | 1 rollback(s)/abort(s), 1 kill(s), 2 ticket(s) |" in text


def test_critical_alerts_are_firing_spans_at_the_step_resolution():
    rep = build()
    assert [(a.alertname, a.role, a.start.strftime("%H:%M"), a.end.strftime("%H:%M")) for a in rep.alerts] == [
        ("QuantrampSlippageCritical", "challenger", "01:40", "01:42"),
        ("QuantrampSlippageCritical", "challenger", "03:20", "03:20"),
    ]
    assert "| QuantrampSlippageCritical | challenger / canary-1 | 01:40:00 | 01:42:00 |" in R.render_markdown(rep)


def test_no_series_and_an_empty_status_give_a_report_of_no_data_rows():
    errors = {k: "ConnectionError: refused" for k in R.QUERIES}
    rep = build(s={}, obj={}, errors=errors)
    text = R.render_markdown(rep)
    assert rep.rows == [] and rep.totals["pnl_usd"] is None
    assert "| metric | all roles |" in text
    for title, _ in R.ROWS:
        assert f"| {title} | no data |" in text
    assert "| P&L over the day, all roles | no data |" in text
    assert "## Data problems" in text and "`pnl_usd`: ConnectionError: refused" in text
    assert "## Critical alerts\n\nno data" in text  # the alerts query failed: not "None fired"
    assert json.loads(json.dumps(rep.to_json()))["rows"] == []


def test_odd_samples_are_skipped_not_fatal():
    s = {"pnl_usd": [{"metric": {"role": "champion", "stage": "p"}, "values": [[ts(1), "NaN"], [ts(2), "x"], [ts(3), "5"]]}],
         "alerts": [{"metric": {}, "values": []}]}
    rep = build(s=s, obj={"status": {"history": [{"seq": 1, "time": "not a time", "event": "X"}], "tickets": {"bad": "QR-1"}}})
    assert rep.rows[0].pnl_usd == 0.0 and rep.alerts == [] and rep.transitions == [] and rep.tickets == []


def test_the_window_is_the_utc_day_clipped_to_now():
    now = T0 + timedelta(hours=5)
    assert R.day_window(DAY, now) == (T0, now)
    assert R.day_window(DAY - timedelta(days=1), now) == (T0 - timedelta(days=1), T0)
    with pytest.raises(ValueError, match="has not begun"):
        R.day_window(DAY + timedelta(days=1), now)


def test_the_queries_select_one_strategy_and_aggregate_by_role_and_stage():
    q = R.queries("trading", "demo")
    assert q["pnl_usd"] == 'max by (role, stage) (quantramp_pnl_usd{namespace="trading",strategy="demo"})'
    assert q["alerts"] == 'ALERTS{namespace="trading",strategy="demo",alertstate="firing",severity="critical"}'
    assert set(q) == set(R.QUERIES)


def _png_pixels(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.size, len(im.convert("RGB").getcolors(maxcolors=1 << 24) or [])


def test_the_equity_curve_is_a_png_of_the_expected_size(tmp_path):
    path = R.draw_equity_png(build(), tmp_path / "eq.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
    size, colours = _png_pixels(path)
    assert size == R.PNG_SIZE_PX == (1000, 600)
    assert colours > 10  # lines, text and grid, not a blank canvas


def test_the_equity_curve_of_a_day_without_data_still_renders(tmp_path):
    path = R.draw_equity_png(build(s={}), tmp_path / "empty.png", size_px=(640, 480))
    assert _png_pixels(path)[0] == (640, 480)


def test_make_daily_report_writes_both_files_through_an_injected_fetcher(tmp_path):
    asked = {}

    def fetch(queries, start, end, step_s):
        asked.update(queries=queries, start=start, end=end, step=step_s)
        return series(), {"fill_ratio": "Timeout"}

    now = T0 + timedelta(hours=12)
    rep, md, png = make_daily_report(OBJ, DAY, fetch, tmp_path / "out", now=now, step_s=30)
    assert asked["start"] == T0 and asked["end"] == now and asked["step"] == 30
    assert asked["queries"] == R.queries("trading", "demo")
    assert md.name == "daily_report_demo_2026-08-03.md" and png.name == "equity_demo_2026-08-03.png"
    text = md.read_text()
    assert "![Equity curve](equity_demo_2026-08-03.png)" in text and "`fill_ratio`: Timeout" in text
    assert _png_pixels(png)[0] == (1000, 600)
    with pytest.raises(PluginError, match="has not begun"):
        make_daily_report(OBJ, DAY + timedelta(days=2), fetch, tmp_path, now=now)
    # a whole day at 1 s would be 43,200 points a series, which Prometheus refuses: the step is raised
    make_daily_report(OBJ, DAY, fetch, tmp_path / "fine", now=now, step_s=1)
    assert asked["step"] == 5 and 12 * 3600 / asked["step"] <= R.MAX_POINTS


# -- drill badge and the operator's gauge ------------------------------------------------------------------
@pytest.mark.parametrize("days,badge", [(0, "green"), (89, "green"), (89.99, "green"), (90, "yellow"), (120, "yellow"),
                                        (120.5, "red"), (121, "red"), (None, "red"), (math.nan, "red")])
def test_the_drill_badge_follows_seed_004(days, badge):
    assert D.drill_badge(days) == badge


def test_days_since_the_last_drill_come_from_the_annotation():
    now = datetime(2026, 8, 3, 12, tzinfo=timezone.utc)
    ann = {D.LAST_DRILL_ANNOTATION: "2026-05-05T12:00:00Z"}
    assert D.days_since_drill(ann, now) == pytest.approx(90.0)
    assert D.days_since_drill({}, now) is None and D.days_since_drill({D.LAST_DRILL_ANNOTATION: "soon"}, now) is None
    st = D.drill_status({"metadata": {"annotations": ann}}, now)
    assert st == {"lastDrill": "2026-05-05T12:00:00Z", "daysSinceDrill": 90, "badge": "yellow", "nextDueBy": "2026-08-03T12:00:00Z"}
    assert D.drill_status({"metadata": {}}, now)["badge"] == "red"


def test_the_operator_exports_days_since_drill_and_drops_it_when_absent():
    from prometheus_client import REGISTRY

    from quantramp.operator import metrics as M

    now = datetime(2026, 8, 3, tzinfo=timezone.utc)
    labels = {"namespace": "ns-drill", "strategy": "s"}
    assert M.observe_drill("ns-drill", "s", {D.LAST_DRILL_ANNOTATION: "2026-07-03T00:00:00Z"}, now) == pytest.approx(31.0)
    assert REGISTRY.get_sample_value("quantramp_operator_days_since_drill", labels) == pytest.approx(31.0)
    assert M.observe_drill("ns-drill", "s", {}, now) is None
    assert REGISTRY.get_sample_value("quantramp_operator_days_since_drill", labels) is None


def test_reconcile_feeds_the_drill_gauge_right_after_observe():
    import inspect

    from quantramp.operator import handlers as H

    src = inspect.getsource(H.reconcile)
    assert 'M.observe(ns, name, status)\n    M.observe_drill(ns, name, obj["metadata"].get("annotations"), now)' in src


# -- the drill against a fake API -------------------------------------------------------------------------
def _merge(dst: dict, patch: dict) -> None:
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _merge(dst[k], v)
        else:
            dst[k] = copy.deepcopy(v)


class FakeApi:
    """get/patch of one TradingStrategy; ``operator=True`` plays the operator: a new spec.killSwitch is
    broadcast at once and acknowledged by ``ack_roles`` (status.killSwitch, a Done BroadcastKill)."""

    def __init__(self, obj, operator=True, ack_roles=("champion", "challenger"), refuse_release=False):
        self.obj = copy.deepcopy(obj)
        self.operator, self.ack_roles, self.refuse_release = operator, ack_roles, refuse_release
        self.patches: list[dict] = []
        self.seq = 10

    def get(self, name, ns):
        if name != self.obj["metadata"]["name"] or ns != self.obj["metadata"]["namespace"]:
            raise PluginError(f'tradingstrategy "{name}" not found in namespace "{ns}"')
        return copy.deepcopy(self.obj)

    def patch(self, name, ns, body):
        ks = (body.get("spec") or {}).get("killSwitch")
        if ks is not None and not ks["engaged"] and self.refuse_release:
            raise PluginError("admission webhook denied the request")
        self.patches.append(copy.deepcopy(body))
        _merge(self.obj, body)
        if ks is not None and self.operator:
            self.seq += 1
            cid = f"r2.{self.seq}.0"
            st = self.obj.setdefault("status", {})
            st["killSwitch"] = {"engaged": ks["engaged"], "reason": ks["reason"], "by": ks["by"], "trigger": ks["trigger"],
                                "commandId": cid, "latencySeconds": 0.018,
                                "acks": {r: {"ackedAt": "2026-08-03T00:00:00Z", "latencySeconds": 0.01 + i / 1000}
                                         for i, r in enumerate(self.ack_roles)}}
            st.setdefault("effects", []).append({"id": cid, "kind": "BroadcastKill", "state": "Done"})
            if ks["engaged"] and st.get("phase") == "Progressing":
                st["phase"] = "Paused"
        return copy.deepcopy(self.obj)


LIVE = {
    "metadata": {"name": "demo", "namespace": "trading", "resourceVersion": "42", "annotations": {}},
    "spec": {"capitalUsd": 100000.0, "killSwitch": {"engaged": False, "reason": "feed fixed", "by": "bob",
                                                    "trigger": "Manual", "flatten": False}},
    "status": {"phase": "Promoted", "stage": "production",
               "allocation": {"champion": {"version": "4", "replicas": 1, "capitalPercent": 100},
                              "challenger": {"version": None, "replicas": 0}},
               "killSwitch": {"engaged": False, "reason": "feed fixed"}, "killHistory": [{"action": "Released"}]},
}


def _clock():
    t = [datetime(2026, 8, 3, 9, 30, tzinfo=timezone.utc)]

    def now():
        t[0] += timedelta(milliseconds=250)
        return t[0]
    return now


def _kill(api, by="carol"):
    return lambda engage, reason, flatten: apply_kill(api, "demo", "trading", by, engage, reason, flatten, 5.0,
                                                      trigger=D.DRILL_TRIGGER, poll=0.0)


def test_a_dry_run_backs_up_reports_and_touches_nothing(tmp_path):
    api = FakeApi(LIVE)
    seen = []
    run = D.run_drill(api, "demo", "trading", by="carol", dry_run=True, wait_s=60, out_dir=tmp_path, now=_clock(),
                      on_step=seen.append)
    assert api.patches == []  # nothing written: no kill, no annotation
    assert run.passed and [(s.key, s.outcome) for s in run.steps] == [
        ("A", "PASS"), ("P", "PASS"), ("B", "SKIPPED"), ("C", "SKIPPED"), ("D", "SKIPPED"), ("E", "PASS")]
    assert [s.key for s in seen] == ["A", "P", "B", "C", "D", "E"]
    backup = json.loads(open(run.backup_path).read())
    assert backup["spec"]["killSwitch"] == LIVE["spec"]["killSwitch"] and backup["resourceVersion"] == "42"
    assert backup["status"]["phase"] == "Promoted" and backup["status"]["killHistory"] == [{"action": "Released"}]
    assert run.backup_path.endswith("killswitch_backup_demo_20260803_093000.json")
    text = open(run.report_path).read()
    assert run.report_path.endswith("drill_demo_20260803_0930.md")
    assert "**Dry-run drill: PASS** (trading was never touched)" in text
    assert "| B Disable trading | SKIPPED |" in text and "| E Report | PASS |" in text
    assert "reason: 'ROLLBACK_DRILL', trigger: Drill, flatten: true" in text
    assert "acknowledgements of champion" in text and "keep it engaged for 60 s" in text
    assert "'ROLLBACK_DRILL complete' as `kubectl quantramp kill off` (back to the backed-up state: not engaged)" in text
    assert "Placeholder for the dashboard screenshot" in text
    assert run.to_json()["result"] == "PASS" and run.last_drill_recorded is None


def test_a_dry_run_fails_when_a_live_drill_would_release_a_real_kill(tmp_path):
    obj = copy.deepcopy(LIVE)
    obj["spec"]["killSwitch"]["engaged"] = True
    obj["status"]["killSwitch"] = {"engaged": True, "reason": "real incident"}
    run = D.run_drill(FakeApi(obj), "demo", "trading", by="carol", dry_run=True, out_dir=tmp_path, now=_clock())
    assert not run.passed and run.step("P").ok is False
    assert "the kill switch is engaged already" in open(run.report_path).read()


def test_a_live_drill_disables_waits_restores_reports_and_records_the_date(tmp_path):
    api = FakeApi(LIVE)
    waited = []
    run = D.run_drill(api, "demo", "trading", by="carol", dry_run=False, wait_s=120, out_dir=tmp_path, kill=_kill(api),
                      wait=waited.append, now=_clock())
    assert waited == [120]
    assert run.passed, [(s.key, s.outcome, s.detail) for s in run.steps]
    engage, release, annotate = api.patches
    assert engage == {"spec": {"killSwitch": {"engaged": True, "reason": "ROLLBACK_DRILL", "by": "carol", "trigger": "Drill",
                                              "flatten": True}}}
    assert release["spec"]["killSwitch"] == {"engaged": False, "reason": "ROLLBACK_DRILL complete", "by": "carol",
                                             "trigger": "Drill", "flatten": False}
    assert annotate == {"metadata": {"annotations": {D.LAST_DRILL_ANNOTATION: "2026-08-03T09:30:00Z"}}}
    assert api.obj["metadata"]["annotations"][D.LAST_DRILL_ANNOTATION] == run.last_drill_recorded
    assert run.step("B").data == {"latencySeconds": 0.018, "acks": {"champion": 0.01, "challenger": 0.011}}
    text = open(run.report_path).read()
    assert "**Live drill: PASS**" in text and "| D Restore trading | PASS |" in text
    assert "- kill: champion acknowledged in 0.01 s" in text and "- release: broadcast to last acknowledgement 0.018 s" in text
    assert "Next drill due within 90 days" in text


def test_a_pod_that_does_not_acknowledge_fails_the_drill_but_trading_is_restored(tmp_path):
    obj = copy.deepcopy(LIVE)
    obj["status"]["allocation"]["challenger"] = {"version": "5", "replicas": 1}
    obj["status"]["phase"] = "Progressing"
    api = FakeApi(obj, ack_roles=("champion",))
    run = D.run_drill(api, "demo", "trading", by="carol", dry_run=False, wait_s=5, out_dir=tmp_path, kill=_kill(api),
                      wait=lambda s: pytest.fail("no wait after a failed step B"), now=_clock())
    assert not run.passed and run.step("B").ok is False and "no acknowledgement from challenger" in run.step("B").detail
    assert run.step("C").ok is None and run.step("D").ok is False  # released, but the challenger did not ack that either
    assert api.obj["spec"]["killSwitch"]["engaged"] is False and not run.needs_emergency_restore
    assert D.LAST_DRILL_ANNOTATION not in api.obj["metadata"]["annotations"]  # a failed drill does not reset the badge
    assert any("froze the ramp" in w for w in run.warnings)
    assert "re-run the drill within 7 days" in open(run.report_path).read()


def test_a_refused_release_says_emergency_restore(tmp_path):
    api = FakeApi(LIVE, refuse_release=True)
    run = D.run_drill(api, "demo", "trading", by="carol", dry_run=False, wait_s=1, out_dir=tmp_path, kill=_kill(api),
                      wait=lambda s: None, now=_clock())
    assert run.needs_emergency_restore and not run.passed
    assert "kill off failed: kill off refused: admission webhook denied the request" in run.step("D").detail
    text = open(run.report_path).read()
    assert "## EMERGENCY RESTORE NEEDED" in text and "kubectl quantramp kill off demo -n trading" in text


def test_an_interrupted_wait_still_restores(tmp_path):
    api = FakeApi(LIVE)

    def ctrl_c(seconds):
        raise KeyboardInterrupt
    run = D.run_drill(api, "demo", "trading", by="carol", dry_run=False, wait_s=120, out_dir=tmp_path, kill=_kill(api),
                      wait=ctrl_c, now=_clock())
    assert run.interrupted and not run.passed and run.step("D").ok is True
    assert api.obj["spec"]["killSwitch"]["engaged"] is False


def test_a_live_drill_refuses_to_release_a_real_kill(tmp_path):
    obj = copy.deepcopy(LIVE)
    obj["status"]["killSwitch"] = {"engaged": True, "reason": "real"}
    api = FakeApi(obj)
    run = D.run_drill(api, "demo", "trading", by="carol", dry_run=False, out_dir=tmp_path, kill=_kill(api), now=_clock())
    assert api.patches == [] and not run.passed and run.step("B").ok is None


def test_apply_kill_refuses_the_same_request_twice_and_times_out_without_an_operator():
    api = FakeApi(LIVE, operator=False)
    with pytest.raises(PluginError, match="already says this"):
        apply_kill(api, "demo", "trading", "bob", False, "feed fixed", False, 1.0)
    with pytest.raises(PluginError, match="has not broadcast it within 0.05 s"):
        apply_kill(api, "demo", "trading", "bob", True, "drill", True, 0.05, poll=0.01)
    assert api.obj["spec"]["killSwitch"]["trigger"] == "Manual"


# -- replay of adverse trades ----------------------------------------------------------------------------
def t(minute: int) -> datetime:
    return datetime(2026, 7, 31, 14, minute, tzinfo=timezone.utc)


def test_round_trips_cut_flips_split_fees_and_mark_an_open_one():
    fills = [
        A.FillEvent(t(1), 100, 10.0, 1.0, decided_at=t(0)),
        A.FillEvent(t(2), 50, 11.0, 0.5),                    # adds
        A.FillEvent(t(3), -250, 12.0, 2.5, decided_at=t(2)),  # closes 150, opens a short of 100
        A.FillEvent(t(5), 60, 11.5, 0.6),                     # partial cover, 40 short left
    ]
    trips = A.round_trips(fills, last_mark=11.0)
    long, short = trips
    assert (long.side, long.qty, long.fills, long.open) == (1, 150, 3, False)
    assert long.entry_price == pytest.approx((100 * 10 + 50 * 11) / 150) and long.exit_price == 12.0
    assert long.fees_usd == pytest.approx(1.0 + 0.5 + 2.5 * 150 / 250)
    assert long.pnl_usd == pytest.approx(150 * 12 - 1000 - 550 - long.fees_usd)
    assert (short.side, short.qty, short.open, short.exit_ts, short.entry_ts) == (-1, 100, True, None, t(3))
    assert short.pnl_usd == pytest.approx(100 * 12 - 60 * 11.5 - 40 * 11.0 - (1.0 + 0.6))
    assert long.decided_at == t(0) and short.decided_at == t(2)


def test_an_inherited_position_is_a_trip_from_the_days_start():
    trips = A.round_trips([A.FillEvent(t(4), 30, 9.0, 0.3)], start_position=-30, start_mark=10.0, day_start=t(0))
    assert len(trips) == 1 and trips[0].inherited and trips[0].entry_ts == t(0)
    assert trips[0].pnl_usd == pytest.approx(300 - 270 - 0.3)


def test_worst_keeps_the_n_lowest_under_the_threshold():
    mk = [A.RoundTrip(1, 1, t(i), t(i + 1), None, 1.0, 1.0, p, 0.0, 2) for i, p in enumerate((5.0, -80.0, -20.0, -60.0, -55.0))]
    assert [x.pnl_usd for x in A.worst(mk, 3)] == [-80.0, -60.0, -55.0]
    assert [x.pnl_usd for x in A.worst(mk, 10, threshold_usd=-50)] == [-80.0, -60.0, -55.0]
    assert A.worst(mk, 0) == []


class Tilt:
    """A deterministic stub model: P(up) = logistic of a fixed linear function of the features."""

    def __init__(self, w=(1.2, 0.6, -0.4, 0.1, 0.5, 0.2)):
        self.w = w

    def p_up_one(self, x):
        return 1.0 / (1.0 + math.exp(-sum(a * float(v) for a, v in zip(self.w, x))))


@pytest.fixture(scope="module")
def pod_books():
    """A pod's durable books of three trading dates, as the trader writes them (engine snapshot + extras)."""
    from quantramp.trader.backtest import make_engine
    from quantramp.trader.engine import EngineConfig
    from quantramp.trader.marketdata import load_minute_bars
    from quantramp.trader.server import replay_from
    from quantramp.trader.session import new_york_date
    from quantramp.trader.state import book_fields, parse_book

    bars = load_minute_bars("AAPL")

    def engine_for(model, capital):
        return make_engine(model, EngineConfig.for_capital(capital), bars, seed=7)
    pod = engine_for(Tilt(), 100_000.0)
    books, fields = {}, {}
    for bar in replay_from(bars, None):
        day = new_york_date(bar.ts).isoformat()
        if day > "2026-07-31":
            break
        pod.on_bar(bar)
        fields[day] = book_fields(pod.snapshot(), {"bar_ts": bar.ts.isoformat(), "capital_usd": 100_000.0, "model_uri": "models:/m/3"})
        books[day] = A.Book(day, *parse_book(fields[day]))
    return bars, engine_for, books, fields


def test_a_day_replayed_from_the_previous_book_matches_the_day_book_exactly(pod_books):
    bars, engine_for, books, _ = pod_books
    res = A.replay_role(bars=bars, engine_for=engine_for, traded_model=Tilt(), current_model=Tilt(),
                        day_book=books["2026-07-31"], start_book=books["2026-07-30"], last_n=5)
    assert res["verification"]["exact"], res["verification"]
    assert res["bars"] == res["barsFed"] == 390 and res["startedFrom"] == "book of 2026-07-30"
    assert res["tripsTotal"] > 10 and len(res["rows"]) == 5
    pnls = [r["trip"]["pnl_usd"] for r in res["rows"]]
    assert pnls == sorted(pnls) and pnls[0] < 0
    # the same model now: every worst trade is taken again, same size, same P(up)
    assert {r["now"]["verdict"] for r in res["rows"]} == {A.SAME}
    assert all(r["now"]["p_up"] == r["now"]["original_p_up"] for r in res["rows"])
    assert res["pnlUsd"]["original"] == pytest.approx(res["pnlUsd"]["now"])


def test_a_fresh_book_replays_from_the_start_of_the_data(pod_books):
    bars, engine_for, books, _ = pod_books
    res = A.replay_role(bars=bars, engine_for=engine_for, traded_model=Tilt(), current_model=Tilt(),
                        day_book=books["2026-07-30"], start_book=None, last_n=3)
    assert res["verification"]["exact"] and res["barsFed"] == 780 and res["bars"] == 390


def test_another_current_model_is_judged_bar_by_bar_and_a_wrong_start_is_flagged(pod_books):
    bars, engine_for, books, _ = pod_books
    other = Tilt((0.2, 0.1, 0.4, -0.1, 0.5, 0.2))
    res = A.replay_role(bars=bars, engine_for=engine_for, traded_model=Tilt(), current_model=other,
                        day_book=books["2026-07-31"], start_book=books["2026-07-30"], last_n=10)
    assert res["verification"]["exact"]
    verdicts = {r["now"]["verdict"] for r in res["rows"]}
    assert verdicts - {A.SAME} and verdicts <= {A.SAME, A.SMALLER, A.LARGER, A.NO_SIGNAL, A.HOLDING, A.DENIED, A.OPPOSITE}
    assert all(r["now"]["pnl_usd"] is not None for r in res["rows"])
    # an older book replays the days in between and still reproduces the day exactly
    older = A.replay_role(bars=bars, engine_for=engine_for, traded_model=Tilt(), current_model=other,
                          day_book=books["2026-07-31"], start_book=books["2026-07-29"], last_n=1)
    assert older["verification"]["exact"] and older["barsFed"] == 780 and older["rows"] == res["rows"][:1]
    # what the engine alone cannot reproduce (another model traded, a runtime gate acted) is flagged
    wrong = A.replay_role(bars=bars, engine_for=engine_for, traded_model=other, current_model=other,
                          day_book=books["2026-07-31"], start_book=books["2026-07-30"], last_n=1)
    assert not wrong["verification"]["exact"] and wrong["verification"]["text"].startswith("differs: trades ")
    table = render_replay({"role": "champion", "scope": "v3", "tradedModel": "models:/m/3", "currentModel": "models:/m@champion",
                           **res})
    assert table.row_count == 10


class FakeRedis:
    """The few redis-py calls read_books makes, over a dict (decoded strings)."""

    def __init__(self, data):
        self.data = data

    def get(self, key):
        return self.data.get(key)

    def hgetall(self, key):
        return dict(self.data.get(key) or {})

    def scan_iter(self, match, count=None):
        import fnmatch

        return [k for k in self.data if fnmatch.fnmatchcase(k, match)]


def test_read_books_finds_the_role_scope_the_day_and_the_book_before(pod_books):
    *_, fields = pod_books
    pre = "quantramp:trading:demo:champion"
    data = {f"{pre}:scope": "v3", f"{pre}:v3:current": "2026-07-31",
            **{f"{pre}:v3:{d}:book": f for d, f in fields.items()},
            f"{pre}:v2:2026-07-30:book": fields["2026-07-30"]}
    scope, day, start = read_books(FakeRedis(data), "trading", "demo", "champion")
    assert (scope, day.day, start.day) == ("v3", "2026-07-31", "2026-07-30")
    assert day.extra["model_uri"] == "models:/m/3" and day.bar_ts.tzinfo is not None
    _, day, start = read_books(FakeRedis(data), "trading", "demo", "champion", day="2026-07-29")
    assert start is None
    with pytest.raises(PluginError, match="no book of trading date 2026-08-01"):
        read_books(FakeRedis(data), "trading", "demo", "champion", day="2026-08-01")
    with pytest.raises(PluginError, match="no book scope for the challenger"):
        read_books(FakeRedis(data), "trading", "demo", "challenger")


def test_role_settings_are_the_pod_contract_at_the_books_capital():
    obj = {"metadata": {"name": "demo", "namespace": "trading"},
           "spec": {"model": {"name": "m", "version": "4"}, "capitalUsd": 200000.0,
                    "risk": {"maxPositionPercent": 20, "maxOrderPercent": 10, "maxDailyLossPercent": 1}},
           "status": {"phase": "Progressing", "allocation": {
               "champion": {"version": "3", "capitalPercent": 99, "replicas": 1, "stage": "production"},
               "challenger": {"version": "4", "capitalPercent": 1, "replicas": 1, "stage": "canary-1"}}}}
    s = A.role_settings("demo", "trading", obj, "champion", 198000.0, "models:/m/3")
    assert (s.role, s.capital_usd, s.max_position_usd, s.max_order_usd, s.max_daily_loss_usd) == (
        "champion", 198000.0, 39600.0, 19800.0, 1980.0)
    assert s.model_uri == "models:/m/3" and not s.paper


# -- the commands, wired to fakes (no API server, no Prometheus) ----------------------------------------
class FakeCustomObjects:
    """The two CustomObjectsApi calls the plugin makes, over FakeApi."""

    def __init__(self, fake: FakeApi):
        self.fake = fake

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        from kubernetes.client import ApiException

        try:
            return self.fake.get(name, ns)
        except PluginError:
            raise ApiException(status=404, reason="Not Found") from None

    def patch_namespaced_custom_object(self, group, version, ns, plural, name, body):
        return self.fake.patch(name, ns, body)


@pytest.fixture
def cli(monkeypatch):
    from typer.testing import CliRunner

    from quantramp.operator import plugin

    def run(fake: FakeApi, *args: str):
        monkeypatch.setattr(plugin, "_kube", lambda: (FakeCustomObjects(fake), "trading", "carol"))
        return CliRunner().invoke(plugin.app, list(args))
    return run


def test_drill_commands_exit_codes_and_json(cli, tmp_path):
    fake = FakeApi(LIVE)
    res = cli(fake, "drill", "rollback", "demo", "--dry-run", "--out", str(tmp_path), "-o", "json")
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout[res.stdout.index("{"):])
    assert body["result"] == "PASS" and body["dry_run"] and fake.patches == []
    res = cli(fake, "drill", "status", "demo", "-o", "json")
    assert res.exit_code == 0 and json.loads(res.stdout)["badge"] == "red"
    engaged = copy.deepcopy(LIVE)
    engaged["status"]["killSwitch"]["engaged"] = True
    res = cli(FakeApi(engaged), "drill", "rollback", "demo", "--dry-run", "--out", str(tmp_path))
    assert res.exit_code == 1 and "error: drill failed at step P: the kill switch is engaged already" in res.output
    res = cli(fake, "drill", "status", "nope")
    assert res.exit_code == 1 and 'error: tradingstrategy "nope" not found in namespace "trading"' in res.output


def test_a_live_drill_command_records_the_date(cli, tmp_path):
    fake = FakeApi(LIVE)
    res = cli(fake, "drill", "rollback", "demo", "--wait", "0", "--out", str(tmp_path))
    assert res.exit_code == 0, res.output
    assert "drill PASSED" in res.output and D.LAST_DRILL_ANNOTATION in fake.obj["metadata"]["annotations"]
    res = cli(fake, "drill", "status", "demo")
    assert res.exit_code == 0 and "GREEN" in res.output and "0 days ago" in res.output


def test_report_daily_command(cli, tmp_path, monkeypatch):
    from quantramp.operator import plugin

    monkeypatch.setattr(plugin, "prometheus_fetcher", lambda url: lambda q, s, e, step: (series(), {}))
    obj = copy.deepcopy(OBJ)
    obj["metadata"]["resourceVersion"] = "1"
    res = cli(FakeApi(obj), "report", "daily", "demo", "--date", "2026-08-03", "--out", str(tmp_path), "-o", "json")
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout)
    assert body["rows"][0]["pnl_usd"] == pytest.approx(150.0) and body["png"].endswith("equity_demo_2026-08-03.png")
    monkeypatch.setattr(plugin, "prometheus_fetcher",
                        lambda url: lambda q, s, e, step: ({}, {k: "ConnectionError: refused" for k in q}))
    res = cli(FakeApi(obj), "report", "daily", "demo", "--date", "2026-08-03", "--out", str(tmp_path))
    assert res.exit_code == 1 and "answered no query (ConnectionError: refused)" in res.output
    assert (tmp_path / "daily_report_demo_2026-08-03.md").exists()
    res = cli(FakeApi(obj), "report", "daily", "demo", "--date", "03/08/2026")
    assert res.exit_code == 1 and "is not a date: use YYYY-MM-DD" in res.output


def test_replay_command_needs_redis_and_mlflow(cli, monkeypatch):
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    res = cli(FakeApi(LIVE), "replay", "demo", "--last-n", "5")
    assert res.exit_code == 1 and "give --redis-url or set REDIS_URL" in res.output


def test_replay_strategy_rebuilds_the_pods_engine_from_the_spec_and_redis():
    """The pod's own construction (trader.server.run: the env contract the operator renders, make_engine with
    stable_seed(ns, strategy, role)) writes two days of books; the plugin's replay reproduces the last exactly."""
    from quantramp.operator.plugin import replay_strategy
    from quantramp.trader.backtest import make_engine, stable_seed
    from quantramp.trader.marketdata import load_minute_bars
    from quantramp.trader.server import replay_from
    from quantramp.trader.session import new_york_date
    from quantramp.trader.state import Keys, book_fields

    obj = {"metadata": {"name": "demo", "namespace": "trading"},
           "spec": {"model": {"name": "m", "version": "4"}, "capitalUsd": 50000.0},
           "status": {"phase": "Promoted", "allocation": {"champion": {"version": "3", "capitalPercent": 100, "replicas": 1,
                                                                       "stage": "production"}}}}
    bars = load_minute_bars("AAPL")
    s = A.role_settings("demo", "trading", obj, "champion", 50000.0, "models:/m/3")
    pod = make_engine(Tilt(), s.engine_config(), bars, seed=stable_seed("trading", "demo", "champion"), fees=s.fee_schedule())
    keys = Keys("trading", "demo", "champion", stage="v3")
    data = {Keys("trading", "demo", "champion").live_scope: "v3"}
    for bar in replay_from(bars, None):
        day = new_york_date(bar.ts).isoformat()
        if day > "2026-07-30":
            break
        pod.on_bar(bar)
        data[keys.book(day)] = book_fields(pod.snapshot(), {"bar_ts": bar.ts.isoformat(), "capital_usd": 50000.0,
                                                            "model_uri": "models:/m/3"})
        data[keys.current] = day
    loaded = []

    def load(uri):
        loaded.append(uri)
        return Tilt() if uri == "models:/m/3" else Tilt((0.2, 0.1, 0.4, -0.1, 0.5, 0.2))
    steps = []
    (res,) = replay_strategy(obj, ["champion"], FakeRedis(data), load, last_n=3, threshold=0.0, bars=bars,
                             progress=steps.append)
    assert loaded == ["models:/m/3", "models:/m@champion"]
    assert res["verification"]["exact"], res["verification"]
    assert (res["role"], res["scope"], res["day"], res["startedFrom"]) == ("champion", "v3", "2026-07-30", "book of 2026-07-29")
    assert all(r["trip"]["pnl_usd"] <= 0 for r in res["rows"]) and len(res["rows"]) == 3
    assert any("replaying the champion's trading date 2026-07-30" in s for s in steps)
    with pytest.raises(PluginError, match="cannot load models:/m/3: boom"):
        replay_strategy(obj, ["champion"], FakeRedis(data), lambda uri: (_ for _ in ()).throw(RuntimeError("boom")),
                        last_n=1, bars=bars)
