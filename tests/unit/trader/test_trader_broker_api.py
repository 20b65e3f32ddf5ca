"""The broker interface on SimBroker: tiered fees, impact, partial fills, chaos rejects, order states."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np
import pytest

from quantramp.trader.broker import (
    CHAOS_REJECT_REASONS,
    Broker,
    Execution,
    FeeSchedule,
    ImpactModel,
    Order,
    OrderBook,
    OrderState,
    SimBroker,
    broker_states,
    chaos_reject_rate_from_env,
    ibkr_commission,
    ibkr_tier_rate,
)

IMP = ImpactModel(sigma_daily=0.02, adv_shares=1_000_000)
T0 = datetime(2026, 7, 29, 14, 0, tzinfo=timezone.utc)


# -- fees ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "month_shares, rate",
    [
        (0, 0.0035),
        (299_999, 0.0035),
        (300_000, 0.0020),  # "300,001 - 3,000,000": the 300,001st share is in the second tier
        (2_999_999, 0.0020),
        (3_000_000, 0.0015),
        (19_999_999, 0.0015),
        (20_000_000, 0.0010),
        (99_999_999, 0.0010),
        (100_000_000, 0.0005),
        (5e9, 0.0005),
    ],
)
def test_ibkr_pro_tier_boundaries(month_shares, rate):
    assert ibkr_tier_rate(month_shares) == rate


def test_tiered_commission_min_max_and_errors():
    # 10,000 shares at 50 USD: 35 USD in the first tier, 20 USD in the second
    assert ibkr_commission(10_000, 50.0) == pytest.approx(35.0)
    assert ibkr_commission(10_000, 50.0, month_shares=300_000) == pytest.approx(20.0)
    assert ibkr_commission(-10_000, 50.0, month_shares=150_000_000) == pytest.approx(5.0)
    # minimum 0.35 per order in every tier, and the 1% cap still wins over the minimum
    assert ibkr_commission(100, 50.0, month_shares=150_000_000) == pytest.approx(0.35)
    assert ibkr_commission(10, 1.0, month_shares=150_000_000) == pytest.approx(0.10)
    # maximum 1% of trade value
    assert ibkr_commission(200_000, 0.10, month_shares=300_000) == pytest.approx(200.0)  # 400 USD capped at 1% of 20,000
    with pytest.raises(ValueError):
        ibkr_tier_rate(-1)


def test_fee_schedule_pass_throughs_apply_to_the_right_side():
    sched = FeeSchedule(clearing_per_share=0.0002, exchange_per_share=0.0, pass_through_of_commission=0.0,
                        sec_fee_rate=27.8e-6, finra_taf_per_share=0.000166, finra_taf_max_usd=8.30)
    buy = sched.fees(1000, 100.0)
    assert buy == pytest.approx(3.5 + 0.2)  # commission + clearing; SEC and TAF are on sales only
    sell = sched.fees(-1000, 100.0)
    assert sell == pytest.approx(3.5 + 0.2 + 27.8e-6 * 100_000 + 0.166)
    big_sell = sched.fees(-100_000, 10.0)
    assert big_sell == pytest.approx(ibkr_commission(100_000, 10.0) + 20.0 + 27.8e-6 * 1e6 + 8.30)  # TAF capped
    assert FeeSchedule.commission_only().fees(1000, 100.0) == ibkr_commission(1000, 100.0)
    assert sched.fees(0, 100.0) == 0.0


def test_simbroker_moves_down_the_tiers_within_a_month_and_resets_next_month():
    br = SimBroker(IMP, seed=0, noise_sigma=0.0, participation=1.0, fees=FeeSchedule.commission_only(tiered_by_month_volume=True))

    def per_share(i, qty, ts):
        br.submit(Order(f"t{i}", "AAPL", qty))
        (ex,) = br.on_bar(1000.0, 1e9, ts=ts)
        return ex.commission_usd / abs(ex.qty)

    assert per_share(0, 200_000, T0) == pytest.approx(0.0035)  # month-to-date 0
    assert per_share(1, -200_000, T0) == pytest.approx(0.0035)  # starts at 200k: still tier 1
    assert per_share(2, 1000, T0.replace(day=30)) == pytest.approx(0.0020)  # July is at 400k shares
    assert per_share(3, 1000, T0.replace(month=8, day=3)) == pytest.approx(0.0035)  # August starts over


# -- impact and fills ------------------------------------------------------------------------------


def test_on_bar_fills_at_the_open_plus_modelled_impact():
    br = SimBroker(IMP, seed=0, noise_sigma=0.0, fees=FeeSchedule.commission_only())
    assert isinstance(br, Broker)
    assert br.submit(Order("a", "AAPL", 10_000)).state == OrderState.SUBMITTED
    (ex,) = br.on_bar(50.0, 1e9, ts=T0)
    assert ex.modeled_slippage_bps == pytest.approx(0.02 * math.sqrt(0.01) * 1e4)  # 20 bps
    assert ex.slippage_bps == pytest.approx(ex.modeled_slippage_bps)
    assert ex.price == pytest.approx(50.0 * 1.002) and ex.ref_price == 50.0 and ex.ts == T0
    assert ex.commission_usd == pytest.approx(35.0)
    u = br.order("a")
    assert u.state == OrderState.FILLED and u.filled_qty == 10_000 and u.avg_price == pytest.approx(ex.price)
    assert br.positions() == {"AAPL": 10_000} and br.open_orders() == []


def test_partial_fill_remainder_cancelled_by_default():
    br = SimBroker(IMP, seed=0, participation=0.1)
    br.submit(Order("a", "AAPL", -50))
    (ex,) = br.on_bar(100.0, 200.0)
    assert ex.qty == -20
    u = br.order("a")
    assert u.state == OrderState.CANCELLED and u.filled_qty == -20 and u.remaining_qty == -30
    assert "participation cap" in u.reason
    br.submit(Order("b", "AAPL", 5))
    assert br.on_bar(100.0, 0.0) == [] and br.order("b").state == OrderState.CANCELLED


def test_partial_fill_remainder_keeps_working_and_shares_the_bar():
    br = SimBroker(IMP, seed=0, participation=0.1, remainder="keep")
    br.submit(Order("a", "AAPL", 30))
    br.submit(Order("b", "AAPL", 10))
    ex1 = br.on_bar(100.0, 250.0)  # 25 shares of capacity, first come first served
    assert [(e.order_id, e.qty) for e in ex1] == [("a", 25)]
    assert br.order("a").state == OrderState.PARTIALLY_FILLED and br.order("b").state == OrderState.SUBMITTED
    ex2 = br.on_bar(101.0, 100.0)  # 10 shares: a's last 5, then 5 of b
    assert [(e.order_id, e.qty) for e in ex2] == [("a", 5), ("b", 5)]
    assert br.order("a").state == OrderState.FILLED
    assert br.order("a").avg_price == pytest.approx((25 * ex1[0].price + 5 * ex2[0].price) / 30)
    assert br.cancel("b").state == OrderState.CANCELLED and br.order("b").filled_qty == 5
    assert br.positions() == {"AAPL": 35}
    assert broker_states([br.order("a"), br.order("b")])["FILLED"] == 1


def test_limit_orders_fill_only_when_marketable_and_never_through_the_limit():
    br = SimBroker(IMP, seed=0, noise_sigma=0.0, remainder="keep")
    br.submit(Order("l", "AAPL", 100, order_type="LMT", limit_price=99.0))
    assert br.on_bar(100.0, 1e6) == []
    (ex,) = br.on_bar(98.995, 1e6)
    assert ex.price <= 99.0
    with pytest.raises(ValueError):
        Order("x", "AAPL", 1, order_type="LMT")


def test_orders_are_validated():
    with pytest.raises(ValueError):
        Order("z", "AAPL", 0)
    with pytest.raises(ValueError):
        Order("z", "AAPL", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Order("", "AAPL", 1)
    with pytest.raises(ValueError):
        SimBroker(IMP, participation=0.0)
    with pytest.raises(ValueError):
        SimBroker(IMP, remainder="maybe")


# -- chaos -----------------------------------------------------------------------------------------


def _reject_count(rate: float, n: int, seed: int) -> tuple[int, set[str]]:
    br = SimBroker(IMP, seed=seed, chaos_reject_rate=rate)
    reasons = set()
    k = 0
    for i in range(n):
        u = br.submit(Order(f"o{i}", "AAPL", 1))
        if u.state == OrderState.REJECTED:
            k += 1
            reasons.add(u.reason)
    return k, reasons


@pytest.mark.parametrize("rate, n", [(0.01, 20_000), (0.2, 5_000)])
def test_chaos_reject_rate_is_statistically_right(rate, n):
    k, reasons = _reject_count(rate, n, seed=7)
    sd = math.sqrt(n * rate * (1 - rate))
    assert abs(k - n * rate) < 4 * sd  # binomial, 4 sigma
    assert reasons <= set(CHAOS_REJECT_REASONS) and len(reasons) == len(CHAOS_REJECT_REASONS)


def test_chaos_is_seeded_and_off_by_default(monkeypatch):
    monkeypatch.delenv("CHAOS_REJECT_RATE", raising=False)
    assert _reject_count(0.05, 2000, seed=3) == _reject_count(0.05, 2000, seed=3)
    assert _reject_count(0.05, 2000, seed=3)[0] != _reject_count(0.05, 2000, seed=4)[0]
    assert SimBroker(IMP).chaos_reject_rate == 0.0
    monkeypatch.setenv("CHAOS_REJECT_RATE", "0.01")
    assert SimBroker(IMP).chaos_reject_rate == 0.01
    assert SimBroker(IMP, chaos_reject_rate=0.0).chaos_reject_rate == 0.0
    monkeypatch.setenv("CHAOS_REJECT_RATE", "1.5")
    with pytest.raises(ValueError):
        SimBroker(IMP)
    assert chaos_reject_rate_from_env({"CHAOS_REJECT_RATE": " "}) == 0.0


def test_chaos_in_execute_rejects_with_a_reason_and_leaves_slippage_draws_alone(monkeypatch):
    monkeypatch.delenv("CHAOS_REJECT_RATE", raising=False)
    calm = SimBroker(IMP, seed=5)
    wild = SimBroker(IMP, seed=5, chaos_reject_rate=0.3)
    calm_fills = [calm.execute(100, 100.0, 1e9) for _ in range(200)]
    wild_fills = [wild.execute(100, 100.0, 1e9) for _ in range(200)]
    rejected = [f for f in wild_fills if f.status == "rejected"]
    assert 30 < len(rejected) < 90 and all(f.reason.startswith("chaos:") and f.filled_qty == 0 for f in rejected)
    filled = [f.slippage_bps for f in wild_fills if f.status == "filled"]
    assert filled == [f.slippage_bps for f in calm_fills[: len(filled)]]
    assert all(f.reason == "" and f.status == "filled" for f in calm_fills)


# -- order book ------------------------------------------------------------------------------------


def test_order_book_state_machine_dedup_and_late_fills():
    book = OrderBook(clock=lambda: T0)
    seen = []
    book.add_listener(lambda u, ex: seen.append((u.state, ex.exec_id if ex else None)))
    book.add(Order("a", "AAPL", 10))
    book.transition("a", OrderState.SUBMITTED)
    ex = Execution("e1", "a", "AAPL", 4, 100.0, 0.35, T0)
    assert book.fill(ex).state == OrderState.PARTIALLY_FILLED
    assert book.fill(ex) is None  # same execId: booked once
    assert book.transition("a", OrderState.CANCELLED, "by client").state == OrderState.CANCELLED
    # terminal: no way out, but a fill that raced the cancel is still booked
    assert book.transition("a", OrderState.SUBMITTED).state == OrderState.CANCELLED
    late = book.fill(Execution("e2", "a", "AAPL", 2, 101.0, 0.0, T0))
    assert late.state == OrderState.CANCELLED and late.filled_qty == 6 and book.positions() == {"AAPL": 6}
    with pytest.raises(ValueError):
        book.fill(Execution("e3", "a", "AAPL", -1, 101.0, 0.0, T0))  # wrong side
    with pytest.raises(ValueError):
        book.add(Order("a", "AAPL", 1))
    assert [s for s, _ in seen] == [
        OrderState.NEW,
        OrderState.SUBMITTED,
        OrderState.PARTIALLY_FILLED,
        OrderState.CANCELLED,
        OrderState.CANCELLED,
    ]
    assert np.isclose(book.get("a").avg_price, (4 * 100 + 2 * 101) / 6)


# -- D14: the all-in IBKR Tiered schedule is the default; hand-computed ---------------------------------
@pytest.mark.parametrize("qty, price, expected", [
    # buy 21 @ 230: commission max(21 x 0.0035, 0.35) = 0.35 (< 1 % of 4,830); NYSE+FINRA pass-through
    # 0.35 x 0.000735 = 0.00025725; clearing 21 x 0.0002 = 0.0042; exchange 21 x 0.003 = 0.063
    (21, 230.0, 0.35 + 0.00025725 + 0.0042 + 0.063),
    # sell 21 @ 230: the same + SEC 27.80e-6 x 4,830 = 0.134274 + TAF 21 x 0.000166 = 0.003486
    (-21, 230.0, 0.35 + 0.00025725 + 0.0042 + 0.063 + 0.134274 + 0.003486),
    # sell 100,000 @ 10: commission 350 (cap 10,000 does not bind); pass-through 0.25725; clearing 20;
    # exchange 300; SEC 27.80e-6 x 1e6 = 27.80; TAF min(16.60, 8.30) = 8.30
    (-100_000, 10.0, 350.0 + 0.25725 + 20.0 + 300.0 + 27.80 + 8.30),
    # buy 1 @ 5: commission capped at 1 % of 5 = 0.05; pass-through 0.00003675; clearing 0.0002; exchange 0.003
    (1, 5.0, 0.05 + 0.00003675 + 0.0002 + 0.003),
])
def test_default_fee_schedule_is_ibkr_tiered_all_in(qty, price, expected):
    assert FeeSchedule().fees(qty, price) == pytest.approx(expected, rel=0, abs=1e-9)


def test_simbroker_and_the_simulated_book_charge_all_in_by_default():
    from quantramp.trader.broker import modeled_fill

    br = SimBroker(IMP, seed=0, noise_sigma=0.0, participation=1.0)
    br.submit(Order("o1", "AAPL", -21))
    ex = br.on_bar(230.0, 1e6, symbol="AAPL")[0]
    assert ex.commission_usd == pytest.approx(FeeSchedule().fees(-21, ex.price), abs=1e-12)
    assert ex.commission_usd > 0.5  # not the 0.35 commission alone
    assert modeled_fill(21, 230.0, IMP).commission_usd > 0.41
