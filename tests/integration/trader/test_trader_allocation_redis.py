"""The champion's live allocation against a real redis-server (review B11): capital and limits
change in place, with no restart, the equity peak rebased and the day's P&L kept; no allocation,
no trading."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from quantramp.trader import allocation as alloc

pytestmark = pytest.mark.integration
KEY = alloc.key("trading", "aapl-it", "champion")


def _alloc(capital: float) -> alloc.Allocation:
    return alloc.Allocation(capital_usd=capital, max_position_usd=capital * 0.5, max_order_usd=capital * 0.1,
                            max_daily_loss_usd=capital * 0.02)


async def _until(cond, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def test_a_champion_trades_only_with_an_allocation_and_applies_a_new_one_in_place(redis_server, make_pod):
    async def scenario():
        op = Redis.from_url(redis_server.url)
        pod = make_pod(redis_server.url, QR_ROLE="champion", QR_STAGE="production", QR_CAPITAL_USD="100000",
                       QR_ALLOCATION_KEY=KEY, QR_BAR_INTERVAL_SECONDS="0.005")
        stop = asyncio.Event()
        task = asyncio.create_task(pod.rt.run(stop))
        await asyncio.sleep(0.3)
        # no allocation yet: not loaded, not ready, no bar traded
        assert pod.rt.processed == 0 and not pod.http.ready and KEY in pod.http.not_ready_reason
        await op.set(KEY, _alloc(99_000).to_json())
        await _until(lambda: pod.rt.processed >= 100)
        assert pod.engine.config.capital_usd == pytest.approx(99_000)
        assert pod.engine.limits.max_order_usd == pytest.approx(9_900)
        # every capital-scaled limit follows the allocation, not the 100,000 USD ceiling of the pod's env
        halt_99k, gross_99k = pod.engine.limits.drawdown_halt_usd, pod.engine.limits.max_gross_position_usd
        assert pod.engine.limits.capital_usd == pytest.approx(99_000)
        assert pod.metric("quantramp_capital_usd") == pytest.approx(99_000)
        # a stage transition: 95% of the capital; applied at the next bar, in the same process
        engine = pod.engine
        with pod.http.lock:
            peak, equity, pnl = engine.peak_equity, engine.equity, engine.live.pnl()
            day_pnl = engine.day_pnl()
        processed = pod.rt.processed
        await op.set(KEY, _alloc(95_000).to_json())
        await _until(lambda: pod.rt.allocation is not None and pod.rt.allocation.capital_usd == 95_000)
        assert pod.engine is engine and pod.rt.processed >= processed  # no restart: the same engine, bars go on
        with pod.http.lock:
            assert engine.config.capital_usd == pytest.approx(95_000)
            assert engine.limits.max_position_usd == pytest.approx(47_500)
            assert engine.limits.max_daily_loss_usd == pytest.approx(1_900)
            assert engine.limits.capital_usd == pytest.approx(95_000)
            assert engine.limits.drawdown_halt_usd == pytest.approx(halt_99k * 95 / 99, rel=1e-9)
            assert engine.limits.max_gross_position_usd == pytest.approx(gross_99k * 95 / 99, rel=1e-9)
        # the drawdown in USD and the day's P&L survive: the peak moved by the same -4,000 USD as the
        # capital, give or take the P&L of the bars traded since the snapshot above (a new peak)
        with pod.http.lock:
            drift = abs(engine.live.pnl() - pnl) + 1e-6
            assert abs(engine.peak_equity - (peak - 4_000)) <= drift
            assert abs(engine.day_pnl() - day_pnl) <= drift
            assert abs(engine.equity - (equity - 4_000)) <= drift
        # a malformed record is refused: the allocation in force stays
        await op.set(KEY, b'{"capital_usd": -5}')
        await asyncio.sleep(0.2)
        assert pod.rt.allocation.capital_usd == 95_000 and engine.config.capital_usd == pytest.approx(95_000)
        stop.set()
        await task
        await pod.close()
        await op.aclose()

    asyncio.run(scenario())


def test_allocation_records_are_validated():
    a = _alloc(1_000)
    assert alloc.Allocation.parse(a.to_json()) == a
    for bad in (b"nope", b"[]", b'{"capital_usd": 1}', b'{"capital_usd": "1e3", "max_position_usd": 1, "max_order_usd": 1, "max_daily_loss_usd": 1}',
                b'{"capital_usd": NaN, "max_position_usd": 1, "max_order_usd": 1, "max_daily_loss_usd": 1}',
                b'{"capital_usd": 0, "max_position_usd": 1, "max_order_usd": 1, "max_daily_loss_usd": 1}'):
        with pytest.raises(ValueError):
            alloc.Allocation.parse(bad)
