"""The trader's per-observation evidence streams (quantramp.trader.evidence): what each statistic
counts, their export as counters with criterion and scope, and survival through the durable snapshot."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from quantramp.trader import contract as C
from quantramp.trader import metrics as M
from quantramp.trader.backtest import make_engine
from quantramp.trader.engine import EngineConfig
from quantramp.trader.evidence import EvidenceConfig, EvidenceStreams, Sums
from quantramp.trader.marketdata import load_minute_bars


class Flip:
    """Calls up and down in turn every 7 bars: many round trips on real bars."""

    def __init__(self) -> None:
        self.i = 0

    def p_up_one(self, x):
        self.i += 1
        return 0.9 if (self.i // 7) % 2 == 0 else 0.1


@pytest.fixture(scope="module")
def bars():
    return load_minute_bars()


def _engine(bars, band=0.10, k=900):
    cfg = EngineConfig.for_capital(100_000.0, evidence=EvidenceConfig(pnl_band=band, block_bars=30))
    eng = make_engine(Flip(), cfg, bars, seed=4)
    for bar in list(bars)[:k]:
        eng.on_bar(bar)
    return eng


def test_streams_count_fills_orders_and_blocks(bars):
    eng = _engine(bars)
    sums = eng.evidence.sums
    st = eng.stats()
    sent = st.orders["filled"] + st.orders["partial"] + st.orders["rejected"]
    assert sums["fillRatio"].n == sent > 20
    assert sums["slippageRatio"].n == st.trades
    # 900 bars in blocks of 30 -> at most 29 closed blocks after the first bar opens one
    assert 10 <= sums["pnlDeviation"].n <= 29
    # slippage statistic: realised - 1.5 x modelled per fill; its mean is below the mean realised slippage
    s = sums["slippageRatio"]
    assert s.total / s.n < (st.slippage_realized_bps or 0) + 1e-9


def test_fill_statistic_is_fill_fraction_minus_the_floor():
    e = EvidenceStreams()
    cfg = EvidenceConfig(fill_ratio=0.95)
    e.on_fill(cfg, 100, 100, 2.0, 1.0)
    e.on_fill(cfg, -100, -50, 3.0, 1.0)
    e.on_fill(cfg, 100, 0, 0.0, 0.0)
    f = e.sums["fillRatio"]
    assert f.n == 3 and f.total == pytest.approx(0.05 + (0.5 - 0.95) + (0 - 0.95))
    s = e.sums["slippageRatio"]
    assert s.n == 2 and s.total == pytest.approx((2 - 1.5) + (3 - 1.5))
    assert s.lag == pytest.approx(0.5 * 1.5)


def test_no_pnl_stream_without_a_band(bars):
    eng = _engine(bars, band=None, k=200)
    assert "pnlDeviation" not in eng.evidence.sums


def test_streams_survive_the_durable_snapshot(bars):
    eng = _engine(bars, k=400)
    snap = eng.snapshot()
    fresh = make_engine(Flip(), eng.config, bars, seed=4)
    fresh.restore(snap)
    assert fresh.evidence.sums == eng.evidence.sums
    assert fresh.evidence.block_start_bars == eng.evidence.block_start_bars


def test_counters_are_exported_with_criterion_and_scope(bars):
    eng = _engine(bars, k=400)
    m = M.TraderMetrics("s1", "challenger", "AAPL", stage="canary-1", scope="r2-canary-1")
    before = {f.name for f in text_string_to_metric_families(m.render().decode()) for s in f.samples}
    assert not any(n.startswith("quantramp_evidence") for n in before)  # nothing before the first step
    m.observe(eng.on_bar(list(bars)[400]), eng.stats())
    got = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            if s.name.startswith("quantramp_evidence"):
                assert s.labels["scope"] == "r2-canary-1" and s.labels["stage"] == "canary-1"
                got[(s.name, s.labels["criterion"])] = s.value
    assert set(n for n, _ in got) == set(C.EVIDENCE_FAMILIES.values())
    for fld, name in C.EVIDENCE_FAMILIES.items():
        assert got[(name, "fillRatio")] == pytest.approx(getattr(eng.evidence.sums["fillRatio"], fld))


def test_bad_settings_are_refused_with_the_variable_name():
    with pytest.raises(ValueError, match="QR_EVIDENCE_SLIPPAGE_RATIO"):
        EvidenceConfig.from_env({"QR_EVIDENCE_SLIPPAGE_RATIO": "abc"})
    with pytest.raises(ValueError, match="QR_EVIDENCE_FILL_RATIO"):
        EvidenceConfig.from_env({"QR_EVIDENCE_FILL_RATIO": "1.5"})
    with pytest.raises(ValueError, match="QR_EVIDENCE_BLOCK_BARS"):
        EvidenceConfig.from_env({"QR_EVIDENCE_BLOCK_BARS": "2.5"})
    assert EvidenceConfig.from_env({"QR_EVIDENCE_PNL_BAND": "0.1"}).pnl_band == 0.1


def test_non_finite_observations_are_dropped():
    e = EvidenceStreams()
    e.observe("fillRatio", math.nan)
    assert "fillRatio" not in e.sums
    assert Sums.of([1.0, -2.0]).total == -1.0


class Opposite(Flip):
    """The reverse of :class:`Flip`: every call the other way."""

    def p_up_one(self, x):
        return 1.0 - super().p_up_one(x)


def _paired(bars, reference, k=600):
    cfg = EngineConfig.for_capital(100_000.0)
    eng = make_engine(Flip(), cfg, bars, seed=4)
    eng.reference = reference
    for bar in list(bars)[:k]:
        eng.on_bar(bar)
    return eng


def test_paired_precision_against_the_same_model_is_one_tenth_of_its_hits(bars):
    eng = _paired(bars, Flip())
    s = eng.evidence.sums["precisionRatio"]
    # both models call every bar the same way: each observation is 0.1 x 1[right]
    assert s.n == eng.calls > 100
    assert s.total == pytest.approx(0.1 * eng.correct, rel=1e-9)


def test_paired_precision_against_the_opposite_model_is_negative_on_average(bars):
    eng = _paired(bars, Opposite())
    s = eng.evidence.sums["precisionRatio"]
    # opposite calls: exactly one of the two is right on every scored bar
    assert s.n == eng.calls
    assert s.total == pytest.approx(eng.correct - 0.9 * (eng.calls - eng.correct), rel=1e-9)


def test_no_reference_no_precision_stream_and_trading_is_unchanged(bars):
    alone = _engine(bars, band=None, k=600)
    assert "precisionRatio" not in alone.evidence.sums
    paired = _paired(bars, Opposite())
    a, b = alone.stats(), paired.stats()
    assert (a.trades, a.pnl_usd, a.calls) == (b.trades, b.pnl_usd, b.calls)  # the reference never trades
