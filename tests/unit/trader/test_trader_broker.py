"""SimBroker: IBKR Pro commissions, square-root impact, fills at the next open."""

from __future__ import annotations

import math

import numpy as np
import pytest

from quantramp.trader.broker import (
    FeeSchedule,
    ImpactModel,
    SimBroker,
    estimate_impact_model,
    fill_price,
    ibkr_commission,
    modeled_fill,
    sqrt_impact_bps,
)


@pytest.mark.parametrize(
    "qty, price, fee",
    [
        (0, 300.0, 0.0),
        (1, 300.0, 0.35),  # 0.0035 < 0.35 minimum
        (-100, 300.0, 0.35),  # 0.35 exactly
        (1000, 300.0, 3.50),  # per-share rate
        (-1000, 300.0, 3.50),
        (10, 1.0, 0.10),  # 1% of 10 USD caps the 0.35 minimum
        (100_000, 0.25, 250.0),  # 350 USD per-share fee capped at 1% of 25,000 USD
    ],
)
def test_ibkr_commission(qty, price, fee):
    assert ibkr_commission(qty, price) == pytest.approx(fee)


def test_sqrt_impact_formula():
    # k * sigma_daily * sqrt(qty/ADV) * 1e4
    assert sqrt_impact_bps(10_000, 0.02, 1_000_000, k=1.0) == pytest.approx(0.02 * 0.1 * 1e4)
    assert sqrt_impact_bps(-10_000, 0.02, 1_000_000, k=0.5) == pytest.approx(10.0)
    # square root: 4x the size costs 2x the bps
    a = sqrt_impact_bps(100, 0.015, 5e7)
    assert sqrt_impact_bps(400, 0.015, 5e7) == pytest.approx(2 * a)
    assert sqrt_impact_bps(0, 0.015, 5e7) == 0.0
    with pytest.raises(ValueError):
        sqrt_impact_bps(1, 0.01, 0.0)


def test_fill_price_is_adverse():
    assert fill_price(100.0, 5, 10.0) == pytest.approx(100.1)
    assert fill_price(100.0, -5, 10.0) == pytest.approx(99.9)


def test_modeled_fill_is_deterministic_and_complete():
    imp = ImpactModel(sigma_daily=0.02, adv_shares=1_000_000)
    f = modeled_fill(10_000, 50.0, imp, fees=FeeSchedule.commission_only())
    assert f.filled_qty == f.ordered_qty == 10_000 and f.status == "filled"
    assert f.slippage_bps == f.modeled_slippage_bps == pytest.approx(20.0)
    assert f.price == pytest.approx(50.0 * 1.002)
    assert f.commission_usd == pytest.approx(35.0)


def test_simbroker_fills_at_the_open_plus_noisy_slippage():
    imp = ImpactModel(sigma_daily=0.02, adv_shares=1_000_000)
    a = SimBroker(imp, seed=42)
    b = SimBroker(imp, seed=42)
    fa = [a.execute(1000, 100.0, 1e9) for _ in range(5)]
    fb = [b.execute(1000, 100.0, 1e9) for _ in range(5)]
    assert fa == fb  # seeded
    modeled = sqrt_impact_bps(1000, 0.02, 1_000_000)
    for f in fa:
        assert f.ref_price == 100.0 and f.status == "filled"
        assert f.modeled_slippage_bps == pytest.approx(modeled)
        assert f.slippage_bps > 0 and f.price > 100.0  # buys pay up
        assert f.price == pytest.approx(100.0 * (1 + f.slippage_bps * 1e-4))
    assert len({f.slippage_bps for f in fa}) == 5  # realised != modelled, fill by fill
    sell = a.execute(-1000, 100.0, 1e9)
    assert sell.price < 100.0


def test_realised_slippage_is_unbiased_on_average():
    imp = ImpactModel(sigma_daily=0.02, adv_shares=1_000_000)
    br = SimBroker(imp, seed=1, noise_sigma=0.5)
    real = np.array([br.execute(500, 100.0, 1e9).slippage_bps for _ in range(4000)])
    modeled = imp.bps(500)
    assert real.mean() == pytest.approx(modeled, rel=0.05)
    assert real.std() > 0.2 * modeled


def test_participation_cap_partial_and_rejected():
    imp = ImpactModel(sigma_daily=0.02, adv_shares=1_000_000)
    br = SimBroker(imp, seed=0, participation=0.1, fees=FeeSchedule.commission_only())
    f = br.execute(-50, 100.0, 200.0)  # at most 20 shares of a 200-share bar
    assert f.filled_qty == -20 and f.ordered_qty == -50 and f.status == "partial"
    assert f.commission_usd == pytest.approx(0.35)
    f = br.execute(5, 100.0, 0.0)
    assert f.filled_qty == 0 and f.status == "rejected" and f.commission_usd == 0.0
    with pytest.raises(ValueError):
        br.execute(0, 100.0, 1e6)


def test_estimate_impact_model_ignores_overnight_gaps():
    ts = np.array(["2026-07-29T19:58", "2026-07-29T19:59", "2026-07-30T13:30", "2026-07-30T13:31"], dtype="datetime64[ns]")
    close = np.array([100.0, 101.0, 120.0, 121.0])
    vol = np.array([10.0, 20.0, 30.0, 40.0])
    m = estimate_impact_model(close, vol, bars_per_session=390, ts=ts)
    r = np.log([101 / 100, 121 / 120])
    assert m.sigma_daily == pytest.approx(np.std(r, ddof=1) * math.sqrt(390))
    assert m.adv_shares == pytest.approx(25.0 * 390)
