"""The engine drives its broker through the order API (submit / on_bar / cancel) and
gets exactly what the legacy bar-level ``SimBroker.execute`` gave: same fills, slippage
draws, fees, P&L and counts on the real AAPL minute bars."""

from __future__ import annotations

import functools
import itertools
import math

import pytest

from quantramp.trader import backtest
from quantramp.trader.broker import FeeSchedule, FillBroker, SimBroker
from quantramp.trader.engine import Engine, EngineConfig
from quantramp.trader.marketdata import load_minute_bars, replay

N_BARS = 800  # a little over two sessions: entries, flips, end-of-day closing orders


class Tilt:
    """Deterministic stub model: P(up) = logistic of a fixed linear function of the features."""

    W = (1.2, 0.6, -0.4, 0.1, 0.5, 0.2)

    def p_up_one(self, x):
        z = sum(w * float(v) for w, v in zip(self.W, x))
        return 1.0 / (1.0 + math.exp(-z))


class LegacyEngine(Engine):
    """The engine as it was: the pending order goes to ``SimBroker.execute(qty, open, volume)``."""

    def _send(self, p, bar):
        return self.broker.execute(p.live_qty, bar.open, bar.volume)


class ViaFillBroker(Engine):
    """The order API over the legacy call (:class:`FillBroker` wrapping ``SimBroker.execute``)."""

    def __post_init__(self):
        sim = self.broker
        self.broker = FillBroker(sim.execute, rng=sim._rng, paper=sim.paper)
        self.broker._chaos_rng = sim._chaos_rng  # snapshotted like SimBroker's
        super().__post_init__()


VARIANTS = {
    "default": {},
    "chaos": {"chaos_reject_rate": 0.25},
    "partial": {"participation": 2e-5},  # 0-40 shares a bar (0 below 50,000): partial fills, no-liquidity rejects
    "passthrough_fees_paper": {"fees": FeeSchedule(clearing_per_share=0.0002, sec_fee_rate=27.8e-6), "paper": True},
}


@pytest.fixture(scope="module")
def bars():
    return load_minute_bars("AAPL")


def _run(monkeypatch, bars, engine_cls, variant, steps=None):
    kw = dict(VARIANTS[variant])
    paper = kw.pop("paper", False)
    monkeypatch.setattr(backtest, "Engine", engine_cls)
    kw.setdefault("chaos_reject_rate", 0.0)  # not from the environment
    monkeypatch.setattr(backtest, "SimBroker", functools.partial(SimBroker, **kw))
    cfg = EngineConfig.for_capital(10_000.0, paper=paper)
    if steps is not None:  # record every step's outcome, bar by bar
        eng = backtest.make_engine(Tilt(), cfg, bars, seed=11)
        steps.extend(eng.on_bar(bar) for bar in itertools.islice(replay(bars, 0.0), N_BARS))
    # the summary (P&L, counts, checkpoints) from the batch replay of the same engine class
    out = backtest.run_backtest(Tilt(), cfg, n_bars=N_BARS, seed=11, bars=bars, checkpoints=(200, 400, 600))
    if steps is not None:
        assert out["trades"] == eng.stats().trades and out["pnl_usd"] == round(eng.stats().pnl_usd, 4)
    monkeypatch.undo()
    return out


