"""End to end, incident response (issue 9) on the real local stack: the kill switch from the spec
with every trader pod acknowledging, the ramp frozen and resumed, an AUTO_KILL_SWITCH alert firing
in the real Prometheus, the daily and monthly stop-losses, and the Slack messages and the JIRA
ticket (real slack-sdk and jira clients against the stack's fakes)."""

from __future__ import annotations

import json
import time

import pytest
import requests
import yaml

from test_control import plugin

pytestmark = pytest.mark.e2e


def manifest(name: str, stages=None, stop_loss=None, capital=100000):
    spec = {
        "model": {"name": name, "version": "2"}, "capitalUsd": capital,
            "admission": {"mode": "off"},
        "stages": stages or [{"name": "shadow", "capitalPercent": 0, "dwell": "2s"},
                             {"name": "canary-1", "capitalPercent": 1, "dwell": "1h", "maxDrawdown": 0.9, "pnlBand": 10},
                             {"name": "production", "capitalPercent": 100, "maxDrawdown": 0.9, "pnlBand": 10}],
        "analysis": {"interval": "2s", "criteria": {"minTrades": 1, "minPrecisionRatio": 0, "minFillRatio": 0, "maxSlippageRatio": 100}},
        "trader": {"barIntervalSeconds": 0.05},
        "stopLoss": stop_loss or {"enabled": False},
        # positions of at most 5% of a pod's capital: the runbook's loss alerts (hourly -0.5%, daily -2% of capital,
        # critical) would need a 10% price move, so no ramp here rolls back or is killed by them
        "risk": {"maxPositionPercent": 5, "maxOrderPercent": 5},
    }
    return {"apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy", "metadata": {"name": name, "namespace": "default"},
            "spec": spec}


def status(stack, name):
    return stack.strategies().get(name, {}).get("status") or {}


def wait_for(stack, name, pred, timeout=240):
    deadline, st = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        st = status(stack, name)
        if pred(st):
            return st
        time.sleep(0.5)
    raise AssertionError(f"{name}: timed out; status: {json.dumps(st, indent=1)[:5000]}")


def prom(stack, query):
    res = requests.get(f"{stack.env['PROMETHEUS_URL']}/api/v1/query", params={"query": query}, timeout=10).json()
    return {r["metric"].get("role", ""): float(r["value"][1]) for r in res["data"]["result"]}


def settled(st) -> bool:
    return not any(e["state"] == "Pending" for e in st.get("effects", []))


@pytest.fixture(scope="module")
def models(operator_stack):
    for name in ("aapl-kill", "aapl-autokill", "aapl-stoploss", "aapl-monthly"):
        operator_stack.train(name, ["--kind", "logistic", "--seed", "1", "--alias", "champion"])
        operator_stack.train(name, ["--kind", "logistic", "--seed", "2"])
    yield operator_stack
    for name in ("aapl-kill", "aapl-autokill", "aapl-stoploss", "aapl-monthly"):
        operator_stack.kubectl("delete", "tradingstrategy", name, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)


