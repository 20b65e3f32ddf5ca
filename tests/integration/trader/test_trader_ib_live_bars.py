"""A trader pod on live Interactive Brokers bars (QR_BARS_SOURCE=ib) and IB orders (QR_BROKER=ib):
real ib_async against hack/fake_tws.py serving the real AAPL minute bars as TWS does
(reqHistoricalData with keepUpToDate), the pod's runtime on its own clock (the bars' time).

The pod warms up on the history without trading, then trades each bar when the next one starts;
a bar that comes too late after its close warms up but is never traded; a lost data connection
comes back and the bars missed meanwhile are delivered in order."""

from __future__ import annotations

import asyncio
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from quantramp.trader.backtest import make_engine, stable_seed
from quantramp.trader.ib import IBBroker
from quantramp.trader.livefeed import IBFeed
from quantramp.trader.liveorders import IBOrders
from quantramp.trader.metrics import TraderMetrics
from quantramp.trader.server import Runtime, TraderSettings, _State
from support.trader_pod import POD_ENV, Momentum
from test_trader_killswitch_redis import wait_for  # (pred, timeout, step) -> whether it came true

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "hack"))
from fake_tws import FakeTWS  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HISTORY = 60  # bars published before the pod starts


class Market:
    """The fake TWS's market: publishes the sample's bars one at a time; its clock is the last
    published bar's start plus ``lag_s`` (the pod's wall clock)."""

    def __init__(self, fake: FakeTWS, bars) -> None:
        self.fake, self.bars, self.n, self.lag_s = fake, bars, 0, 1.0

    def bar_time(self, i: int) -> datetime:
        return self.bars.bar(i).ts

    def publish(self) -> None:
        b = self.bars.bar(self.n)
        self.fake.publish_bar("AAPL", int(b.ts.timestamp()), b.open, b.high, b.low, b.close, b.volume)
        self.n += 1

    def now(self) -> datetime:
        return self.bar_time(self.n - 1) + timedelta(seconds=self.lag_s)


def _pod(bars, port: int, market: Market):
    env = {**POD_ENV, "QR_BARS_SOURCE": "ib", "QR_BROKER": "ib", "IB_PORT": str(port), "IB_CLIENT_ID": "41",
           "IB_ACCOUNT": "DU1234567",
           "QR_BAR_INTERVAL_SECONDS": "60", "QR_IB_SETTLE_SECONDS": "2"}
    s = TraderSettings.from_env(env)
    assert s.follow and s.bars.kind == "ib"
    engine = make_engine(Momentum(), s.engine_config(), None, seed=stable_seed(s.namespace, s.strategy, s.role))
    orders = IBOrders(IBBroker(s.ib), paper=True, fee_schedule=s.fee_schedule())
    engine.broker = orders
    feed = IBFeed(s.ib, ("AAPL",), 60)
    metrics = TraderMetrics(s.strategy, s.role, s.symbol, stage=s.stage)
    rt = Runtime(s, engine, {}, metrics, _State(metrics), None, ib_orders=orders, feed=feed, wall_clock=market.now)
    return rt, engine, orders, feed


async def _until(pred, timeout=10.0):
    assert await wait_for(pred, timeout, step=0.005), "condition not met in time"


async def _market_with_history(bars) -> tuple[FakeTWS, int, Market]:
    """A started fake TWS with the first HISTORY bars published."""
    fake = FakeTWS()
    port = await fake.start()
    market = Market(fake, bars)
    for _ in range(HISTORY):
        market.publish()
    return fake, port, market


def test_live_ib_bars_warm_up_then_trade_each_bar_as_it_completes(aapl_bars):
    async def scenario():
        fake, port, market = await _market_with_history(aapl_bars)
        rt, engine, orders, feed = _pod(aapl_bars, port, market)
        stop = asyncio.Event()
        task = asyncio.create_task(rt.run(stop))
        # warmed up on the complete bars of the history (the last one is still forming), nothing traded
        await _until(lambda: rt.last_ts == market.bar_time(HISTORY - 2))
        assert engine.bars == 0 and engine.features.ready and not fake.orders
        assert rt.processed == 0
        n_live = 240
        for k in range(n_live):
            market.publish()  # bar HISTORY + k starts: bar HISTORY + k - 1 is complete
            await _until(lambda: rt.processed == k + 1)
            assert rt.last_ts == market.bar_time(HISTORY + k - 1)
        await rt._service_ib()
        assert engine.bars == n_live
        placed = sorted(o.order_ref for o in fake.orders.values())
        assert placed, "the model trades on these bars"
        # every order was decided on a live bar, none on the history
        first_live = market.bar_time(HISTORY - 1).strftime("%Y%m%dT%H%M%SZ")
        assert all(ref.split("-")[1] >= first_live for ref in placed), placed[:3]
        # IB's book is ours
        assert engine.live.position == int(fake.positions.get("AAPL", [0])[0])
        assert engine.live.fees == pytest.approx(sum(ex.commission for ex in fake.executions), abs=1e-9)
        # a bar that comes long after its close warms up and is not traded
        market.lag_s = 600.0
        market.publish()
        before = rt.processed
        market.lag_s = 600.0
        market.publish()
        await _until(lambda: rt.last_ts == market.bar_time(market.n - 2))
        assert rt.processed == before, "a stale bar was traded"
        stop.set()
        await task
        await feed.close()
        await orders.ib.stop()
        await fake.stop()

    asyncio.run(scenario())


def test_the_feed_comes_back_after_a_lost_connection_with_the_missed_bars(aapl_bars):
    async def scenario():
        fake, port, market = await _market_with_history(aapl_bars)
        s = TraderSettings.from_env({**POD_ENV, "QR_BARS_SOURCE": "ib", "IB_PORT": str(port), "IB_CLIENT_ID": "51"})
        assert s.broker == "sim" and s.follow  # live IB bars with the simulated broker
        from dataclasses import replace

        feed = IBFeed(replace(s.ib, backoff_initial_s=0.05, backoff_max_s=0.2), ("AAPL",), 60)
        history = await feed.start()
        assert len(history["AAPL"]) == HISTORY - 1
        stop = asyncio.Event()
        market.publish()
        got = await asyncio.wait_for(feed.next(stop), 5)
        assert [b.ts for b in got] == [market.bar_time(HISTORY - 1)]
        await fake.drop_clients()  # the connection is lost; three bars complete meanwhile
        for _ in range(3):
            market.publish()
        got = []
        while len(got) < 3:
            got += await asyncio.wait_for(feed.next(stop), 10)
        assert [b.ts for b in got] == [market.bar_time(HISTORY + i) for i in range(3)]
        assert feed.last_error == ""
        market.publish()  # and live again
        got = await asyncio.wait_for(feed.next(stop), 5)
        assert [b.ts for b in got] == [market.bar_time(HISTORY + 3)]
        await feed.close()
        await fake.stop()

    asyncio.run(scenario())
