"""End to end on the real local stack (issue 13): a strategy on a symbol the bundled sample lacks, its bars read
by the trader pods from the stack's PostgreSQL (``spec.marketData``, the password by ``secretKeyRef``).

While the table has no MSFT bars the champion refuses to trade, and TradersReady says why, with the trader's own
words (its termination log); once MSFT's bars are loaded, the restarted pod reads them and trades MSFT.
"""

from __future__ import annotations

import json

import psycopg
import pytest
import yaml

import demo
from quantramp.trader import barsource, marketdata

pytestmark = pytest.mark.e2e

NAME, NS, SYMBOL = "msft-pg", "default", "MSFT"


def manifest(dsn: str) -> dict:
    spec = {
        "model": {"name": NAME, "version": "2"}, "symbols": [SYMBOL], "capitalUsd": 100000,
        "admission": {"mode": "off"}, "stopLoss": {"enabled": False},
        "stages": [{"name": "shadow", "capitalPercent": 0, "dwell": "1h"},
                   {"name": "production", "capitalPercent": 100}],
        "trader": {"barIntervalSeconds": 0.05},
        "marketData": {"source": "postgres",
                       "postgres": {"dsn": dsn, "passwordSecretKeyRef": {"name": demo.MARKET_SECRET, "key": "password"}}},
    }
    return {"apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy",
            "metadata": {"name": NAME, "namespace": NS}, "spec": spec}


def msft_bars() -> marketdata.Bars:
    """MSFT-like minute bars: the bundled AAPL session prices scaled by 1.37 (cents), same times and volumes."""
    a = marketdata.load_minute_bars("AAPL")
    scale = lambda x: (x * 1.37).round(2)  # noqa: E731
    return marketdata.Bars(SYMBOL, a.ts, scale(a.open), scale(a.high), scale(a.low), scale(a.close), a.volume)


def traders_ready(s, name: str = NAME, ns: str = NS) -> dict:
    """The strategy's TradersReady condition ({} before the operator wrote one)."""
    st = (json.loads(s.kubectl("get", "tradingstrategy", name, "-n", ns, "-o", "json").stdout).get("status") or {})
    return next((c for c in st.get("conditions", []) if c["type"] == "TradersReady"), {})


@pytest.fixture(scope="module")
def strategy(operator_stack):
    s = operator_stack
    s.train(NAME, ["--kind", "logistic", "--seed", "1", "--alias", "champion"])
    s.train(NAME, ["--kind", "logistic", "--seed", "2"])
    with psycopg.connect(s.env["QR_MARKET_DB_DSN"], password=s.env["QR_MARKET_DB_PASSWORD"], autocommit=True) as conn:
        conn.execute(f"DELETE FROM {demo.MARKET_TABLE} WHERE symbol = %s", (SYMBOL,))
    s.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest(s.env["QR_POD_MARKET_DB_DSN"])))
    yield s
    s.kubectl("delete", "tradingstrategy", NAME, "-n", NS, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)


def test_a_symbol_missing_from_the_database_is_refused_and_the_status_says_why_then_traded_once_loaded(strategy):
    s = strategy
    cond = demo.wait_for(lambda: (c := traders_ready(s)).get("status") == "False" and "refusing to trade" in c.get("message", "") and c,
                         "TradersReady False with the trader's refusal", timeout=180)
    print("\nTradersReady:", cond["message"])
    assert f"no bars for symbol '{SYMBOL}'" in cond["message"] and "table minute_bars" in cond["message"], cond
    assert s.env["QR_MARKET_DB_PASSWORD"] not in cond["message"], "the status shows the database password"

    with psycopg.connect(s.env["QR_MARKET_DB_DSN"], password=s.env["QR_MARKET_DB_PASSWORD"]) as conn:
        assert barsource.load_frame(conn, demo.MARKET_TABLE, SYMBOL, msft_bars()) == 2340
    # the kubelet restarts the crashed container (back-off 10 s, 20 s, ...): the next start reads the bars
    demo.wait_for(lambda: traders_ready(s).get("status") == "True", "TradersReady True", timeout=240)
    logs = s.kubectl("logs", f"deployment/{NAME}-champion", "-n", NS).stdout
    assert f"bars of {SYMBOL} from postgresql://quantramp@" in logs and "table minute_bars" in logs, logs[-3000:]
    demo.wait_for(lambda: "bars=100 " in s.kubectl("logs", f"deployment/{NAME}-champion", "-n", NS).stdout,
                  "bars of MSFT traded", timeout=120)
