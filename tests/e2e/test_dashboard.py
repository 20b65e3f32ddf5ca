"""End to end, the Grafana dashboard (charts/quantramp/files/dashboard.json) against the real local stack:
one short strategy trades on real trader pods scraped by the stack's Prometheus, then every panel query
(``$strategy`` = that strategy, ``$__rate_interval`` = 1m) and the ``strategy`` variable's query return
data. Every failing query is reported, not only the first."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import requests
import yaml

pytestmark = pytest.mark.e2e

DASHBOARD = Path(__file__).resolve().parents[2] / "charts" / "quantramp" / "files" / "dashboard.json"
NAME = "aapl-dash"
#: series that exist only once the pods have traded (ratios are absent until defined)
TRADED = ("quantramp_fill_ratio", "quantramp_slippage_realized_bps", "quantramp_slippage_modeled_bps",
          "quantramp_model_precision_ratio")


def panel_targets(dash: dict) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query target, rows' nested panels included."""
    out = []
    for p in dash["panels"]:
        for q in [p, *p.get("panels", [])]:
            for t in q.get("targets", []):
                out.append((q["title"], t["refId"], t["expr"]))
    return out


def query(stack, expr: str) -> list[dict]:
    """An instant query against the stack's Prometheus; raises with Prometheus' error."""
    res = requests.get(f"{stack.env['PROMETHEUS_URL']}/api/v1/query", params={"query": expr}, timeout=10).json()
    if res.get("status") != "success":
        raise RuntimeError(f"{res.get('errorType')}: {res.get('error')}")
    return res["data"]["result"]


def manifest() -> dict:
    """A strategy that stays in canary-1 with both pods trading live (dwell 1h) on fast bars."""
    return {
        "apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy",
        "metadata": {"name": NAME, "namespace": "default"},
        "spec": {
            "model": {"name": NAME, "version": "2"}, "capitalUsd": 100000,
            "admission": {"mode": "off"},
            "stages": [{"name": "shadow", "capitalPercent": 0, "dwell": "2s"},
                       {"name": "canary-1", "capitalPercent": 1, "dwell": "1h", "maxDrawdown": 0.9, "pnlBand": 10},
                       {"name": "production", "capitalPercent": 100, "maxDrawdown": 0.9, "pnlBand": 10}],
            "analysis": {"interval": "2s",
                         "criteria": {"minTrades": 1, "minPrecisionRatio": 0, "minFillRatio": 0, "maxSlippageRatio": 100}},
            "trader": {"barIntervalSeconds": 0.05},
            "stopLoss": {"enabled": False},
            "risk": {"maxPositionPercent": 5, "maxOrderPercent": 5},
        },
    }


@pytest.fixture(scope="module")
def trading(operator_stack):
    """``aapl-dash`` in canary-1 with both roles exporting, and trading, for at least a minute of
    scrapes (so ``rate(...[1m])`` has samples). Deleted afterwards."""
    s = operator_stack
    s.train(NAME, ["--kind", "logistic", "--seed", "1", "--alias", "champion"])
    s.train(NAME, ["--kind", "logistic", "--seed", "2"])
    s.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest()))
    try:
        deadline, seen = time.monotonic() + 300, {}
        while time.monotonic() < deadline:
            bars = {r["metric"].get("role"): float(r["value"][1])
                    for r in query(s, f'quantramp_bars_total{{strategy="{NAME}", stage=~"canary-1|production"}}')}
            seen = {n: len(query(s, f'{n}{{strategy="{NAME}"}}')) for n in TRADED}
            if len([v for v in bars.values() if v > 20]) == 2 and all(seen.values()):
                break
            time.sleep(2)
        else:
            st = s.strategies().get(NAME, {}).get("status", {})
            raise AssertionError(f"{NAME}: pods not trading; bars {bars}, traded series {seen}; status "
                                 f"{json.dumps(st)[:3000]}")
        time.sleep(65)  # a full rate interval of scrapes of the live pods
        yield s
    finally:
        s.kubectl("delete", "tradingstrategy", NAME, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)


def test_every_dashboard_panel_query_returns_data_from_the_real_trader_pods(trading):
    dash = json.loads(DASHBOARD.read_text())
    failures = []
    targets = panel_targets(dash)
    assert targets
    for title, ref, expr in targets:
        q = expr.replace("$__rate_interval", "1m").replace("$strategy", NAME)  # no regex metacharacters in NAME
        try:
            result = query(trading, q)
        except Exception as exc:  # noqa: BLE001 - collected, reported together
            failures.append(f"{title} [{ref}]: {exc}\n    {q}")
            continue
        if not result:
            failures.append(f"{title} [{ref}]: no series\n    {q}")
    assert not failures, f"{len(failures)} of {len(targets)} panel queries failed:\n" + "\n".join(failures)


def test_the_strategy_variable_lists_the_running_strategy(trading):
    dash = json.loads(DASHBOARD.read_text())
    var = next(v for v in dash["templating"]["list"] if v["name"] == "strategy")
    m = re.fullmatch(r"label_values\((\w+)(?:\{\})?, *strategy\)", var["query"]["query"])
    assert m, var["query"]
    res = requests.get(f"{trading.env['PROMETHEUS_URL']}/api/v1/label/strategy/values",
                       params={"match[]": m.group(1)}, timeout=10).json()
    assert NAME in res["data"], res
