"""Governor safety fixes from the independent risk review (issue 12): D1, D3, D4, D5, D7.

Each test states the review defect it guards; each fails on the governor before the fix
(commit 232021b).
"""

from __future__ import annotations

import json

import pytest

from quantramp.trader.governor import (
    Governor,
    GovernorState,
    Reason,
    RiskLimits,
    TradingState,
    default_limits,
    limits_from_env,
)

S = 1_000_000_000
T0 = 1_800_000_000 * S


def gov(capital=10_000.0, **kw) -> Governor:
    base = dict(max_order_usd=1_000.0, max_position_usd=5_000.0, max_daily_loss_usd=200.0)
    base.update(kw)
    return Governor(RiskLimits(**base).resolved(capital))


def ask(g, target, pos, price=100.0, last=None, now=T0, symbol="AAPL"):
    return g.check(symbol, target, pos, price, price if last is None else last, now, now)


# -- D5: risk-reducing orders are never blocked by controls meant for risk-adding ones ------------
def test_halt_flatten_passes_the_price_collar():
    """D5: HALTED, long 40, a -6 % bar: the flatten was denied with price_collar."""
    g = gov()
    g.halt()
    v = ask(g, 0, 40, price=94.0, last=100.0)
    assert v.order_qty == -40 and v.closing and not v.denied
    assert Reason.PRICE_COLLAR not in v.reasons


def test_flatten_passes_without_a_last_price():
    """D5: the first bar after a restart has no last price (NaN): the flatten still goes."""
    g = gov()
    v = ask(g, 0, 10, last=float("nan"))
    assert v.order_qty == -10 and v.closing


def test_entry_is_still_collared():
    """The collar keeps acting on orders that add risk (so the fix cannot pass by removing it)."""
    g = gov()
    v = ask(g, 5, 0, price=94.0, last=100.0)
    assert v.denied and v.reasons == (Reason.PRICE_COLLAR,)
    v = ask(g, 45, 40, price=94.0, last=100.0, now=T0 + 5 * S)  # adds to a long
    assert v.denied and Reason.PRICE_COLLAR in v.reasons


def test_flatten_is_not_split_by_the_order_cap_nor_throttled():
    """D5: a flatten of 40 @ $100 with a $1,000 order cap went out 10 shares per bar (past the
    close); after 3 orders in the throttle window it was denied."""
    g = gov(max_orders_per_window=3, throttle_window_s=600.0)
    pos = 0
    for i in range(3):
        pos += ask(g, pos + 10, pos, now=T0 + i * S * 2).order_qty
    assert pos == 30
    assert ask(g, 40, 30, now=T0 + 10 * S).reasons == (Reason.ORDER_THROTTLE,)  # entries are throttled
    v = ask(g, 0, 30, now=T0 + 11 * S)
    assert v.order_qty == -30 and v.closing
    g2 = gov()
    v = ask(g2, 0, 40)
    assert v.order_qty == -40  # not clipped to 10 by the $1,000 order cap
    assert ask(g2, 50, 0, now=T0 + 5 * S).order_qty == 10  # an entry still is


def test_reducing_exit_passes_the_collar():
    g = gov()
    g.reduce_only("test")
    v = ask(g, 10, 30, price=95.0, last=100.0)
    assert v.order_qty == -20 and v.closing


def test_flip_is_not_treated_as_reducing():
    g = gov()
    v = ask(g, -10, 10, price=94.0, last=100.0)
    assert v.denied and Reason.PRICE_COLLAR in v.reasons


# -- D1: the seed profile's daily-loss stop can fire -------------------------------------------
def test_seed_profile_daily_loss_stop_fires_before_the_drawdown_halt():
    lim = limits_from_env({"QR_RISK_PROFILE": "seed"}, 1_000.0)
    assert lim.drawdown_halt_usd > lim.max_daily_loss_usd
    g = Governor(lim)
    g.new_day("2026-07-29")
    g.mark("AAPL", 0, 100.0, 950.0, -50.0)
    assert g.state.halt_reason != Reason.DRAWDOWN_HALT.value
    g.mark("AAPL", 0, 100.0, 900.0, -100.0)
    assert g.trading_state == TradingState.HALTED and g.state.halt_reason == Reason.DAILY_LOSS_LIMIT.value
    g.new_day("2026-07-30")
    # next day: no longer halted; still REDUCING (drawdown $100 >= reduce $30, not below soft)
    assert g.trading_state == TradingState.REDUCING


def test_seed_profile_review_repro_is_not_a_permanent_halt():
    g = Governor(limits_from_env({"QR_RISK_PROFILE": "seed"}, 1_000.0))
    g.new_day("d0")
    g.mark("A", 2, 175.0, 950.0, -50.0)
    g.new_day("d1")
    assert g.mark("A", 0, 175.0, 950.0, 0.0) != TradingState.HALTED


