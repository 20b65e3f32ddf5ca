"""Pre-trade governor: every check in its documented order, reason codes, counters, state."""

from __future__ import annotations

import json
import math

import pytest

from quantramp.trader.governor import (
    Governor,
    GovernorState,
    Reason,
    RiskLimits,
    TradingState,
    check,
    default_limits,
    limits_from_env,
    seed_limits,
)

LIMITS = RiskLimits(max_order_usd=1_000.0, max_position_usd=500.0, max_daily_loss_usd=20.0)
S = 1_000_000_000  # ns per second
T0 = 1_800_000_000 * S


def gov(capital=10_000.0, **kw) -> Governor:
    base = dict(max_order_usd=1_000.0, max_position_usd=500.0, max_daily_loss_usd=20.0)
    base.update(kw)
    return Governor(RiskLimits(**base).resolved(capital))


def ask(g, target, pos, price=100.0, last=None, now=T0, ts=None, symbol="AAPL"):
    return g.check(symbol, target, pos, price, price if last is None else last, now, now if ts is None else ts)


# -- the one-shot API (kept) --------------------------------------------------------
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
    assert v.order_qty == 4 and v.reasons == () and not v.clipped and not v.closing


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
    assert v.order_qty == -1 and not v.denied and v.closing


def test_order_cap_clips_a_flip():
    limits = RiskLimits(max_order_usd=300.0, max_position_usd=500.0, max_daily_loss_usd=20.0)
    v = check(-5, 5, 100.0, 0.0, limits)  # wants -10 shares = 1000 USD, cap 300 -> 3 shares
    assert v.order_qty == -3 and v.reasons == (Reason.MAX_ORDER,)


def test_order_smaller_than_one_share_is_denied():
    limits = RiskLimits(max_order_usd=50.0, max_position_usd=500.0, max_daily_loss_usd=20.0)
    v = check(1, 0, 100.0, 0.0, limits)
    assert v.denied and v.order_qty == 0 and v.reasons == (Reason.MAX_ORDER,)


def test_daily_loss_hard_stop_halts_new_risk_with_its_cause():
    v = check(3, 0, 100.0, -20.0, LIMITS)  # exactly at the cap counts as hit
    assert v.denied and v.reasons == (Reason.TRADING_HALTED, Reason.DAILY_LOSS_LIMIT)
    assert v.state == TradingState.HALTED
    assert check(5, 3, 100.0, -25.0, LIMITS).denied


def test_halted_lets_only_a_flatten_through():
    v = check(0, 3, 100.0, -25.0, LIMITS)
    assert v.order_qty == -3 and not v.denied and v.reasons == () and v.closing
    assert check(-4, 3, 100.0, -25.0, LIMITS).denied  # a flip is not a flatten
    assert check(1, 3, 100.0, -25.0, LIMITS).denied  # a partial reduce is not a flatten either
    v = check(0, -4, 100.0, -25.0, LIMITS)
    assert v.order_qty == 4 and v.closing


def test_just_below_the_loss_cap_trades_normally():
    v = check(3, 0, 100.0, -19.99, LIMITS)
    assert v.order_qty == 3 and v.reasons == ()


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_limits_must_be_positive(bad):
    with pytest.raises(ValueError):
        RiskLimits(max_order_usd=bad, max_position_usd=1.0, max_daily_loss_usd=1.0)
    with pytest.raises(ValueError):
        RiskLimits(max_order_usd=1.0, max_position_usd=1.0, max_daily_loss_usd=1.0, max_daily_turnover_usd=bad)


def test_drawdown_levels_must_be_ordered():
    with pytest.raises(ValueError):
        RiskLimits(1.0, 1.0, 1.0, drawdown_soft_usd=30.0, drawdown_reduce_usd=20.0)
    with pytest.raises(ValueError):
        RiskLimits(1.0, 1.0, 1.0, drawdown_size_factor=1.5)


def test_governor_needs_complete_limits():
    with pytest.raises(ValueError):
        Governor(LIMITS)