def test_kill_switch_by_spec_every_pod_acks_the_ramp_freezes_then_resumes(models):
    s, name = models, "aapl-kill"
    s.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest(name)))
    wait_for(s, name, lambda st: st.get("stage") == "canary-1" and (st.get("conditions") and any(
        c["type"] == "TradersReady" and c["status"] == "True" for c in st["conditions"])))
    # both pods of this stage running and trading (the kill then measures the broadcast, not a pod start)
    live = f'quantramp_bars_total{{strategy="{name}", stage=~"canary-1|production"}}'
    wait_for(s, name, lambda st: len([v for v in prom(s, live).values() if v > 20]) == 2, timeout=120)

    # kill on: the plugin writes spec.killSwitch and returns once the operator broadcast it and both pods acked
    out = plugin(s, "kill", "on", name, "--reason", "e2e: feed looks wrong", "-o", "json")
    ks = json.loads(out.stdout)
    assert ks["engaged"] is True and set(ks["acks"]) == {"champion", "challenger"}, ks
    assert ks["by"] and ks["trigger"] == "Manual" and ks["latencySeconds"] is not None and ks["latencySeconds"] < 5
    st = status(s, name)
    assert st["phase"] == "Paused" and st["pause"]["reason"] == "KillSwitch" and st["killHistory"][-1]["action"] == "Engaged"
    # the pods hold the latch and flatten; once flat, no order goes out any more
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        latch = prom(s, f'quantramp_kill_latch{{strategy="{name}"}}')
        flat = prom(s, f'abs(quantramp_position_notional_usd{{strategy="{name}"}})')
        if latch == {"champion": 1.0, "challenger": 1.0} and flat and all(v == 0 for v in flat.values()):
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"latch {latch}, |position| {flat}")
    orders = prom(s, f'sum by (role) (quantramp_orders_total{{strategy="{name}", status="filled"}})')
    time.sleep(4)
    assert prom(s, f'sum by (role) (quantramp_orders_total{{strategy="{name}", status="filled"}})') == orders, "an order after the ack"
    # frozen: the stage does not move, promote is refused
    refused = plugin(s, "promote", name, check=False)
    assert refused.returncode == 1 and "kill switch" in refused.stderr
    assert status(s, name)["stage"] == "canary-1"

    # the same request again is refused by the plugin; a release without a new reason by the API server
    again = plugin(s, "kill", "on", name, "--reason", "e2e: feed looks wrong", check=False)
    assert again.returncode == 1 and "give a new --reason" in again.stderr
    bad = s.kubectl("patch", "tradingstrategy", name, "--type", "merge", "-p", '{"spec":{"killSwitch":{"engaged":false}}}', check=False)
    assert bad.returncode != 0 and "releasing the kill switch needs a reason of its own" in bad.stderr

    # Slack and JIRA: a message and one ticket for the kill, filled with the post-mortem template
    st = wait_for(s, name, settled, timeout=60)
    uid = s.strategies()[name]["metadata"]["uid"]
    label = f"quantramp-{uid.replace('-', '')[:12]}-{st['killSwitch']['incident'].replace('.', '-')}"
    tickets = [t for t in s.jira_tickets() if label in t["fields"]["labels"]]
    assert len(tickets) == 1, [t["fields"]["labels"] for t in s.jira_tickets()]
    body = tickets[0]["fields"]["description"]
    for section in ("Incident details", "Timeline", "Actions", "Model versions"):
        assert section in body
    assert "e2e: feed looks wrong" in body
    assert any(name in json.dumps(m) and "kill switch engaged" in json.dumps(m).lower() for m in s.slack_messages())

    # kill off: released and acked; the ramp stays paused until a human resumes, which restarts the stage
    before = st["stageStartTime"]
    out = plugin(s, "kill", "off", name, "--reason", "e2e: feed fixed, risk approved", "-o", "json")
    ks = json.loads(out.stdout)
    assert ks["engaged"] is False and set(ks["acks"]) == {"champion", "challenger"}
    assert status(s, name)["phase"] == "Paused"
    plugin(s, "resume", name, "--reason", "re-test the stage")
    st = wait_for(s, name, lambda st: st.get("phase") == "Progressing")
    assert st["stage"] == "canary-1" and st["stageStartTime"] > before
    hist = json.loads(plugin(s, "kill", "history", name, "-o", "json").stdout)
    assert [h["action"] for h in hist] == ["Engaged", "Released"] and all(h["latencySeconds"] is not None for h in hist)
    # the release was commented on the kill's ticket
    t = next(t for t in s.jira_tickets() if label in t["fields"]["labels"])
    assert any("released" in c["body"] for c in t["comments"])


AUTOKILL_RULE = """
groups:
  - name: e2e-autokill
    rules:
      - alert: E2EAutoKill
        expr: quantramp_bars_total{strategy="aapl-autokill", role="champion"} > 40
        labels: {severity: warning, action: AUTO_KILL_SWITCH}
        annotations: {summary: "e2e: a rule with action AUTO_KILL_SWITCH"}
"""


def test_an_auto_kill_switch_alert_in_prometheus_engages_the_kill_switch(models):
    s, name = models, "aapl-autokill"
    s.add_alert_rules("e2e-autokill", AUTOKILL_RULE)
    m = manifest(name)
    m["spec"]["trader"]["barIntervalSeconds"] = 0.5  # a trading day lasts 195 s: the alert's trigger key keeps its day
    s.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(m))
    st = wait_for(s, name, lambda st: (st.get("killSwitch") or {}).get("engaged") is True, timeout=180)
    ks = st["killSwitch"]
    assert ks["trigger"] == "Alert" and "E2EAutoKill" in ks["reason"] and ks["by"] == "quantramp-operator"
    st = wait_for(s, name, lambda st: st["killSwitch"].get("sentAt") and settled(st), timeout=60)
    assert "champion" in st["killSwitch"]["acks"]
    # released by a human while the alert still fires: it does not engage again for the same trigger
    plugin(s, "kill", "off", name, "--reason", "e2e: reviewed the alert")
    time.sleep(6)
    st = status(s, name)
    assert st["killSwitch"]["engaged"] is False and st["killHistory"][-1]["action"] == "Released"