# -- D3: REDUCING survives a new day after a daily-loss halt ----------------------------------
def test_reducing_survives_a_new_day_after_a_daily_loss_halt():
    g = Governor(default_limits(1e4))
    g.new_day("2026-07-29")
    g.mark("A", 0, 100.0, 9_690.0, -310.0)  # dd 310 >= reduce 300, day loss >= 200: HALTED
    assert g.state.halt_reason == Reason.DAILY_LOSS_LIMIT.value
    g.mark("A", 0, 100.0, 9_790.0, -210.0)  # dd 210 in [soft 200, reduce 300)
    g.new_day("2026-07-30")
    assert g.trading_state == TradingState.REDUCING
    v = g.check("A", 30, 0, 100.0, 100.0, T0, T0)
    assert v.order_qty == 0 and v.reasons == (Reason.TRADING_REDUCING,)
    g.mark("A", 0, 100.0, 9_850.0, 60.0)  # dd 150 < soft: ACTIVE
    assert g.trading_state == TradingState.ACTIVE


# -- D4: a daily-loss halt is not cleared by a same-day halt + resume ---------------------------
def test_daily_loss_halt_survives_halt_and_resume_the_same_day():
    g = Governor(default_limits(1e4))
    g.new_day("2026-07-29")
    g.mark("A", -50, 104.2, 9_790.0, -210.0)
    assert g.state.halt_reason == Reason.DAILY_LOSS_LIMIT.value
    g.mark("A", -50, 99.0, 10_050.0, 50.0)
    g.halt()
    g.resume(by="test", reason="D4")
    assert g.trading_state == TradingState.HALTED and g.state.halt_reason == Reason.DAILY_LOSS_LIMIT.value
    g.new_day("2026-07-30")
    assert g.trading_state == TradingState.ACTIVE


# -- D7: an out-of-order (earlier) trading date never re-opens a day -------------------------
def test_an_earlier_trading_date_is_ignored():
    g = Governor(default_limits(1e4))
    g.new_day("2026-07-30")
    g.on_fill("A", 10, 100.0, 0, 10)
    g.mark("A", 10, 100.0, 9_790.0, -210.0)
    assert g.trading_state == TradingState.HALTED
    g.new_day("2026-07-29")  # a late bar from yesterday
    g.new_day("2026-07-30")
    assert g.trading_state == TradingState.HALTED and g.state.turnover_usd == pytest.approx(1_000.0, abs=1e-9)
    assert g.state.day_pnl_usd == pytest.approx(-210.0, abs=1e-9)


# -- resume: explicit, recorded, persisted -------------------------------------------------------
def test_drawdown_halt_is_lifted_only_by_a_recorded_resume():
    g = Governor(default_limits(1e4))
    g.new_day("2026-07-29")
    g.mark("A", 0, 100.0, 9_850.0, -150.0)
    g.new_day("2026-07-30")
    g.mark("A", 0, 100.0, 9_450.0, -150.0)  # dd 550 >= halt 500 (day loss 150 < 200)
    assert g.state.halt_reason == Reason.DRAWDOWN_HALT.value
    g.new_day("2026-07-31")
    assert g.trading_state == TradingState.HALTED
    rec = g.resume(by="oncall@example", reason="reviewed the loss", at="2026-07-31T13:00:00Z")
    assert g.trading_state == TradingState.ACTIVE
    assert rec["by"] == "oncall@example" and rec["halt_reason"] == Reason.DRAWDOWN_HALT.value
    assert rec["peak_equity_usd"] == pytest.approx(10_000.0, abs=1e-9)
    assert g.state.peak_equity_usd == pytest.approx(9_450.0, abs=1e-9)  # the loss is accepted
    st = GovernorState.from_dict(json.loads(json.dumps(g.state.to_dict())))
    assert st.resumes == g.state.resumes and not st.drawdown_halted


def test_latches_round_trip_and_old_states_migrate():
    g = Governor(default_limits(1e4))
    g.new_day("2026-07-29")
    g.mark("A", 0, 100.0, 9_690.0, -310.0)
    st = GovernorState.from_dict(json.loads(json.dumps(g.state.to_dict())))
    g2 = Governor(default_limits(1e4), st)
    g2.mark("A", 0, 100.0, 9_790.0, -210.0)
    g2.new_day("2026-07-30")
    assert g2.trading_state == TradingState.REDUCING
    old = {"trading_date": "2026-07-29", "trading_state": 2, "halt_reason": "drawdown_halt",
           "equity_usd": 9_400.0, "peak_equity_usd": 10_000.0}
    g3 = Governor(default_limits(1e4), GovernorState.from_dict(old))
    g3.new_day("2026-07-30")
    assert g3.trading_state == TradingState.HALTED  # an old saved drawdown halt stays latched
