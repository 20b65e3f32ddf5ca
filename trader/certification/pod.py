"""The pod under certification, built as the trader pod builds it, and synthetic sessions.

:func:`pod_engine` goes through the pod's own path: ``TraderSettings.from_env`` (the QR_*
contract, ``QR_RISK_PROFILE=seed``) -> ``engine_config()`` -> ``backtest.make_engine`` (the
SimBroker with the all-in fee schedule, causal costs) -> :class:`~quantramp.trader.engine.Engine`,
the governor, the bar check and the session clock the pod runs. Only the model is a script
(the stimulus of each scenario) and the bars are synthetic sessions whose prices are chosen
so that the seed's own $1,000 limits can bind (a $10 stock: the $50 single-trade limit is 5
shares; at AAPL's $230 one share would already exceed it, review D2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence
from zoneinfo import ZoneInfo

from ..backtest import make_engine
from ..engine import Engine, StepResult
from ..marketdata import Bar
from ..server import TraderSettings
from .auditor import AuditLimits, Auditor

#: the seed profile at the seed's own reference capital
SEED_ENV = {
    "QR_STRATEGY": "certify", "QR_ROLE": "challenger", "QR_MODEL_URI": "models:/certify/1",
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:1", "QR_CAPITAL_USD": "1000", "QR_RISK_PROFILE": "seed",
}


class Script:
    """The scenario's model: P(up) of the i-th decision is ``fn(i)`` (0..1)."""

    def __init__(self, fn: Callable[[int], float]) -> None:
        self.fn = fn
        self.i = 0

    def p_up_one(self, x) -> float:
        p = self.fn(self.i)
        self.i += 1
        return p


def pod_engine(model, **env: str) -> Engine:
    """The pod's engine for the seed profile at $1,000 plus ``env`` overrides (QR_* strings)."""
    s = TraderSettings.from_env({**SEED_ENV, **env})
    return make_engine(model, s.engine_config(), None, seed=7, fees=s.fee_schedule())


def session(day: str, prices: Sequence[float], start: str = "09:30", bar_seconds: int = 60,
            spread: float = 0.01, volume: float = 1e6, tz: str = "America/New_York") -> list[Bar]:
    """Bars of one session from ``start`` (HH:MM local time in ``tz``, New York by default) on
    ``day`` (YYYY-MM-DD), one per price (close USD; open = previous close; high/low = max/min +-
    spread / 2)."""
    h, m = map(int, start.split(":"))
    t0 = datetime.fromisoformat(day).replace(hour=h, minute=m, tzinfo=ZoneInfo(tz)).astimezone(timezone.utc)
    return _bars([t0 + timedelta(seconds=i * bar_seconds) for i in range(len(prices))], prices, spread, volume)


def daily_sessions(first_day: str, prices: Sequence[float], calendar: str = "XNYS", spread: float = 0.01,
                   volume: float = 1e8) -> list[Bar]:
    """Daily bars, one per session of ``calendar`` from ``first_day`` (YYYY-MM-DD, a session) on, each
    stamped at its session's open, one per price (as :func:`session`)."""
    from datetime import date

    from ..session import calendar as get_calendar

    cal = get_calendar(calendar)
    s = cal.session_for(date.fromisoformat(first_day))
    if s is None:
        raise ValueError(f"{first_day} is not an {calendar} session")
    opens = []
    for _ in prices:
        opens.append(s.open)
        s = cal.next_session(s.day)
    return _bars(opens, prices, spread, volume)


def _bars(times: Sequence[datetime], prices: Sequence[float], spread: float, volume: float) -> list[Bar]:
    out, prev = [], prices[0]
    for t, c in zip(times, prices):
        o = prev
        out.append(Bar(t, o, max(o, c) + spread / 2, min(o, c) - spread / 2, c, volume))
        prev = c
    return out


def wiggle(n: int, base: float = 10.0) -> list[float]:
    """``n`` closes around ``base`` USD, one cent up and down (a quiet tape)."""
    return [round(base + 0.01 * (i % 2), 2) for i in range(n)]


@dataclass
class Outcome:
    """What one scenario run produced: the auditor's violations and a few measurements."""

    violations: dict[str, int]
    measurements: dict = field(default_factory=dict)


def run(engine: Engine, bars: Sequence[Bar], auditor: Auditor, skip_audit: Callable[[int], bool] = lambda i: False
        ) -> list[StepResult]:
    """Feed ``bars`` to the engine and, except the indices ``skip_audit`` names, to the auditor."""
    steps = []
    for i, b in enumerate(bars):
        r = engine.on_bar(b)
        steps.append(r)
        if skip_audit(i):
            continue
        f = r.fill
        auditor.bar(b.ts, b.close, f.filled_qty if f else 0, f.price if f else 0.0, f.commission_usd if f else 0.0,
                    r.order_qty)
    return steps


__all__ = ["AuditLimits", "Auditor", "Outcome", "Script", "daily_sessions", "pod_engine", "run", "session", "wiggle"]


class FakeClock:
    """A monotonic clock the scenario moves (seconds)."""

    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def pod_runtime(model, clock: Callable[[], float] | None = None, **env: str):
    """The pod's :class:`~quantramp.trader.server.Runtime` (dev mode: no Redis) around
    :func:`pod_engine`; ``clock``: its monotonic clock (paced runtimes)."""
    from ..metrics import TraderMetrics
    from ..server import Runtime, _State

    s = TraderSettings.from_env({**SEED_ENV, "QR_BAR_INTERVAL_SECONDS": "0", **env})
    eng = make_engine(model, s.engine_config(), None, seed=7, fees=s.fee_schedule())
    m = TraderMetrics(s.strategy, s.role, s.symbol)
    kw = {} if clock is None else {"monotonic": clock}
    return Runtime(s, eng, None, m, _State(m), None, **kw)
