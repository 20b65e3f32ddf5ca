"""Real ib_async against hack/fake_tws.py on a free loopback port: handshake,
positions, current time, and IBBroker's orders, rejects, partial fills and
its behaviour when the connection drops (orders blocked, reconnect, reconcile)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from ib_async import IB

from quantramp.trader.broker import Order, OrderState
from quantramp.trader.ib import IBBroker, IBConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "hack"))
from fake_tws import FakeTWS  # noqa: E402

pytestmark = pytest.mark.timeout(60)

FIXED_NOW = 1_795_000_000  # 2026-11-18T08:26:40Z, the fake's clock


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 45))


async def _until(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def _config(port: int, **kw) -> IBConfig:
    kw.setdefault("client_id", 11)
    return IBConfig(port=port, connect_timeout_s=2.0, backoff_initial_s=0.05, backoff_max_s=0.4, reconcile_timeout_s=3.0, **kw)


def test_ib_async_connects_and_reads_positions_and_time():
    async def main():
        fake = FakeTWS(positions={"AAPL": (120, 195.5), "MSFT": (-30, 410.0)}, clock=lambda: FIXED_NOW)
        port = await fake.start()
        ib = IB()
        try:
            await ib.connectAsync("127.0.0.1", port, clientId=3, timeout=3)
            assert ib.isConnected()
            assert ib.client.serverVersion() == 176
            assert ib.managedAccounts() == ["DU1234567"]
            pos = {p.contract.symbol: (p.position, p.avgCost, p.account) for p in await ib.reqPositionsAsync()}
            assert pos == {"AAPL": (120.0, 195.5, "DU1234567"), "MSFT": (-30.0, 410.0, "DU1234567")}
            now = await ib.reqCurrentTimeAsync()
            assert now.timestamp() == FIXED_NOW
            # what ib_async asked for while connecting: startApi, positions, open and completed orders, account updates, executions
            assert fake.received[0] == 71 and {61, 5, 99, 6, 7} <= set(fake.received)
        finally:
            ib.disconnect()
            await fake.stop()

    run(main())


def test_ibbroker_places_and_fills_an_order_and_books_fees():
    async def main():
        fake = FakeTWS(positions={"AAPL": (10, 190.0)}, prices={"AAPL": 201.25})
        port = await fake.start()
        br = IBBroker(_config(port))
        events = []
        br.add_listener(lambda u, ex: events.append((u.state, ex.qty if ex else None)))
        try:
            await br.start(timeout=10)
            assert br.ready and br.positions() == {"AAPL": 10}
            assert br.last_reconcile.position_breaks == {"AAPL": (0, 10)}  # adopted IB's on first connect
            upd = br.submit(Order("q-1", "AAPL", 5))
            assert upd.state == OrderState.NEW and upd.broker_ref is not None
            await _until(lambda: br.order("q-1").state == OrderState.FILLED and br.order("q-1").commission_usd > 0)
            done = br.order("q-1")
            assert done.filled_qty == 5 and done.avg_price == pytest.approx(201.25)
            assert done.commission_usd == pytest.approx(0.35)
            assert br.positions() == {"AAPL": 15}
            assert (OrderState.SUBMITTED, None) in events and (OrderState.FILLED, 5) in events
            # a sell, duplicate ids refused without touching the original
            assert br.submit(Order("q-1", "AAPL", -1)).state == OrderState.REJECTED
            assert br.order("q-1").state == OrderState.FILLED
        finally:
            await br.stop()
            await fake.stop()

    run(main())


def test_ibbroker_reject_and_partial_fill_then_cancel():
    async def main():
        fake = FakeTWS(fill_mode="reject")
        port = await fake.start()
        br = IBBroker(_config(port))
        try:
            await br.start(timeout=10)
            br.submit(Order("r-1", "AAPL", 7))
            await _until(lambda: br.order("r-1").state.terminal)
            r = br.order("r-1")
            assert r.state == OrderState.REJECTED and "201" in r.reason and "rejects every order" in r.reason

            fake.fill_mode = "partial"
            br.submit(Order("p-1", "AAPL", -9))
            await _until(lambda: br.order("p-1").state == OrderState.PARTIALLY_FILLED)
            assert br.order("p-1").filled_qty == -4 and br.positions() == {"AAPL": -4}
            br.cancel("p-1")
            await _until(lambda: br.order("p-1").state.terminal)
            c = br.order("p-1")
            assert c.state == OrderState.CANCELLED and c.filled_qty == -4 and c.remaining_qty == -5
        finally:
            await br.stop()
            await fake.stop()

    run(main())


def test_ibbroker_blocks_orders_on_disconnect_reconnects_and_reconciles():
    async def main():
        fake = FakeTWS(fill_mode="accept", prices={"AAPL": 200.0})
        port = await fake.start()
        br = IBBroker(_config(port))
        try:
            await br.start(timeout=10)
            assert br.submit(Order("w-1", "AAPL", 10)).state == OrderState.NEW
            await _until(lambda: br.order("w-1").state == OrderState.SUBMITTED)

            # TWS goes away: sockets closed, and nobody listens for a while
            await fake.stop_listening()
            await fake.drop_clients()
            await _until(lambda: not br.ready)
            blocked = br.submit(Order("w-2", "AAPL", 1))
            assert blocked.state == OrderState.REJECTED and "not ready" in blocked.reason
            assert fake.orders.get((11, 2)) is None and all(o.order_ref != "w-2" for o in fake.orders.values())
            # while we are away, IB fills part of the working order
            fake.fill_order("w-1", 4)
            await asyncio.sleep(0.3)  # several reconnect attempts fail (connection refused)
            assert br.connect_failures >= 1 and not br.ready

            # TWS is back on the same port: reconnect, reconcile, then trade again
            fake.port = port
            await fake.start()
            await br.wait_ready(timeout=10)
            rep = br.last_reconcile
            assert br.disconnects == 1 and br.connects == 2 and fake.handshakes == 2
            assert rep.executions_booked == 1 and rep.open_at_ib == ["w-1"] and rep.cancelled == ["w-1"]
            w1 = br.order("w-1")
            assert w1.state == OrderState.CANCELLED and w1.filled_qty == 4  # the rest cancelled on reconnect
            assert not any(o.working for o in fake.orders.values())
            assert br.positions() == {"AAPL": 4} and rep.position_breaks == {}
            fake.fill_mode = "fill"
            br.submit(Order("w-3", "AAPL", -4))
            await _until(lambda: br.order("w-3").state == OrderState.FILLED)
            assert br.positions() == {}
        finally:
            await br.stop()
            await fake.stop()

    run(main())


def test_a_restarted_pod_cancels_orders_left_working_by_its_earlier_life():
    async def main():
        fake = FakeTWS(fill_mode="accept")
        port = await fake.start()
        first = IBBroker(_config(port))
        try:
            await first.start(timeout=10)
            first.submit(Order("old-1", "AAPL", 3))
            await _until(lambda: first.order("old-1").state == OrderState.SUBMITTED)
            await first.stop()  # the pod dies; the order keeps working at IB
            assert [o.working for o in fake.orders.values()] == [True]
            second = IBBroker(_config(port))
            await second.start(timeout=10)
            assert second.last_reconcile.cancelled == [f"ib:{next(iter(fake.orders))[1]}"]
            assert not any(o.working for o in fake.orders.values())
            await second.stop()
        finally:
            await fake.stop()

    run(main())
