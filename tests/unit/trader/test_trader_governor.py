"""Pre-trade governor: fail-closed, notional caps, daily-loss halt, reason codes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quantramp.trader.governor import Reason, RiskLimits, check

LIMITS = RiskLimits(max_order_usd=1_000.0, max_position_usd=500.0, max_daily_loss_usd=20.0)


@pytest.mark.parametrize("price", [float("nan"), float("inf"), 0.0, -5.0])
def test_bad_price_denies_everything(price):
    v = check(target_qty=1, position_qty=0, price=price, day_pnl_usd=0.0, limits=LIMITS)
    assert v.denied and v.order_qty == 0 and v.reasons == (Reason.INVALID_PRICE,)
    # even a risk-reducing order: without a price nothing is sent
    v = check(target_qty=0, position_qty=3, price=price, day_pnl_usd=0.0, limits=LIMITS)
    assert v.denied and v.order_qty == 0


def test_nan_pnl_fails_closed():
    v = check(1, 0, 100.0, float("nan"), LIMITS)
    assert v.denied and v.reasons == (Reason.INVALID_INPUT,)


def test_no_change_is_not_a_denial():
    v = check(2, 2, 100.0, 0.0, LIMITS)
    assert v.order_qty == 0 and not v.denied and v.reasons == ()


def test_order_within_limits_passes_untouched():
    v = check(4, 0, 100.0, 0.0, LIMITS)
    assert v.order_qty == 4 and v.reasons == () and not v.clipped


def test_position_cap_clips_to_whole_shares():
    v = check(10, 0, 120.0, 0.0, LIMITS)  # 500 / 120 = 4.17 -> 4 shares
    assert v.order_qty == 4 and v.reasons == (Reason.MAX_POSITION,) and v.clipped
    v = check(-10, 0, 120.0, 0.0, LIMITS)
    assert v.order_qty == -4


def test_position_above_cap_after_a_rally_is_not_grown_or_force_sold():
    # 5 shares bought at 100, now 150: 750 USD > 500 cap
    v = check(8, 5, 150.0, 0.0, LIMITS)
    assert v.order_qty == 0 and v.denied and Reason.MAX_POSITION in v.reasons
    v = check(4, 5, 150.0, 0.0, LIMITS)  # reducing is fine, even if still above the cap
    assert v.order_qty == -1 and not v.denied


def test_order_cap_clips_a_flip():
    limits = RiskLimits(max_order_usd=300.0, max_position_usd=500.0, max_daily_loss_usd=20.0)
    v = check(-5, 5, 100.0, 0.0, limits)  # wants -10 shares = 1000 USD, cap 300 -> 3 shares
    assert v.order_qty == -3 and v.reasons == (Reason.MAX_ORDER,)


def test_order_smaller_than_one_share_is_denied():
    limits = RiskLimits(max_order_usd=50.0, max_position_usd=500.0, max_daily_loss_usd=20.0)
    v = check(1, 0, 100.0, 0.0, limits)
    assert v.denied and v.order_qty == 0 and v.reasons == (Reason.MAX_ORDER,)


def test_daily_loss_cap_blocks_new_risk():
    v = check(3, 0, 100.0, -20.0, LIMITS)  # exactly at the cap counts as hit
    assert v.denied and v.reasons == (Reason.DAILY_LOSS_LIMIT,)
    v = check(5, 3, 100.0, -25.0, LIMITS)
    assert v.denied and v.order_qty == 0


def test_daily_loss_cap_allows_reducing_and_turns_a_flip_into_a_close():
    v = check(0, 3, 100.0, -25.0, LIMITS)
    assert v.order_qty == -3 and not v.denied and v.reasons == ()
    v = check(-4, 3, 100.0, -25.0, LIMITS)
    assert v.order_qty == -3 and v.reasons == (Reason.DAILY_LOSS_LIMIT,) and v.clipped
    v = check(-1, -4, 100.0, -25.0, LIMITS)
    assert v.order_qty == 3


def test_just_below_the_loss_cap_trades_normally():
    v = check(3, 0, 100.0, -19.99, LIMITS)
    assert v.order_qty == 3 and v.reasons == ()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_limits_must_be_positive(bad):
    with pytest.raises(ValueError):
        RiskLimits(max_order_usd=bad, max_position_usd=1.0, max_daily_loss_usd=1.0)


@settings(max_examples=300, deadline=None)
@given(
    target=st.integers(-50, 50),
    pos=st.integers(-50, 50),
    price=st.floats(1.0, 1000.0),
    pnl=st.floats(-100.0, 100.0),
)
def test_invariants(target, pos, price, pnl):
    v = check(target, pos, price, pnl, LIMITS)
    new = pos + v.order_qty
    assert isinstance(v.order_qty, int)
    assert abs(v.order_qty) * price <= LIMITS.max_order_usd + 1e-9
    # never more exposure than the cap allows, unless it already was that large
    assert abs(new) * price <= max(LIMITS.max_position_usd, abs(pos) * price) + 1e-9
    # moves toward the target, never past it
    if v.order_qty:
        assert math.copysign(1, v.order_qty) == math.copysign(1, target - pos)
        assert abs(v.order_qty) <= abs(target - pos)
    if pnl <= -LIMITS.max_daily_loss_usd:
        assert abs(new) <= abs(pos) and new * pos >= 0
    assert v.denied == (target != pos and v.order_qty == 0)
