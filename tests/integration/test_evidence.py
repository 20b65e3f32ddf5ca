"""Evidence collection against the real Prometheus of the local stack.

A real prometheus-client exporter publishes trader-shaped series for two strategies; the
stack's Prometheus scrapes it through a file_sd target; :func:`collect` must return the
figures keyed by (namespace, strategy) and (role, stage).
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from prometheus_api_client import PrometheusConnect
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from quantramp.operator.evidence import collect, custom_query

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_collect_groups_by_strategy_role_and_stage(stack):
    reg = CollectorRegistry()
    labels = ["namespace", "strategy", "role", "stage"]
    pnl = Gauge("quantramp_pnl_usd", "P&L", labels, registry=reg)
    trades = Counter("quantramp_trades", "trades", labels, registry=reg)
    pnl.labels("it", "alpha", "challenger", "canary-1").set(12.5)
    pnl.labels("it", "alpha", "champion", "canary-1").set(-3.0)
    pnl.labels("it", "beta", "challenger", "shadow").set(7.0)
    trades.labels("it", "alpha", "challenger", "canary-1").inc(42)
    port = _free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=reg)
    target = stack.dir / "prometheus" / "targets" / "it_evidence.json"
    target.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"job": "it"}}]))
    prom = PrometheusConnect(url=stack.env["PROMETHEUS_URL"], disable_ssl=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            snap = collect(prom)
            alpha = snap.series.get(("it", "alpha"), {})
            if alpha.get(("challenger", "canary-1"), {}).get("trades") == 42:
                break
            time.sleep(1)
        assert snap.error is None
        assert alpha[("challenger", "canary-1")] == {"pnl_usd": 12.5, "trades": 42.0}
        assert alpha[("champion", "canary-1")] == {"pnl_usd": -3.0}
        ev = snap.evidence("it", "alpha", "challenger", "canary-1")
        assert ev.subject.pnl_usd == 12.5 and ev.champion.pnl_usd == -3.0
        # a series of another stage is not evidence for this one
        assert snap.evidence("it", "beta", "challenger", "canary-1").subject is None
        assert snap.evidence("it", "beta", "challenger", "shadow").subject.pnl_usd == 7.0
        # user criteria: one batched query each, judged per strategy; a bad query errs only its criteria
        double, broken = custom_query("max", "quantramp_pnl_usd * 2"), custom_query("max", "rate(quantramp_pnl_usd")
        snap = collect(prom, custom=[double, broken])
        ev = snap.evidence("it", "alpha", "challenger", "canary-1", metrics={"twice": double, "oops": broken})
        assert ev.custom == {"twice": 25.0} and "oops" not in ev.custom
        assert "custom:oops" in ev.errors and "custom:twice" not in ev.errors and snap.error is None
    finally:
        target.unlink(missing_ok=True)
        server.shutdown()


def test_unreachable_prometheus_is_an_error_not_evidence():
    snap = collect(PrometheusConnect(url=f"http://127.0.0.1:{_free_port()}", disable_ssl=True), timeout=1)
    assert snap.error and "Connection" in snap.error
    assert snap.evidence("it", "alpha", "challenger", "").error == snap.error


def test_evidence_streams_travel_from_a_trader_engine_through_prometheus(stack):
    """A real engine's evidence streams, exported by TraderMetrics, scraped by the real Prometheus and
    read back by :func:`collect` in the six counter families: the operator sees the engine's sums."""
    from quantramp.trader.backtest import make_engine
    from quantramp.trader.engine import EngineConfig
    from quantramp.trader.evidence import EvidenceConfig
    from quantramp.trader.marketdata import load_minute_bars
    from quantramp.trader.metrics import TraderMetrics

    class Flip:
        i = 0

        def p_up_one(self, x):
            self.i += 1
            return 0.9 if (self.i // 7) % 2 == 0 else 0.1

    bars = load_minute_bars()
    eng = make_engine(Flip(), EngineConfig.for_capital(100_000.0, evidence=EvidenceConfig(pnl_band=0.1)), bars, seed=2)
    m = TraderMetrics("gamma", "challenger", "AAPL", stage="canary-1", scope="r7-canary-1")
    for bar in list(bars)[:600]:
        m.observe(eng.on_bar(bar), eng.stats())
    from prometheus_client import start_http_server as serve

    port = _free_port()
    server, _ = serve(port, addr="127.0.0.1", registry=m.registry)
    target = stack.dir / "prometheus" / "targets" / "it_streams.json"
    target.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"], "labels": {"job": "it-streams", "namespace": "it"}}]))
    prom = PrometheusConnect(url=stack.env["PROMETHEUS_URL"], disable_ssl=True)
    try:
        deadline = time.monotonic() + 60
        got = {}
        while time.monotonic() < deadline and len(got) < 3:
            snap = collect(prom)
            got = snap.stream_sums("it", "gamma", "challenger", "r7-canary-1")
            time.sleep(1)
        assert set(got) == {"slippageRatio", "fillRatio", "pnlDeviation"}, got
        for crit, s in eng.evidence.sums.items():
            assert got[crit].n == s.n
            # exposition and PromQL round-trip floats; 1e-9 relative is far below any decision's scale
            assert got[crit].total == pytest.approx(s.total, rel=1e-9, abs=1e-9)
            assert got[crit].sum_sq == pytest.approx(s.sum_sq, rel=1e-9)
        assert snap.stream_sums("it", "gamma", "challenger", "r6-canary-1") == {}  # another ramp's scope
        ev = snap.evidence("it", "gamma", "challenger", "canary-1", scope="r7-canary-1")
        assert ev.streams == got and "streams" not in ev.errors
    finally:
        target.unlink(missing_ok=True)
        server.shutdown()