# -- stale price ------------------------------------------------------------------------
def test_stale_or_future_price_is_denied():
    g = gov()
    v = ask(g, 3, 0, now=T0, ts=T0 - 91 * S)  # max age 90 s by default
    assert v.denied and v.reasons == (Reason.STALE_PRICE,)
    assert ask(g, 3, 0, now=T0, ts=T0 + 1).reasons == (Reason.STALE_PRICE,)
    assert ask(g, 3, 0, now=T0 + 1, ts=T0 - 89 * S).order_qty == 3
    assert g.denials["stale_price"] == 2


def test_non_integer_quantities_fail_closed():
    g = gov()
    assert ask(g, 2.5, 0).reasons == (Reason.INVALID_INPUT,)
    assert ask(g, float("nan"), 0).reasons == (Reason.INVALID_INPUT,)
    assert ask(g, 2.0, 0).order_qty == 2  # a whole float is accepted as shares


# -- gross, capital fraction, turnover ---------------------------------------------------------
def test_gross_position_across_symbols():
    g = gov(capital=10_000.0, max_position_usd=5_000.0, max_order_usd=5_000.0, max_gross_position_usd=6_000.0)
    g.mark("MSFT", 40, 100.0, 10_000.0, 0.0)  # 4,000 USD elsewhere
    v = ask(g, 30, 0)
    assert v.order_qty == 20 and v.reasons == (Reason.MAX_GROSS_POSITION,)
    g.mark("MSFT", -60, 100.0, 10_000.0, 0.0)  # short counts gross
    v = ask(g, 30, 0, now=T0 + 5 * S)
    assert v.denied and v.reasons == (Reason.MAX_GROSS_POSITION,)


def test_capital_fraction_of_the_stage():
    # a canary pod with 1,000 USD of capital never holds more than that, whatever the other limits say
    g = gov(capital=1_000.0, max_position_usd=5_000.0, max_order_usd=5_000.0, max_gross_position_usd=5_000.0)
    v = ask(g, 30, 0)
    assert v.order_qty == 10 and v.reasons == (Reason.CAPITAL_FRACTION,)


def test_daily_turnover_caps_new_risk_but_never_a_close():
    g = gov(capital=10_000.0, max_position_usd=5_000.0, max_order_usd=5_000.0, max_daily_turnover_usd=1_000.0)
    g.on_fill("AAPL", 8, 100.0, 0, 8)  # 800 traded today
    v = ask(g, 30, 8)
    assert v.order_qty == 2 and v.reasons == (Reason.MAX_DAILY_TURNOVER,)
    g.on_fill("AAPL", 2, 100.0, 8, 2)
    assert ask(g, 30, 10, now=T0 + 5 * S).reasons == (Reason.MAX_DAILY_TURNOVER,)
    v = ask(g, 0, 10, now=T0 + 10 * S)  # closing is exempt
    assert v.order_qty == -10 and v.closing
    g.new_day("2026-07-30")
    assert g.state.turnover_usd == 0.0


