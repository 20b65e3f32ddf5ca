"""The Grafana dashboard (charts/quantramp/files/dashboard.json): a dashboard Grafana imports
(schemaVersion 39, a Prometheus datasource variable, a ``strategy`` variable), whose every panel query
names only series the trader or the operator exports, is filtered by ``$strategy``, and is valid
PromQL (promtool). tests/e2e/test_dashboard.py runs every query against the real Prometheus."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from quantramp.trader import contract as C

from test_alert_promtool import PROMTOOL, needs_promtool
from test_contract import operator_series

DASHBOARD = Path(__file__).resolve().parents[3] / "charts" / "quantramp" / "files" / "dashboard.json"
NAME = re.compile(r"\bquantramp_[a-z_]+\b")
SELECTOR = re.compile(r"\b(quantramp_[a-z_]+)(\{[^}]*\})?")
#: what the dashboard must show (issue 11 item 6), as the series that show it
REQUIRED = {
    "stage and capital": C.CAPITAL, "champion vs challenger P&L": C.PNL, "vs simulated": C.SIMULATED_PNL,
    "drawdown": C.DRAWDOWN, "slippage": C.SLIPPAGE_REALIZED, "vs modelled": C.SLIPPAGE_MODELED,
    "fill ratio": C.FILL_RATIO, "precision": C.PRECISION, "kill switch": C.KILL_LATCH,
    "governor denials": C.GOVERNOR_DENIALS, "orders blocked": C.ORDERS_BLOCKED, "decision latency": C.DECISION_LATENCY,
}


def load() -> dict:
    """The dashboard as a dict."""
    return json.loads(DASHBOARD.read_text())


def panel_targets(dash: dict) -> list[tuple[str, str, str]]:
    """(panel title, refId, expr) of every query target, rows' nested panels included."""
    out = []
    for p in dash["panels"]:
        for q in [p, *p.get("panels", [])]:
            for t in q.get("targets", []):
                out.append((q["title"], t["refId"], t["expr"]))
    return out


def substitute(expr: str, strategy: str, rate_interval: str = "1m") -> str:
    """A panel query as Grafana sends it for one strategy."""
    return expr.replace("$__rate_interval", rate_interval).replace("$strategy", strategy)


def _base(name: str) -> str:
    return re.sub(r"_(bucket|count|sum|created)$", "", name)


def test_the_dashboard_is_an_importable_grafana_dashboard():
    d = load()
    assert d["schemaVersion"] == 39 and d["uid"] and d["title"]
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    s = variables["strategy"]
    assert s["type"] == "query" and s["includeAll"] and s["multi"]
    m = re.fullmatch(r"label_values\((quantramp_[a-z_]+)(\{\})?, *strategy\)", s["query"]["query"])
    assert m and m.group(1) in C.NAMES, s["query"]
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids))
    for p in d["panels"]:
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs)), p["title"]


def test_panels_do_not_overlap():
    cells: dict[tuple[int, int], str] = {}
    for p in load()["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = p["title"]


def test_every_query_names_only_exported_series_filtered_by_the_strategy_variable():
    known = C.NAMES | operator_series()
    targets = panel_targets(load())
    assert len(targets) >= 15
    for title, ref, expr in targets:
        names = {_base(n) for n in NAME.findall(expr)}
        assert names and names <= known, (title, ref, sorted(names - known))
        for name, labels in SELECTOR.findall(expr):
            assert 'strategy=~"$strategy"' in labels, f"{title}/{ref}: {name} is not filtered by $strategy"
    shown = {_base(n) for _, _, e in targets for n in NAME.findall(e)}
    missing = {what: name for what, name in REQUIRED.items() if name not in shown}
    assert not missing, missing


@needs_promtool
def test_every_query_is_valid_promql(tmp_path):
    """promtool parses each query (as a recording rule), with the variables substituted."""
    rules = [{"record": f"dashboard:panel_{i}", "expr": substitute(e, "s")} for i, (_, _, e) in enumerate(panel_targets(load()))]
    f = tmp_path / "dashboard_rules.yaml"
    f.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    out = subprocess.run([PROMTOOL, "check", "rules", str(f)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