def test_the_daily_stop_loss_engages_the_kill_switch(models):
    s, name = models, "aapl-stoploss"
    # a tiny daily stop-loss (0.001% of 100,000 = 1 USD): the champion's first losing minute trips it
    s.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest(name, stop_loss={"dailyPercent": 0.001})))
    st = wait_for(s, name, lambda st: (st.get("killSwitch") or {}).get("engaged") is True, timeout=180)
    ks = st["killSwitch"]
    assert ks["trigger"] == "DailyStopLoss" and ks["reason"].startswith("daily stop-loss"), ks
    assert ks["triggerKey"].startswith("DailyStopLoss:")
    st = wait_for(s, name, lambda st: st["killSwitch"].get("sentAt") and settled(st), timeout=60)
    assert st["killSwitch"]["acks"], st["killSwitch"]


def test_the_monthly_stop_loss_waits_for_ten_days_of_history(models):
    s, name = models, "aapl-monthly"
    m = manifest(name, stop_loss={"dailyPercent": 50})
    m["spec"]["trader"]["barIntervalSeconds"] = 1  # a trading day lasts 390 s: no day rolls into the ledger meanwhile
    s.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(m))
    wait_for(s, name, lambda st: st.get("pnlDay") is not None, timeout=120)
    # nine recorded days of -1,000 USD: -9% of the capital, but below the 10 days of history it needs
    days = [{"date": f"2020-01-{d:02d}", "pnlUsd": -1000.0} for d in range(1, 10)]
    s.kubectl("patch", "tradingstrategy", name, "--subresource=status", "--type", "merge", "-p",
              json.dumps({"status": {"pnlDays": days}}))
    time.sleep(6)
    assert not (status(s, name).get("killSwitch") or {}).get("engaged")
    days.append({"date": "2020-01-10", "pnlUsd": -1000.0})
    s.kubectl("patch", "tradingstrategy", name, "--subresource=status", "--type", "merge", "-p",
              json.dumps({"status": {"pnlDays": days}}))
    st = wait_for(s, name, lambda st: (st.get("killSwitch") or {}).get("engaged") is True, timeout=60)
    assert st["killSwitch"]["trigger"] == "MonthlyStopLoss" and "10 days of history" in st["killSwitch"]["reason"]


def test_daily_report_replay_and_drill_on_the_real_stack(models, tmp_path):
    """The on-call commands against the real Prometheus, Redis and MLflow: the daily report (markdown and a
    PNG opened here), the replay of the worst round trips (verified against the pods' own books), and the
    seed 004 rollback drill, dry-run then live (the kill switch engaged and released, the drill recorded)."""
    import matplotlib.image as mpimg

    s, name = models, "aapl-kill"  # ramping again after the first test: both pods trading
    out = plugin(s, "report", "daily", name, "--out", str(tmp_path), "--step", "5", "-o", "json")
    rep = json.loads(out.stdout)
    md = open(rep["markdown"]).read()
    assert name in md and "champion" in md and "challenger" in md
    img = mpimg.imread(rep["png"])
    assert img.shape[0] == 600 and img.shape[1] == 1000 and img.std() > 0  # drawn, not blank

    out = plugin(s, "replay", name, "--last-n", "3", "--role", "champion", "-o", "json")
    res = json.loads(out.stdout)
    assert res and res[0]["role"] == "champion", res
    assert "pnlUsd" in res[0]

    dry = json.loads(plugin(s, "drill", "rollback", name, "--dry-run", "--out", str(tmp_path), "-o", "json").stdout)
    assert dry["passed"] is True and not (status(s, name).get("killSwitch") or {}).get("engaged")
    live = json.loads(plugin(s, "drill", "rollback", name, "--wait", "2", "--out", str(tmp_path), "-o", "json").stdout)
    assert live["passed"] is True, live
    hist = status(s, name)["killHistory"]
    assert hist[-2]["trigger"] == "Drill" and "ROLLBACK_DRILL" in hist[-2]["reason"], hist[-2:]
    assert hist[-1]["action"] == "Released" and hist[-2]["action"] == "Engaged"
    st = json.loads(plugin(s, "drill", "status", name, "-o", "json").stdout)
    assert st["badge"] == "green" and st["daysSinceDrill"] == 0