# -- trading state machine -----------------------------------------------------------------
def test_graded_drawdown_soft_halves_then_reducing_then_halted():
    g = gov(capital=10_000.0, max_position_usd=5_000.0, max_order_usd=5_000.0, max_daily_loss_usd=10_000.0)
    lim = g.limits
    assert (lim.drawdown_soft_usd, lim.drawdown_reduce_usd, lim.drawdown_halt_usd) == (200.0, 300.0, 500.0)
    g.mark("AAPL", 0, 100.0, 10_000.0, 0.0)
    g.mark("AAPL", 0, 100.0, 9_800.0, 0.0)  # -200: soft
    assert g.trading_state == TradingState.ACTIVE and g.size_factor == 0.5
    v = ask(g, 40, 0)
    assert v.order_qty == 20 and v.reasons == (Reason.DRAWDOWN_SOFT,)
    v = ask(g, 40, 30, now=T0 + 5 * S)  # an existing larger position is not forced down, not grown
    assert v.denied and v.reasons == (Reason.DRAWDOWN_SOFT,)
    g.mark("AAPL", 30, 100.0, 9_700.0, 0.0)  # -300: REDUCING
    assert g.trading_state == TradingState.REDUCING and g.state.halt_reason == "drawdown_reduce"
    v = ask(g, -30, 30, now=T0 + 10 * S)  # a flip becomes a close
    assert v.order_qty == -30 and v.reasons == (Reason.TRADING_REDUCING,) and v.closing
    v = ask(g, 10, 30, now=T0 + 15 * S)
    assert v.order_qty == -20 and v.reasons == () and v.closing
    assert ask(g, 40, 30, now=T0 + 20 * S).denied
    g.mark("AAPL", 30, 100.0, 9_750.0, 0.0)  # back under reduce but above soft: still REDUCING
    assert g.trading_state == TradingState.REDUCING
    g.mark("AAPL", 30, 100.0, 9_900.0, 0.0)  # under soft: ACTIVE again
    assert g.trading_state == TradingState.ACTIVE
    g.mark("AAPL", 30, 100.0, 9_500.0, 0.0)  # -500: HALTED, sticky
    assert g.trading_state == TradingState.HALTED
    v = ask(g, 10, 30, now=T0 + 25 * S)
    assert v.denied and v.reasons == (Reason.TRADING_HALTED, Reason.DRAWDOWN_HALT)
    g.mark("AAPL", 30, 100.0, 10_000.0, 0.0)
    assert g.trading_state == TradingState.HALTED  # recovery does not lift a drawdown halt
    g.new_day("2099-01-01")
    assert g.trading_state == TradingState.HALTED  # nor does a new day
    g.resume()
    assert g.trading_state == TradingState.ACTIVE


def test_daily_loss_halt_lasts_the_day():
    g = gov(capital=10_000.0)
    g.new_day("2026-07-29")
    g.mark("AAPL", 0, 100.0, 9_990.0, -20.0)
    assert g.trading_state == TradingState.HALTED and g.state.halt_reason == "daily_loss_limit"
    g.mark("AAPL", 0, 100.0, 10_000.0, 5.0)  # a recovery the same day does not lift it
    assert g.trading_state == TradingState.HALTED
    g.new_day("2026-07-30")
    assert g.trading_state == TradingState.ACTIVE and g.state.day_pnl_usd == 0.0


def test_manual_halt_and_reduce_only():
    g = gov()
    g.halt()
    assert ask(g, 1, 0).reasons == (Reason.TRADING_HALTED, Reason.MANUAL_HALT)
    g.resume()
    g.reduce_only()
    assert g.trading_state == TradingState.REDUCING
    assert ask(g, 1, 0).reasons == (Reason.TRADING_REDUCING,)


# -- collar, throttle, duplicates -----------------------------------------------------------
def test_price_collar_against_the_last_trade():
    g = gov()
    v = ask(g, 3, 0, price=103.0, last=100.0)  # 3% > 2%
    assert v.denied and v.reasons == (Reason.PRICE_COLLAR,)
    assert ask(g, 3, 0, price=101.9, last=100.0).order_qty == 3
    assert ask(g, 3, 0, last=float("nan"), now=T0 + 5 * S).reasons == (Reason.PRICE_COLLAR,)


def test_order_rate_throttle_over_a_rolling_window():
    g = gov(max_orders_per_window=3, throttle_window_s=10.0)
    pos = 0
    for i in range(3):
        v = ask(g, pos + 1, pos, now=T0 + i * S)
        assert v.order_qty == 1
        pos += 1
    v = ask(g, pos + 1, pos, now=T0 + 9 * S)
    assert v.denied and v.reasons == (Reason.ORDER_THROTTLE,)
    assert ask(g, pos + 1, pos, now=T0 + 10 * S).order_qty == 1  # the first left the window
    assert g.denials["order_throttle"] == 1


