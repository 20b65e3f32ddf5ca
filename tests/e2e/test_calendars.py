"""End to end on the real local stack (issue 13): a symbol on another exchange (``spec.calendars``).

The strategy trades MSFT (New York) and CSPX (London: ``calendars: {CSPX: XLON}``) on daily bars from the
stack's PostgreSQL. MSFT's bars are real (``bokeh-sampledata``); CSPX's are test data: AAPL's real daily prices
of the same window laid on London's sessions (UK bank holidays dropped), stored at 08:00 London (07:00 UTC in
summer) by ``barsource.load_frame(calendar="XLON")``.

Without the calendar the trader pods refuse those bars (they are not New York session opens) and TradersReady
says so; once the calendar is set the rolled pods read them, and both symbols trade (per-symbol series scraped by
the real Prometheus). That is the control: the same bars and spec, the calendar alone decides.
"""

from __future__ import annotations

import json
from datetime import date

import psycopg
import pytest
import yaml

import demo
from quantramp.trader import barsource
from quantramp.trader import session as sess
from support.stock_bars import daily_bars, daily_frame
from test_dashboard import query as prom
from test_market_data import traders_ready

pytestmark = pytest.mark.e2e

NAME, NS, TABLE = "two-exchanges", "default", "london_daily_bars"
WINDOW = ("2011-01-03", "2012-12-31")


def manifest(dsn: str, calendars: dict | None) -> dict:
    spec = {
        "model": {"name": NAME, "version": "2"}, "symbols": ["MSFT", "CSPX"], "capitalUsd": 100000,
        "admission": {"mode": "off"}, "stopLoss": {"enabled": False},
        "stages": [{"name": "shadow", "capitalPercent": 0, "dwell": "1h"}, {"name": "production", "capitalPercent": 100}],
        "risk": {"maxPositionPercent": 50, "maxOrderPercent": 50},
        "trader": {"barIntervalSeconds": 0.05},
        "marketData": {"source": "postgres", "barSeconds": 86400,
                       "postgres": {"dsn": dsn, "table": TABLE,
                                    "passwordSecretKeyRef": {"name": demo.MARKET_SECRET, "key": "password"}}},
    }
    if calendars:
        spec["calendars"] = calendars
    return {"apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy",
            "metadata": {"name": NAME, "namespace": NS}, "spec": spec}


@pytest.fixture(scope="module")
def strategy(operator_stack):
    s = operator_stack
    s.train(NAME, ["--kind", "logistic", "--seed", "1", "--alias", "champion"])
    s.train(NAME, ["--kind", "logistic", "--seed", "2"])
    london = sess.calendar("XLON")
    cspx = daily_frame("AAPL", *WINDOW)
    cspx = cspx[[london.session_for(date.fromisoformat(d)) is not None for d in cspx["datetime"]]]
    with psycopg.connect(s.env["QR_MARKET_DB_DSN"], password=s.env["QR_MARKET_DB_PASSWORD"]) as conn:
        barsource.create_schema(conn, TABLE)
        loaded = {"MSFT": barsource.load_frame(conn, TABLE, "MSFT", daily_bars("MSFT", *WINDOW)),
                  "CSPX": barsource.load_frame(conn, TABLE, "CSPX", cspx, calendar="XLON")}
    print("\nloaded daily bars:", loaded)
    s.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest(s.env["QR_POD_MARKET_DB_DSN"], None)))
    yield s
    s.kubectl("delete", "tradingstrategy", NAME, "-n", NS, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)


def test_london_bars_are_refused_as_new_york_sessions_and_traded_once_the_calendar_is_set(strategy):
    s = strategy
    cond = demo.wait_for(lambda: (c := traders_ready(s, NAME)).get("status") == "False" and "refusing to trade" in c.get("message", "") and c,
                         "TradersReady False with the trader's refusal", timeout=180)
    print("\nTradersReady without the calendar:", cond["message"])
    assert "CSPX" in cond["message"] and "not a session open" in cond["message"], cond

    s.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest(s.env["QR_POD_MARKET_DB_DSN"], {"CSPX": "XLON"})))
    def champion_env() -> dict | None:
        dep = json.loads(s.kubectl("get", "deployment", f"{NAME}-champion", "-n", NS, "-o", "json").stdout)
        env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
        return env if "QR_CALENDARS" in env else None

    env = demo.wait_for(champion_env, "the champion's Deployment with QR_CALENDARS", timeout=60)
    assert env["QR_CALENDARS"] == "CSPX=XLON" and env["QR_SYMBOLS"] == "MSFT,CSPX"
    demo.wait_for(lambda: traders_ready(s, NAME).get("status") == "True", "TradersReady True", timeout=240)

    sel = f'strategy="{NAME}",role="champion"'

    def traded():
        got = {r["metric"]["symbol"] for r in prom(s, f"max by (symbol) (quantramp_symbol_trades_total{{{sel}}}) > 0")}
        return got if got == {"MSFT", "CSPX"} else None

    print("symbols that traded:", demo.wait_for(traded, "both symbols traded by the champion", timeout=180))
    logs = s.kubectl("logs", f"deployment/{NAME}-champion", "-n", NS).stdout
    assert "bars of MSFT, CSPX from postgresql://quantramp@" in logs, logs[-3000:]


def test_kubectl_port_forward_reaches_a_trader_pod_s_probes(strategy):
    """During an incident `kubectl port-forward` to a trader pod must reach /readyz and /metrics: the kubelet's
    container runtime dials localhost inside the pod's network namespace (delivery review §4.2)."""
    import re
    import subprocess
    import urllib.request

    s = strategy
    demo.wait_for(lambda: traders_ready(s, NAME).get("status") == "True", "TradersReady True", timeout=240)
    pf = subprocess.Popen(["kubectl", "port-forward", "-n", NS, f"deployment/{NAME}-champion", "0:8080"],
                          env=s.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = pf.stdout.readline()
        port = int(re.search(r"127\.0\.0\.1:(\d+)", line).group(1))
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'quantramp_symbol_trades_total{' in body and 'symbol="CSPX"' in body, body[:500]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as r:
            assert r.status == 200
    finally:
        pf.terminate()
        out, err = pf.communicate(timeout=10)
        print("port-forward:", line.strip(), err[-500:])
