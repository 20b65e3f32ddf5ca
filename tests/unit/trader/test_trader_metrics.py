"""Metric names and labels are exactly the trader pod contract."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from prometheus_client.parser import text_string_to_metric_families

from quantramp.trader import metrics as M
from quantramp.trader.broker import ImpactModel, SimBroker
from quantramp.trader.engine import Engine, EngineConfig
from quantramp.trader.marketdata import Bar

CONTRACT = {
    "quantramp_pnl_usd": "gauge",
    "quantramp_simulated_pnl_usd": "gauge",
    "quantramp_drawdown_ratio": "gauge",
    "quantramp_max_drawdown_ratio": "gauge",
    "quantramp_day_pnl_usd": "gauge",
    "quantramp_hour_pnl_usd": "gauge",
    "quantramp_trading_date": "gauge",
    "quantramp_fees_usd": "gauge",
    "quantramp_fee_gross_pnl_ratio": "gauge",
    "quantramp_slippage_realized_bps": "gauge",
    "quantramp_slippage_modeled_bps": "gauge",
    "quantramp_fill_ratio": "gauge",
    "quantramp_model_precision_ratio": "gauge",
    "quantramp_trades_total": "counter",
    "quantramp_bars_total": "counter",
    "quantramp_capital_usd": "gauge",
    "quantramp_position_notional_usd": "gauge",
    "quantramp_orders_total": "counter",
    "quantramp_decision_latency_seconds": "histogram",
}


def samples(m: M.TraderMetrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def families(m: M.TraderMetrics) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(m.render().decode())}


def test_module_names_every_contract_metric():
    assert set(M.ALL_METRICS) == set(CONTRACT)


class Up:
    def p_up_one(self, x):
        return 0.9


def _run(n):
    impact = ImpactModel(sigma_daily=0.02, adv_shares=5e7)
    eng = Engine(EngineConfig.for_capital(10_000.0), Up(), SimBroker(impact, seed=3), impact)
    m = M.TraderMetrics("s1", "challenger", "AAPL")
    m.set_capital(10_000.0)
    t0 = datetime(2026, 7, 29, 13, 30, tzinfo=timezone.utc)
    for i in range(n):
        px = 100.0 + 0.1 * i
        step = eng.on_bar(Bar(t0 + timedelta(minutes=i), px, px + 0.1, px - 0.1, px + 0.05, 1e6))
        m.observe(step, eng.stats())
    return eng, m


def test_undefined_ratios_are_absent_before_evidence():
    _, m = _run(3)
    names = {k[0] for k in samples(m)}
    for absent in ("quantramp_model_precision_ratio", "quantramp_fill_ratio", "quantramp_slippage_realized_bps"):
        assert absent not in names
    assert ("quantramp_bars_total", (("role", "challenger"), ("stage", ""), ("strategy", "s1"))) in samples(m)


def test_exported_values_and_labels_follow_the_engine():
    eng, m = _run(40)
    fams = families(m)
    for name, typ in CONTRACT.items():
        base = name[: -len("_total")] if typ == "counter" else name
        assert fams.get(base) == typ, name
    s = samples(m)
    lb = (("role", "challenger"), ("stage", ""), ("strategy", "s1"))
    st = eng.stats()
    assert s[("quantramp_bars_total", lb)] == 40
    assert s[("quantramp_trades_total", lb)] == st.trades == 1
    assert s[("quantramp_pnl_usd", lb)] == st.pnl_usd
    assert s[("quantramp_simulated_pnl_usd", lb)] == st.simulated_pnl_usd
    assert s[("quantramp_capital_usd", lb)] == 10_000.0
    assert s[("quantramp_model_precision_ratio", lb)] == st.precision_ratio == 1.0
    assert s[("quantramp_slippage_modeled_bps", lb)] == st.slippage_modeled_bps > 0
    assert s[("quantramp_position_notional_usd", lb + (("symbol", "AAPL"),))] == st.position_notional_usd
    for status in ("filled", "partial", "rejected", "denied"):
        key = ("quantramp_orders_total", tuple(sorted(lb + (("status", status),))))
        assert s[key] == st.orders[status]
    assert s[("quantramp_decision_latency_seconds_count", lb)] == 40


def test_hour_pnl_is_the_change_over_the_trailing_60_bars():
    eng, m = _run(100)
    s = samples(m)
    lb = (("role", "challenger"), ("stage", ""), ("strategy", "s1"))
    hour = s[("quantramp_hour_pnl_usd", lb)]
    total = s[("quantramp_pnl_usd", lb)]
    assert hour != total  # older than an hour of bars is excluded once 60 bars have passed
    assert s[("quantramp_max_drawdown_ratio", lb)] >= s[("quantramp_drawdown_ratio", lb)]


def test_stage_label_comes_from_the_pod():
    m = M.TraderMetrics("s1", "champion", "AAPL", stage="canary-2")
    assert ("quantramp_pnl_usd", (("role", "champion"), ("stage", "canary-2"), ("strategy", "s1"))) in samples(m)


def test_fee_ratio_is_fees_over_gross_pnl():
    eng, m = _run(100)
    st = eng.stats()
    s = samples(m)
    lb = (("role", "challenger"), ("stage", ""), ("strategy", "s1"))
    assert s[("quantramp_fees_usd", lb)] == st.fees_usd > 0
    assert s[("quantramp_fee_gross_pnl_ratio", lb)] == st.fees_usd / abs(st.pnl_usd + st.fees_usd)
