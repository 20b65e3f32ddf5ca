"""The evidence contract (quantramp.trader.contract) binds the trader, the operator and the alert rules:
a series named anywhere that the contract (or, for the alert rules, the operator's own metrics) does not
name is a drift this test catches."""

from __future__ import annotations

import re
from pathlib import Path

from quantramp.operator import evidence
from quantramp.trader import contract as C
from quantramp.trader.metrics import RuntimeMetrics, TraderMetrics

ALERTS = Path(__file__).resolve().parents[3] / "charts" / "quantramp" / "files" / "alerts.yaml"
NAME = re.compile(r"\bquantramp_[a-z_]+\b")


def _base(name: str) -> str:
    return re.sub(r"_(bucket|count|sum|created)$", "", name)


def operator_series() -> set[str]:
    """The names of the operator's own series (quantramp.operator.metrics), counters with _total."""
    from prometheus_client.metrics import MetricWrapperBase

    from quantramp.operator import metrics as OM

    out = set()
    for m in vars(OM).values():
        if isinstance(m, MetricWrapperBase):
            out.add(m._name + "_total" if m._type == "counter" else m._name)
    return out


def test_the_alert_rules_use_only_contract_series_and_the_operators():
    # quantramp_io_*: the pod labels quantramp.io/* as target labels (of `up`), not series
    used = {_base(n) for n in NAME.findall(ALERTS.read_text()) if not n.startswith("quantramp_io_")}
    known = C.NAMES | operator_series()
    assert "quantramp_operator_days_since_drill" in known
    assert used and used <= known, sorted(used - known)


def test_the_operator_queries_only_contract_series_by_the_contract_labels():
    for query in [*evidence.QUERIES.values(), evidence.ALERTS_QUERY]:
        assert f"by ({', '.join(C.EVIDENCE_LABELS)})" in query
        assert set(NAME.findall(query)) <= C.NAMES, query
    assert {n for q in evidence.QUERIES.values() for n in NAME.findall(q)} >= {C.PNL, C.MAX_DRAWDOWN, C.TRADES}


def test_the_trader_exports_contract_series_with_the_contract_labels():
    base = TraderMetrics("s", "challenger", "AAPL", stage="canary-1")
    RuntimeMetrics(base, durable=True)  # the governor's series come with the base
    exported = {}
    for metric in base.registry.collect():  # a counter family is named without its _total suffix
        name = metric.name + "_total" if metric.type == "counter" else metric.name
        for sample in metric.samples:
            exported[name] = sample.labels
    assert len(exported) >= 20
    assert set(exported) <= C.NAMES, sorted(set(exported) - C.NAMES)
    for name, labels in exported.items():
        assert set(C.BASE_LABELS) <= set(labels), (name, labels)