def _key(f):
    """A fill without its free-text reason (worded differently by execute() and on_bar()), except chaos rejects."""
    if f is None:
        return None
    return (f.ordered_qty, f.filled_qty, f.ref_price, f.price, f.slippage_bps, f.modeled_slippage_bps,
            f.commission_usd, f.paper, f.status, f.reason if f.reason.startswith("chaos") else "")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_order_api_reproduces_the_legacy_execute_path(monkeypatch, bars, variant):
    legacy_steps, new_steps, adapted_steps = [], [], []
    legacy = _run(monkeypatch, bars, LegacyEngine, variant, legacy_steps)
    new = _run(monkeypatch, bars, Engine, variant, new_steps)
    adapted = _run(monkeypatch, bars, ViaFillBroker, variant, adapted_steps)
    assert new == legacy  # summary: P&L, fees, trades, orders by status, slippage, drawdowns, checkpoints
    assert adapted == legacy
    assert len(new_steps) == len(legacy_steps) == N_BARS
    for a, b, c in zip(legacy_steps, new_steps, adapted_steps):
        assert (a.order_qty, a.closing, _key(a.fill), a.sim_fill) == (b.order_qty, b.closing, _key(b.fill), b.sim_fill)
        assert _key(c.fill) == _key(a.fill)
    # the run exercises what the variant is about
    assert legacy["trades"] > 10 and any(s.closing for s in legacy_steps)
    if variant == "chaos":
        assert any(s.fill and s.fill.reason.startswith("chaos") for s in new_steps)
    if variant == "partial":
        assert legacy["orders"]["partial"] > 0 and legacy["orders"]["rejected"] > 0


def test_engine_orders_carry_the_closing_flag_and_leave_nothing_working(bars):
    eng = backtest.make_engine(Tilt(), EngineConfig.for_capital(10_000.0), bars, seed=3)
    eng.broker = SimBroker(eng.impact, seed=3, chaos_reject_rate=0.0, participation=2e-4, remainder="keep")
    closing = []
    for bar in itertools.islice(replay(bars, 0.0), N_BARS):
        step = eng.on_bar(bar)
        if step.order_qty:
            closing.append(step.closing)
        assert eng.broker.open_orders() == []  # one-bar immediate-or-cancel, even with remainder="keep"
    orders = eng.broker.book.all()
    assert len(orders) == len(closing) - (1 if eng.working_qty else 0)
    assert [u.order.closing for u in orders] == closing[: len(orders)] and any(closing) and not all(closing)
    assert eng.broker.positions().get("AAPL", 0) == eng.live.position


def test_snapshot_restore_is_exact_with_chaos_rejects_and_a_closing_order(bars):
    def make():
        eng = backtest.make_engine(Tilt(), EngineConfig.for_capital(10_000.0), bars, seed=5)
        eng.broker = SimBroker(eng.impact, seed=5, chaos_reject_rate=0.3)
        return eng

    a, b = make(), make()
    stream = list(itertools.islice(replay(bars, 0.0), 700))
    k = 0
    while not (k > 30 and a.snapshot()["pending"] and a.snapshot()["pending"]["closing"]):
        a.on_bar(stream[k])  # until an end-of-day closing order is waiting for the next open
        k += 1
    snap = a.snapshot()
    assert snap["pending"] is not None and snap["pending"]["closing"] is True
    b.restore(snap)
    assert b.snapshot() == snap
    for bar in stream[k:]:
        sa, sb = a.on_bar(bar), b.on_bar(bar)
        assert (sa.order_qty, sa.fill) == (sb.order_qty, sb.fill)
    assert a.snapshot() == b.snapshot() and a.stats() == b.stats() and a.orders["rejected"] > 0


def test_snapshot_carries_the_month_to_date_shares_of_tiered_fees(bars):
    def make():
        eng = backtest.make_engine(Tilt(), EngineConfig.for_capital(10_000.0), bars, seed=5)
        eng.broker = SimBroker(eng.impact, seed=5, chaos_reject_rate=0.0, fees=FeeSchedule(tiered_by_month_volume=True))
        return eng

    a, b = make(), make()
    stream = list(itertools.islice(replay(bars, 0.0), 900))
    for bar in stream[:600]:
        a.on_bar(bar)
    assert a.broker._month_shares > 0
    b.restore(a.snapshot())
    assert (b.broker._month, b.broker._month_shares) == (a.broker._month, a.broker._month_shares)
    for bar in stream[600:]:
        a.on_bar(bar), b.on_bar(bar)
    assert a.snapshot() == b.snapshot() and a.stats() == b.stats()
