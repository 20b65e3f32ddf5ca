"""Trader runtimes built as the pod builds them, wired to a Redis, for the Redis scenarios.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Callable

from ..backtest import make_engine, stable_seed
from ..broker import Order
from .base import CAPITAL_USD, Context, engine_config


def _pod_env(redis_url: str, strategy: str, interval_s: float, ns: str) -> dict[str, str]:
    return {
        "QR_STRATEGY": strategy,
        "QR_NAMESPACE": ns,
        "QR_ROLE": "challenger",
        "QR_STAGE": "canary-1",
        "QR_MODEL_URI": "stress:in-process-logistic",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
        "QR_CAPITAL_USD": str(CAPITAL_USD),
        "QR_RISK_PROFILE": "seed",
        "QR_BAR_INTERVAL_SECONDS": str(interval_s),
        "REDIS_URL": redis_url,
    }

class Pod:
    """A trader runtime built as the pod builds it (server.Runtime), broker calls recorded."""

    def __init__(self, ctx: Context, redis_url: str, strategy: str, interval_s: float = 0.0, ns: str | None = None) -> None:
        from ..metrics import TraderMetrics
        from ..server import Runtime, TraderSettings, _State
        from ..state import Keys, StateStore, connect

        self.settings = s = TraderSettings.from_env(_pod_env(redis_url, strategy, interval_s, ns or f"stress-{uuid.uuid4().hex[:8]}"))
        self.engine = make_engine(ctx.model, s.engine_config(), ctx.bars, seed=stable_seed(s.namespace, s.strategy, s.role),
                                  fees=s.fee_schedule())
        broker = self.engine.broker
        broker.chaos_reject_rate = 0.0
        self.calls: list[tuple[float, int, int]] = []
        submit = broker.submit

        def recording(order: Order):
            self.calls.append((time.time(), order.qty, self.engine.live.position))
            return submit(order)

        broker.submit = recording  # type: ignore[method-assign]
        self.metrics = TraderMetrics(s.strategy, s.role, s.symbol, stage=s.stage)
        self.http = _State(self.metrics)
        self.keys = Keys(s.namespace, s.strategy, s.role, s.stage)
        self.store = StateStore(connect(redis_url), self.keys)
        self.rt = Runtime(s, self.engine, ctx.bars, self.metrics, self.http, self.store)

    async def shutdown(self, stop: asyncio.Event, task: asyncio.Task) -> None:
        """Stop the runtime ``task`` (signal ``stop``, cancel if still running, await it), then close."""
        stop.set()
        if not task.done():
            task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self.close()

    async def close(self) -> None:
        await self.store.close()

def _flattening(qty: int, pos: int) -> bool:
    return pos != 0 and qty == -pos

async def _wait(pred: Callable[[], bool], timeout_s: float, step_s: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        await asyncio.sleep(step_s)
    return pred()