def test_duplicate_order_is_denied_within_its_window():
    g = gov()
    assert ask(g, 2, 0).order_qty == 2
    v = ask(g, 2, 0, now=T0 + S // 2)  # the same decision retried (position not yet updated)
    assert v.denied and v.reasons == (Reason.DUPLICATE_ORDER,)
    assert ask(g, 2, 0, now=T0 + S).order_qty == 2
    assert ask(g, 2, 0, now=T0 + S + 1, symbol="MSFT").order_qty == 2  # another symbol is no duplicate


def test_denials_are_counted_once_per_reason():
    g = gov()
    ask(g, 10, 0)  # 500/100 = 5 shares: clipped
    ask(g, 1, 0, price=float("nan"))
    d = {k: v for k, v in g.denials.items() if v}
    assert d == {"max_position": 1, "invalid_price": 1}
    assert set(g.denials) == {r.value for r in Reason}


# -- post-trade audit --------------------------------------------------------------------
def test_fill_audit_counts_hard_limit_breaches():
    g = gov()
    assert not g.on_fill("AAPL", 3, 100.0, 0, 3)
    assert g.on_fill("AAPL", 5, 100.0, 3, 3)  # overfill
    assert g.on_fill("AAPL", 10, 100.0, 0, 10)  # 1,000 USD > 500 position cap
    g.halt()
    assert g.on_fill("AAPL", 1, 100.0, 0, 1)  # new risk while halted
    assert not g.on_fill("AAPL", -1, 100.0, 3, -1)  # closing while halted is fine
    assert g.hard_limit_breaches == 3
    assert g.state.turnover_usd == pytest.approx(100 * (3 + 5 + 10 + 1 + 1))


# -- state -----------------------------------------------------------------------------------
def test_state_round_trips_through_json_and_resumes_the_throttle():
    g = gov(max_orders_per_window=2, throttle_window_s=60.0)
    g.new_day("2026-07-29")
    g.mark("AAPL", 0, 100.0, 9_950.0, -7.5)
    ask(g, 1, 0, now=T0)
    ask(g, 2, 1, now=T0 + S)
    g.on_fill("AAPL", 1, 100.0, 0, 1)
    d = json.loads(json.dumps(g.state.to_dict()))
    st = GovernorState.from_dict(d)
    assert st.to_dict() == d
    g2 = Governor(g.limits, st)
    assert ask(g2, 3, 2, now=T0 + 2 * S).reasons == (Reason.ORDER_THROTTLE,)
    assert g2.state.peak_equity_usd == 10_000.0 and g2.state.equity_usd == 9_950.0
    assert g2.state.turnover_usd == 100.0 and g2.state.trading_date == "2026-07-29"
    # a restored halt stays
    g2.halt()
    assert Governor(g.limits, GovernorState.from_dict(g2.state.to_dict())).trading_state == TradingState.HALTED


def test_state_from_dict_rejects_a_bad_trading_state():
    with pytest.raises(ValueError):
        GovernorState.from_dict({"trading_state": 7})


# -- limits from the environment -------------------------------------------------------------------
def test_defaults_scale_with_capital():
    for capital in (1_000.0, 100_000.0):
        lim = default_limits(capital)
        assert lim.max_position_usd == 0.5 * capital and lim.max_order_usd == capital
        assert lim.max_daily_loss_usd == pytest.approx(0.02 * capital)
        assert lim.max_daily_turnover_usd == 50 * capital and lim.drawdown_soft_usd == pytest.approx(0.02 * capital)
        assert lim.capital_usd == capital and lim.complete


def test_seed_profile_is_the_runbook_at_1000_and_scales():
    lim = seed_limits()
    assert (lim.max_daily_loss_usd, lim.max_position_usd, lim.max_daily_turnover_usd, lim.max_order_usd) == (
        100.0, 500.0, 2_000.0, 50.0,
    )
    assert lim.drawdown_soft_usd == 20.0 and lim.drawdown_size_factor == 0.5
    assert seed_limits(5_000.0).max_order_usd == 250.0


def test_limits_from_env():
    env = {
        "QR_MAX_POSITION_USD": "400",
        "QR_MAX_ORDER_USD": "100",
        "QR_MAX_DAILY_LOSS_USD": "10",
        "QR_MAX_DAILY_TURNOVER_USD": "5000",
        "QR_DRAWDOWN_SOFT_USD": "15",
        "QR_MAX_ORDERS_PER_WINDOW": "4",
        "QR_PRICE_COLLAR_RATIO": "0.01",
    }
    lim = limits_from_env(env, 1_000.0)
    assert (lim.max_position_usd, lim.max_order_usd, lim.max_daily_loss_usd) == (400.0, 100.0, 10.0)
    assert lim.max_daily_turnover_usd == 5_000.0 and lim.max_orders_per_window == 4
    assert lim.drawdown_soft_usd == 15.0 and lim.drawdown_reduce_usd == 30.0 and lim.drawdown_halt_usd == 50.0
    assert lim.price_collar_ratio == 0.01
    seed = limits_from_env({"QR_RISK_PROFILE": "seed"}, 1_000.0)
    assert seed.max_order_usd == 50.0
    assert limits_from_env({}, 2_000.0) == default_limits(2_000.0)
    with pytest.raises(ValueError, match="QR_MAX_DAILY_TURNOVER_USD"):
        limits_from_env({"QR_MAX_DAILY_TURNOVER_USD": "-1", "QR_MAX_ORDER_USD": "x"}, 1_000.0)
    with pytest.raises(ValueError):
        limits_from_env({"QR_RISK_PROFILE": "yolo"}, 1_000.0)
    # a tiny explicit halt level pulls the derived soft and reduce levels below it
    lim = limits_from_env({"QR_DRAWDOWN_HALT_USD": "5"}, 1_000.0)
    assert lim.drawdown_soft_usd <= lim.drawdown_reduce_usd <= lim.drawdown_halt_usd == 5.0


def test_verdict_reasons_are_stable_strings():
    assert Reason.MAX_DAILY_TURNOVER.value == "max_daily_turnover"
    assert all(r.value == r.value.lower() and " " not in r.value for r in Reason)
    assert not math.isnan(GovernorState().day_pnl_usd)


def test_governor_metrics_are_exported():
    from prometheus_client.parser import text_string_to_metric_families

    from quantramp.trader import metrics as M
    from quantramp.trader.broker import ImpactModel, SimBroker
    from quantramp.trader.engine import Engine, EngineConfig

    class Long:
        def p_up_one(self, x):
            return 0.9

    impact = ImpactModel(sigma_daily=0.0, adv_shares=1e9)
    eng = Engine(EngineConfig.for_capital(1_000.0), Long(), SimBroker(impact, seed=0), impact)
    tm = M.TraderMetrics("s", "challenger", "AAPL", stage="canary-1")
    from datetime import datetime, timedelta, timezone

    from quantramp.trader.marketdata import Bar

    t0 = datetime(2026, 7, 29, 14, 0, tzinfo=timezone.utc)
    for i in range(40):
        step = eng.on_bar(Bar(t0 + timedelta(minutes=i), 100.0, 100.1, 99.9, 100.0, 1e6))
        tm.observe(step, eng.stats())
    eng.governor.halt()
    step = eng.on_bar(Bar(t0 + timedelta(minutes=40), 100.0, 100.1, 99.9, 100.0, 1e6))
    tm.observe(step, eng.stats())
    fams = {f.name: f for f in text_string_to_metric_families(tm.render().decode())}
    den = {s.labels["reason"]: s.value for s in fams["quantramp_governor_denials"].samples if s.name.endswith("_total")}
    assert set(den) == {r.value for r in Reason}
    assert den["trading_halted"] >= 0 and sum(den.values()) == sum(eng.governor.denials.values())
    assert [s.value for s in fams["quantramp_hard_limit_breaches"].samples if s.name.endswith("_total")] == [0.0]
    assert [s.value for s in fams["quantramp_trading_state"].samples] == [2.0]
    assert [s.value for s in fams["quantramp_daily_turnover_usd"].samples] == [eng.governor_state.turnover_usd]
    assert eng.governor_state.turnover_usd > 0
