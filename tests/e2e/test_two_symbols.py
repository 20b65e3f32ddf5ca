"""End to end on the real local stack (issue 13): a two-symbol strategy on daily bars ramps to a decision.

MSFT and AAPL daily bars are real: ``bokeh-sampledata``'s stocks (Quandl WIKI, public domain), 2010-01-04 ..
2013-03-01 (no split of either in it; tests/support/stock_bars.py), loaded into a table of the stack's PostgreSQL.
The strategy names both symbols and ``marketData.barSeconds: 86400``: each role's one trader pod trades them under
one governor, whose daily loss limit is the combined cap of the pair (trader/portfolio.py; that neither symbol
alone reaches it is shown in tests/unit/trader/test_portfolio.py). The test checks that the ramp reaches a
decision, that both pods ran both symbols at the daily bar length, that each symbol traded (the per-symbol
series), and that the combined daily loss cap halted the pair (quantramp_governor_halts_total, scraped by the
real Prometheus).
"""

from __future__ import annotations

import json

import psycopg
import pytest
import yaml

import demo
from quantramp.trader import barsource
from support.stock_bars import daily_bars
from test_dashboard import query as prom  # an instant query that raises with Prometheus' error

pytestmark = pytest.mark.e2e

NAME, NS, SYMBOLS, TABLE = "pair-daily", "default", ["MSFT", "AAPL"], "daily_bars"


def manifest(dsn: str) -> dict:
    spec = {
        "model": {"name": NAME, "version": "2"}, "symbols": SYMBOLS, "capitalUsd": 100000,
        "admission": {"mode": "off"}, "stopLoss": {"enabled": False},
        "stages": [{"name": "shadow", "capitalPercent": 0, "dwell": "20s"},
                   # daily bars trade a few times a week: the canary's 5 % needs longer than the shadow for
                   # minSamples fills (undecided criteria pass at 2 x dwell only with minSamples observations)
                   {"name": "canary", "capitalPercent": 5, "dwell": "45s", "maxDrawdown": 0.5, "pnlBand": 10},
                   {"name": "production", "capitalPercent": 100, "dwell": "0s", "maxDrawdown": 0.5, "pnlBand": 10}],
        # a combined daily loss cap of 0.1 % of the pod's capital (100 USD for the champion's 100,000): the ATR
        # sizing holds about 2,400 USD of each symbol, so a bad day for the pair reaches it (an offline run of the
        # champion on these bars: 10 halts in 400 sessions)
        "risk": {"maxPositionPercent": 50, "maxOrderPercent": 50, "maxDailyLossPercent": 0.1},
        "analysis": {"interval": "5s", "failureLimit": 3, "criteria": {"minTrades": 5},
                     "judgement": {"method": "anytimeValid", "minSamples": 10, "blockBars": 5,
                                   "onInconclusive": "pass"}},
        # 20 sessions a second: the 3 years of bars (795 sessions) in about 40 s a loop
        "trader": {"barIntervalSeconds": 0.05},
        "marketData": {"source": "postgres", "barSeconds": 86400,
                       "postgres": {"dsn": dsn, "table": TABLE,
                                    "passwordSecretKeyRef": {"name": demo.MARKET_SECRET, "key": "password"}}},
    }
    return {"apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy",
            "metadata": {"name": NAME, "namespace": NS}, "spec": spec}


@pytest.fixture(scope="module")
def ramp(operator_stack):
    s = operator_stack
    s.train(NAME, ["--kind", "logistic", "--seed", "1", "--alias", "champion"])
    s.train(NAME, ["--kind", "logistic", "--seed", "2"])
    with psycopg.connect(s.env["QR_MARKET_DB_DSN"], password=s.env["QR_MARKET_DB_PASSWORD"]) as conn:
        barsource.create_schema(conn, TABLE)
        loaded = {x: barsource.load_frame(conn, TABLE, x, daily_bars(x)) for x in SYMBOLS}
    print("\nloaded daily bars:", loaded)
    s.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest(s.env["QR_POD_MARKET_DB_DSN"])))
    phases = s.wait_terminal([NAME], timeout=600)
    yield s, phases[NAME]
    s.kubectl("delete", "tradingstrategy", NAME, "-n", NS, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)


def test_a_two_symbol_daily_strategy_ramps_to_a_decision_under_one_combined_loss_cap(ramp):
    s, phase = ramp
    st = s.strategies()[NAME]["status"]
    print("phase:", phase, "last analysis:", json.dumps(st.get("lastAnalysis", {}).get("measurements", {}))[:1500])
    assert phase in ("Promoted", "RolledBack"), st
    assert st.get("stageIndex", 0) >= 1 or phase == "Promoted", "the ramp never left shadow"

    dep = json.loads(s.kubectl("get", "deployment", f"{NAME}-champion", "-n", NS, "-o", "json").stdout)
    env = {e["name"]: e.get("value") for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["QR_SYMBOLS"] == "MSFT,AAPL" and env["QR_BAR_SECONDS"] == "86400"
    # (the promotion restarted the champion with the candidate's version: its log starts again)
    def champion_log() -> str | None:
        out = s.kubectl("logs", f"deployment/{NAME}-champion", "-n", NS, check=False).stdout
        return out if "bars of MSFT, AAPL from" in out else None

    logs = demo.wait_for(champion_log, "the champion's bars line", timeout=120)
    assert "bars of MSFT, AAPL from postgresql://quantramp@" in logs and f"table {TABLE}" in logs, logs[-3000:]

    for role in ("champion", "challenger"):
        out = s.kubectl("logs", f"deployment/{NAME}-{role}", "-n", NS, "--tail=15", check=False)
        print(f"--- {role} ---\n{out.stdout[-2500:]}{out.stderr[-500:]}")
    print("conditions:", json.dumps(st.get("conditions", []))[:2000])
    sel = f'strategy="{NAME}"'
    # over the ramp (the pods of earlier stages are gone: their series are stale now, not lost)
    traded = {r["metric"]["symbol"] for r in
              prom(s, f"max by (symbol) (max_over_time(quantramp_symbol_trades_total{{{sel}}}[15m])) > 0")}
    assert traded == set(SYMBOLS), f"symbols that traded: {traded}"
    # the one governor of the pair halted on the combined daily loss (a halt of one daily bar is shorter than a
    # scrape: the pods count the halts)
    halts = prom(s, f'max by (role) (max_over_time(quantramp_governor_halts_total{{{sel},reason="daily_loss_limit"}}[15m])) > 0')
    assert halts, "the combined daily loss cap never halted the pair"
    print("halts on the combined daily loss:", {r["metric"]["role"]: r["value"][1] for r in halts})
