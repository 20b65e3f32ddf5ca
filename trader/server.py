"""The trader process: env contract -> model -> replay loop, with /metrics /healthz /readyz.

HTTP runs in a stdlib ``ThreadingHTTPServer`` thread on POD_IP:QR_PORT; the
main thread runs an asyncio loop (:class:`Runtime`): the paced bar loop, the kill
switch listener and the Redis recovery probe. SIGTERM/SIGINT stop both and exit 0.
Exit codes: 0 stopped cleanly, 2 bad configuration, 3 model, market data or saved
state could not be loaded (the trader refuses to trade rather than guess). The model
is fetched and checked in a short-lived child process (:func:`.model.load_model`), so
MLflow, skops and scikit-learn stay out of this process for the logistic model.

Durable state (REDIS_URL, with the strategy's own ACL user QR_REDIS_USERNAME / QR_REDIS_PASSWORD,
trader/state.py, operator/redisacl.py): the book is written after every bar and a
restarted pod resumes from it, replay included (it continues after the last bar it
booked). Without REDIS_URL the trader runs in dev mode, without durable state and
without a kill switch, and says so loudly. Orders are withheld from the broker
(``quantramp_orders_blocked_total{reason}``) while the kill latch is engaged (flattening
if the kill asked to), while Redis is unreachable (flattening what it can; /readyz 503)
and while the pause gate is closed (QR_START_PAUSED, trader/pausegate.py); an order that only
reduces risk (the end-of-day flatten, a halt flatten, a reduce-only exit) is never withheld.

Every order is written ahead (Redis ``...:intent``, deterministic id) before the broker sees
it; a restarted pod never re-sends an order found written ahead and reconciles its position
with the broker before trading. Wall-clock duties (:meth:`Runtime.tick`) flatten at the end
of day and report the feed stale when no bar comes. A governor halt is lifted only by a
``resume`` message on the kill channel (who, why; recorded in the governor state).
"""

from __future__ import annotations

import asyncio
import heapq
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator, Mapping

import numpy as np
import pandas as pd

from . import allocation as alloc
from . import governor as gov
from .backtest import make_engine, stable_seed
from .barcheck import DEFAULT_MAX_JUMP_RATIO
from .barsource import BarsConfig, BarSourceConfigError, check_spacing
from .broker import SEC_FEE_RATE, FeeSchedule, OrderState
from .ib import IBBroker, IBConfig
from .liveorders import IBOrders
from .livefeed import IBFeed, LiveFeed, PollingFeed, merged
from .evidence import EvidenceConfig
from .engine import (
    DEFAULT_DAILY_LOSS_FRACTION,
    DEFAULT_ENTRY_THRESHOLD,
    DEFAULT_ORDER_FRACTION,
    DEFAULT_POSITION_FRACTION,
    EngineConfig,
)
from . import killswitch as ks
from .engine import Engine, StepResult
from .portfolio import Portfolio
from . import session as sess
from .marketdata import SUPPORTED_SYMBOLS, Bar, Bars, MarketDataError, loop_offset
from .metrics import CONTENT_TYPE, RuntimeMetrics, TraderMetrics
from .model import ModelLoadError, load_model
from .pausegate import DEFAULT_MAX_LATENCY_MS, DEFAULT_WINDOW_S, PauseGate
from .sizing import SizingConfig
from .state import ACK_TTL_S as STATE_ACK_TTL_S
from .state import Keys, StateStore, StateUnavailable, connect

log = logging.getLogger("quantramp.trader")

ROLES = ("champion", "challenger")
#: one log line every this many bars
LOG_EVERY_BARS = 100
EXIT_CONFIG = 2
EXIT_LOAD = 3
#: seconds between reconnection attempts while Redis is unreachable
REDIS_RETRY_S = 0.5
#: the wall-clock duties act only after at least this much wall time without a bar (seconds), so
#: the scheduling jitter of an accelerated replay (QR_BAR_INTERVAL_SECONDS << bar length) is no silence
WATCHDOG_MIN_WALL_S = 2.0
#: while Redis is unreachable, repeat the error log line at most this often (seconds)
REDIS_LOG_EVERY_S = 30.0


class ConfigError(ValueError):
    """The environment does not satisfy the trader pod contract."""


@dataclass(frozen=True)
class TraderSettings:
    """The trader pod contract, parsed. USD amounts, seconds, probability edge."""

    strategy: str
    namespace: str
    role: str
    stage: str
    model_uri: str
    tracking_uri: str
    #: the first of :attr:`symbols` (the one symbol of a one-symbol trader)
    symbol: str
    capital_usd: float
    paper: bool
    bar_interval_s: float
    max_position_usd: float
    max_daily_loss_usd: float
    max_order_usd: float
    entry_threshold: float
    redis_url: str
    pod_ip: str
    port: int
    start_paused: bool = False
    #: what the durable book is keyed by (QR_BOOK_SCOPE, default the stage): the operator gives the
    #: challenger ``<ramp id>-<stage>`` (a new ramp never resumes an older candidate's book) and the
    #: champion ``v<version>`` (its day P&L and daily-loss state survive the ramp's stage transitions)
    book_scope: str = ""
    pause_max_latency_s: float = DEFAULT_MAX_LATENCY_MS / 1000.0
    pause_window_s: float = DEFAULT_WINDOW_S
    #: every governor limit (QR_MAX_*, QR_DRAWDOWN_*, ... or capital-scaled defaults); see governor.limits_from_env
    limits: gov.RiskLimits | None = None
    #: ATR sizing (QR_SIZING_*, QR_ATR_PERIOD, ...); see sizing.SizingConfig.from_env
    sizing: SizingConfig | None = None
    #: QR_BAR_SECONDS: length of one market-data bar (60 = minute bars); every per-bar figure derives from it
    bar_seconds: int = 60
    #: QR_MAX_BAR_JUMP_RATIO: a bar further than this from the recent closes is refused (trader/barcheck.py);
    #: None (unset): the bound for the bar length (barcheck.max_jump_ratio_for: 10 % intraday, 50 % daily)
    max_bar_jump_ratio: float | None = None
    evidence: EvidenceConfig = field(default_factory=EvidenceConfig)
    #: the champion's model URI (QR_REFERENCE_MODEL_URI), run beside the model for paired evidence only
    reference_model_uri: str = ""
    #: QR_SEC_FEE_RATE: SEC Section 31 fee, fraction of sale proceeds (broker.SEC_FEE_RATE by default)
    sec_fee_rate: float = SEC_FEE_RATE
    #: QR_ALLOCATION_KEY: the Redis key of this pod's live allocation (trader/allocation.py; the operator
    #: sets it for the champion): capital and limits are read from it before the first bar and on every bar
    allocation_key: str = ""
    #: the governor's QR_* variables as given to the pod (governor.ENV_VARS, QR_RISK_PROFILE): a live
    #: allocation re-derives every capital-scaled limit from them at the new capital, as a restart would
    risk_env: tuple[tuple[str, str], ...] = ()
    #: QR_REDIS_USERNAME / QR_REDIS_PASSWORD: the strategy's own Redis ACL user (the operator's per-strategy
    #: Secret, by secretKeyRef); REDIS_URL carries no credentials. Never printed (repr=False).
    redis_username: str = field(default="", repr=False)
    redis_password: str = field(default="", repr=False)
    #: QR_BARS_SOURCE / QR_BARS_URL / QR_BARS_POSTGRES_DSN / QR_BARS_TABLE: where the bars come from
    #: (trader/barsource.py; default the bundled sample); the database password is PGPASSWORD, read by libpq
    bars: BarsConfig = field(default_factory=BarsConfig)
    #: QR_SYMBOLS: every symbol this role trades (several: one engine each under one governor, trader/portfolio.py)
    symbols: tuple[str, ...] = ()
    #: QR_CALENDARS: symbol -> exchange_calendars name, for the symbols not on XNYS (trader/session.py)
    calendars: Mapping[str, str] = field(default_factory=dict)
    #: QR_BROKER: ``sim`` (the simulated broker, default) or ``ib`` (Interactive Brokers, trader/ib.py and
    #: trader/liveorders.py; where and how from IB_HOST, IB_PORT, IB_MODE, IB_APP, IB_CLIENT_ID, IB_ACCOUNT)
    broker: str = "sim"
    ib: IBConfig | None = None
    #: QR_IB_SETTLE_SECONDS: how long the next bar waits for IB to confirm the cancel of an order's rest
    ib_settle_s: float = 5.0
    #: QR_BARS_FOLLOW: trade the bars as they come (trader/livefeed.py: warm up on the history, then follow
    #: the source) instead of replaying the history in a loop; always for QR_BARS_SOURCE=ib
    follow: bool = False
    #: QR_BARS_POLL_SECONDS: how often a followed file or database is asked for new bars
    poll_s: float = 1.0

    def limits_at(self, capital_usd: float, max_position_usd: float, max_order_usd: float,
                  max_daily_loss_usd: float) -> gov.RiskLimits:
        """The governor limits for a live allocation: the pod's risk variables with the three
        allocated USD limits, every other default scaled to ``capital_usd`` (raises ValueError)."""
        env = dict(self.risk_env, QR_MAX_POSITION_USD=repr(max_position_usd), QR_MAX_ORDER_USD=repr(max_order_usd),
                   QR_MAX_DAILY_LOSS_USD=repr(max_daily_loss_usd))
        return gov.limits_from_env(env, capital_usd, self.bar_seconds)

    @staticmethod
    def from_env(env: Mapping[str, str]) -> "TraderSettings":
        """Parse and validate the QR_* environment; raise :class:`ConfigError` listing every problem."""
        errors: list[str] = []

        def text(name: str, default: str | None = None) -> str:
            v = env.get(name, "").strip()
            if not v:
                if default is None:
                    errors.append(f"{name} is required")
                    return ""
                return default
            return v

        def number(name: str, default: float | None = None, positive: bool = True) -> float:
            raw = env.get(name, "").strip()
            if not raw:
                if default is None:
                    errors.append(f"{name} is required")
                    return float("nan")
                return default
            try:
                v = float(raw)
            except ValueError:
                errors.append(f"{name}={raw!r} is not a number")
                return float("nan")
            if not math.isfinite(v) or (positive and v <= 0) or v < 0:
                errors.append(f"{name}={raw!r} must be {'> 0' if positive else '>= 0'}")
            return v

        strategy = text("QR_STRATEGY")
        role = text("QR_ROLE")
        if role and role not in ROLES:
            errors.append(f"QR_ROLE={role!r} must be one of {', '.join(ROLES)}")
        model_uri = text("QR_MODEL_URI")
        tracking_uri = text("MLFLOW_TRACKING_URI")
        bars: BarsConfig | None = None
        try:
            bars = BarsConfig.from_env(env)
        except BarSourceConfigError as exc:
            errors.append(str(exc))
        symbols = [s.strip().upper() for s in text("QR_SYMBOLS", "AAPL").split(",") if s.strip()]
        # the sample's symbols are known now; a file or database is asked at load time (and refuses
        # a symbol it has no bars for)
        unknown = [s for s in symbols if s not in SUPPORTED_SYMBOLS] if bars and bars.kind == "sample" else []
        if unknown:
            errors.append(
                f"QR_SYMBOLS: no market data for {', '.join(unknown)} (only {', '.join(SUPPORTED_SYMBOLS)} has minute bars)"
            )
        twice = sorted({x for x in symbols if symbols.count(x) > 1})
        if twice:
            errors.append(f"QR_SYMBOLS: {', '.join(twice)} named twice")
        capital = number("QR_CAPITAL_USD")
        paper_raw = text("QR_PAPER", "false").lower()
        if paper_raw not in ("true", "false", "1", "0", "yes", "no"):
            errors.append(f"QR_PAPER={paper_raw!r} must be true or false")
        paper = paper_raw in ("true", "1", "yes")
        paused_raw = text("QR_START_PAUSED", "false").lower()
        if paused_raw not in ("true", "false", "1", "0", "yes", "no"):
            errors.append(f"QR_START_PAUSED={paused_raw!r} must be true or false")
        start_paused = paused_raw in ("true", "1", "yes")
        pause_latency_ms = number("QR_PAUSE_MAX_LATENCY_MS", DEFAULT_MAX_LATENCY_MS)
        pause_window = number("QR_PAUSE_WINDOW_SECONDS", DEFAULT_WINDOW_S, positive=False)
        interval = number("QR_BAR_INTERVAL_SECONDS", 60.0, positive=False)
        cap = capital if math.isfinite(capital) and capital > 0 else float("nan")

        def limit(name: str, fraction: float) -> float:
            # default: a fraction of the capital (nan if the capital is invalid, already reported)
            return number(name, fraction * cap) if env.get(name, "").strip() else fraction * cap

        max_pos = limit("QR_MAX_POSITION_USD", DEFAULT_POSITION_FRACTION)
        max_loss = limit("QR_MAX_DAILY_LOSS_USD", DEFAULT_DAILY_LOSS_FRACTION)
        max_order = limit("QR_MAX_ORDER_USD", DEFAULT_ORDER_FRACTION)
        limits = sizing = None
        bar_seconds = number("QR_BAR_SECONDS", 60.0)
        if math.isfinite(bar_seconds) and (bar_seconds != int(bar_seconds) or bar_seconds > 86_400):
            errors.append(f"QR_BAR_SECONDS={bar_seconds:g} must be a whole number of seconds up to 86400")
        scaled_for = int(bar_seconds) if math.isfinite(bar_seconds) and bar_seconds > 0 else 60
        if math.isfinite(cap):
            try:
                limits = gov.limits_from_env(env, cap, scaled_for)
            except ValueError as exc:
                errors.append(str(exc))
        try:
            sizing = SizingConfig.from_env(env)
        except ValueError as exc:
            errors.append(str(exc))
        jump = number("QR_MAX_BAR_JUMP_RATIO", DEFAULT_MAX_JUMP_RATIO) if env.get("QR_MAX_BAR_JUMP_RATIO", "").strip() \
            else None
        evidence = EvidenceConfig()
        try:
            evidence = EvidenceConfig.from_env(env)
        except ValueError as exc:
            errors.append(str(exc))
        sec_fee = number("QR_SEC_FEE_RATE", SEC_FEE_RATE, positive=False)
        threshold = number("QR_ENTRY_THRESHOLD", DEFAULT_ENTRY_THRESHOLD, positive=False)
        if math.isfinite(threshold) and threshold >= 0.5:
            errors.append(f"QR_ENTRY_THRESHOLD={threshold} must be below 0.5")
        broker = text("QR_BROKER", "sim").lower()
        ib_config = None
        if broker not in ("sim", "ib"):
            errors.append(f"QR_BROKER={broker!r} must be sim or ib")
        elif broker == "ib":
            try:
                ib_config = IBConfig.from_env(env)
            except ValueError as exc:
                errors.append(f"IB_*: {exc}")
            if ib_config is not None and not ib_config.account:
                errors.append("IB_ACCOUNT is required with QR_BROKER=ib: IB's positions are adopted per account, so each "
                              "role trades its own account (spec.broker.ib's championAccountSecretKeyRef and "
                              "challengerAccountSecretKeyRef)")
            if ib_config is not None and ib_config.mode == "live" and paper:
                errors.append("IB_MODE=live with QR_PAPER=true: a paper (shadow) pod never trades a live IB account; "
                              "use IB_MODE=paper, or QR_PAPER=false for a live stage")
        ib_settle = number("QR_IB_SETTLE_SECONDS", 5.0)
        follow_raw = text("QR_BARS_FOLLOW", "false").lower()
        if follow_raw not in ("true", "false", "1", "0", "yes", "no"):
            errors.append(f"QR_BARS_FOLLOW={follow_raw!r} must be true or false")
        follow = follow_raw in ("true", "1", "yes") or (bars is not None and bars.kind == "ib")
        if follow and bars is not None and bars.kind == "sample":
            errors.append("QR_BARS_FOLLOW=true needs a source that grows (QR_BARS_SOURCE file, postgres or ib), "
                          "not the bundled sample")
        if bars is not None and bars.kind == "ib" and ib_config is None and broker != "ib":
            try:
                ib_config = IBConfig.from_env(env)
            except ValueError as exc:
                errors.append(f"IB_*: {exc}")
        calendars = parse_calendars(text("QR_CALENDARS", ""), symbols, errors)
        foreign = sorted(x for x, c in calendars.items() if c != sess.CALENDAR_NAME)
        if foreign and (broker == "ib" or (bars is not None and bars.kind in ("ib", "sample"))):
            why = "the bundled sample is XNYS bars" if bars is not None and bars.kind == "sample" else \
                "Interactive Brokers contracts are SMART-routed US stocks (XNYS) only"
            errors.append(f"QR_CALENDARS: {', '.join(foreign)} on another exchange than XNYS: {why}")
        poll = number("QR_BARS_POLL_SECONDS", 1.0)
        port_raw = text("QR_PORT", "8080")
        try:
            port = int(port_raw)
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            errors.append(f"QR_PORT={port_raw!r} must be a port number")
            port = 0
        if errors:
            raise ConfigError("; ".join(errors))
        return TraderSettings(
            strategy=strategy,
            namespace=text("QR_NAMESPACE", "default"),
            role=role,
            stage=text("QR_STAGE", ""),
            book_scope=text("QR_BOOK_SCOPE", "") or text("QR_STAGE", ""),
            model_uri=model_uri,
            tracking_uri=tracking_uri,
            symbol=symbols[0],
            capital_usd=capital,
            paper=paper,
            bar_interval_s=interval,
            max_position_usd=max_pos,
            max_daily_loss_usd=max_loss,
            max_order_usd=max_order,
            entry_threshold=threshold,
            redis_url=text("REDIS_URL", ""),
            pod_ip=text("POD_IP", "127.0.0.1"),
            port=port,
            start_paused=start_paused,
            pause_max_latency_s=pause_latency_ms / 1000.0,
            pause_window_s=pause_window,
            limits=limits,
            sizing=sizing,
            bar_seconds=int(bar_seconds),
            max_bar_jump_ratio=jump,
            evidence=evidence,
            reference_model_uri=text("QR_REFERENCE_MODEL_URI", ""),
            sec_fee_rate=sec_fee,
            allocation_key=text("QR_ALLOCATION_KEY", ""),
            risk_env=tuple((k, env[k]) for k in (*gov.ENV_VARS.values(), gov.PROFILE_ENV) if env.get(k, "").strip()),
            redis_username=env.get("QR_REDIS_USERNAME", "").strip(),
            redis_password=env.get("QR_REDIS_PASSWORD", ""),
            bars=bars or BarsConfig(),
            symbols=tuple(symbols),
            calendars=calendars,
            broker=broker,
            ib=ib_config,
            ib_settle_s=ib_settle,
            follow=follow,
            poll_s=poll,
        )

    def engine_config(self, symbol: str | None = None) -> EngineConfig:
        """The engine configuration these settings describe; with ``symbol`` (one of several), that
        symbol's engine: its equal share of the capital (USD), the role's limits (a
        :class:`~.portfolio.Portfolio` resolves them on the whole capital)."""
        limits = self.limits or gov.RiskLimits(
            max_order_usd=self.max_order_usd,
            max_position_usd=self.max_position_usd,
            max_daily_loss_usd=self.max_daily_loss_usd,
        )
        extra = {"sizing": self.sizing} if self.sizing is not None else {}
        n = len(self.symbols) if symbol is not None and self.symbols else 1
        return EngineConfig(
            capital_usd=self.capital_usd / n,
            limits=limits,
            **extra,
            entry_threshold=self.entry_threshold,
            paper=self.paper,
            symbol=symbol or self.symbol,
            bar_seconds=self.bar_seconds,
            max_bar_jump_ratio=self.max_bar_jump_ratio,
            evidence=self.evidence,
            calendar=self.calendars.get(symbol or self.symbol, sess.CALENDAR_NAME),
        )

    def fee_schedule(self) -> FeeSchedule:
        """The all-in IBKR Tiered schedule, with the SEC fee rate of these settings."""
        return FeeSchedule(sec_fee_rate=self.sec_fee_rate)


def parse_calendars(text: str, symbols: list[str], errors: list[str]) -> dict[str, str]:
    """``QR_CALENDARS`` ("SYMBOL=CALENDAR,...", e.g. "CSPX=XLON,SAP=XETR"; empty: every symbol on
    XNYS) as symbol -> exchange_calendars name. Appends one message per problem to ``errors``
    (a malformed item, a symbol not in ``symbols`` or named twice, a calendar not in
    :data:`~.session.SUPPORTED_CALENDARS`) and leaves that item out."""
    out: dict[str, str] = {}
    for item in (x.strip() for x in text.split(",")):
        if not item:
            continue
        sym, eq, name = (p.strip() for p in item.partition("="))
        sym, name = sym.upper(), name.upper()
        if not eq or not sym or not name:
            errors.append(f"QR_CALENDARS: {item!r} is not SYMBOL=CALENDAR (e.g. CSPX=XLON)")
        elif sym not in symbols:
            errors.append(f"QR_CALENDARS: {sym} is not traded (QR_SYMBOLS: {', '.join(symbols)})")
        elif sym in out:
            errors.append(f"QR_CALENDARS: {sym} named twice")
        elif name not in sess.SUPPORTED_CALENDARS:
            errors.append(f"QR_CALENDARS: {sym}={name}: unsupported calendar, use one of {', '.join(sess.SUPPORTED_CALENDARS)}")
        else:
            out[sym] = name
    return out


class _State:
    """What the HTTP thread reads: metrics (under ``lock``), readiness and why not ready."""

    def __init__(self, metrics: TraderMetrics) -> None:
        self.metrics = metrics
        self.ready = False
        self.not_ready_reason = "model loaded, waiting for the first bar"
        self.lock = threading.Lock()


def _handler(state: _State):
    class Handler(BaseHTTPRequestHandler):
        def _send(self, code: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server API
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                with state.lock:
                    body = state.metrics.render()
                self._send(200, body, CONTENT_TYPE)
            elif path == "/healthz":
                self._send(200, b"ok\n")
            elif path == "/readyz":
                if state.ready:
                    self._send(200, b"ready\n")
                else:
                    self._send(503, f"not ready: {state.not_ready_reason}\n".encode())
            else:
                self._send(404, b"not found\n")

        def log_message(self, fmt: str, *args) -> None:  # quiet: scrapes every second
            log.debug("http %s", fmt % args)

    return Handler


def start_http(host: str, port: int, state: _State) -> ThreadingHTTPServer:
    """Serve /metrics /healthz /readyz on host:port in a daemon thread; returns the server."""
    srv = ThreadingHTTPServer((host, port), _handler(state))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, name="http", daemon=True).start()
    return srv


def listen_addresses(pod_ip: str) -> list[str]:
    """Where a pod serves its probes and metrics: ``POD_IP`` (kubelet probes, Prometheus) and, in a pod's own
    network namespace, loopback too: ``kubectl port-forward`` dials localhost inside the pod (the container
    runtime's port-forward; delivery review 4.2). Outside a pod (POD_IP loopback, the default) loopback only.
    Raises ValueError for a POD_IP that is not an IP address."""
    import ipaddress

    ip = ipaddress.ip_address(pod_ip)
    if ip.is_loopback or ip.is_unspecified:
        return [pod_ip]
    return [pod_ip, "::1" if ip.version == 6 else "127.0.0.1"]


def replay_from(bars: Bars | Mapping[str, Bars], after: datetime | None = None, bar_seconds: int = 60,
                calendars: Mapping[str, sess.Calendar] | None = None) -> Iterator[Bar]:
    """The endless replay of ``bars`` (same bars and timestamps as :func:`marketdata.replay`), unpaced,
    starting with the first bar later than ``after`` (None: from the start). Daily bars
    (``bar_seconds`` 86400) loop by whole sessions of each symbol's calendar instead
    (:func:`replay_daily_from`; ``calendars``: symbol -> calendar, XNYS when absent).

    ``bars``: one symbol's bars (the bars carry symbol ""), or symbol -> bars: the symbols' bars
    merged in time order (same time: in the mapping's order), each tagged with its symbol, the
    loop offset covering them all. A restarted pod continues after the last bar it booked
    instead of replaying bars it already traded.
    """
    series = {"": bars} if isinstance(bars, Bars) else dict(bars)
    if sess.is_daily(bar_seconds):
        yield from replay_daily_from(series, after, calendars)
        return
    syms = list(series)
    ts = np.concatenate([series[x].ts for x in syms])
    which = np.concatenate([np.full(len(series[x]), i) for i, x in enumerate(syms)])
    order = np.lexsort((which, ts))
    ts, which = ts[order], which[order]
    cols = {c: np.concatenate([getattr(series[x], c) for x in syms])[order] for c in ("open", "high", "low", "close", "volume")}
    span = Bars("", ts, cols["open"], cols["high"], cols["low"], cols["close"], cols["volume"])
    offset = loop_offset(span)
    loop, k = 0, 0
    if after is not None:
        t = np.datetime64(pd.Timestamp(after).tz_convert("UTC").tz_localize(None).to_datetime64(), "ns")
        loop = max(0, int((t - ts[0]) // offset))
        k = int(np.searchsorted(ts + offset * loop, t, side="right"))
        if k >= len(ts):
            loop, k = loop + 1, 0
    while True:
        shift = offset * loop
        for j in range(k, len(ts)):
            yield Bar(
                ts=pd.Timestamp(ts[j] + shift).tz_localize("UTC").to_pydatetime(),
                open=float(cols["open"][j]),
                high=float(cols["high"][j]),
                low=float(cols["low"][j]),
                close=float(cols["close"][j]),
                volume=float(cols["volume"][j]),
                symbol=syms[which[j]],
            )
        loop, k = loop + 1, 0


def replay_daily_from(series: Mapping[str, Bars], after: datetime | None = None,
                      calendars: Mapping[str, sess.Calendar] | None = None) -> Iterator[Bar]:
    """:func:`replay_from` of daily bars (each at its session's open): loop ``k`` moves every bar
    ``k * n`` sessions later in its symbol's calendar (``n``: that calendar's sessions over the
    local dates the data spans, from the first bar's date to the last's over every symbol), so
    bars stay on session opens (a shift by weeks would land on holidays and off the open across
    DST). The symbols' streams are merged in time order (same time: in the mapping's order); a
    symbol's stream ends when its calendar does (2035). ``calendars``: symbol -> calendar (XNYS
    when absent). Symbols tagged as :func:`replay_from` does; ``after`` as there."""
    cals = {sym: (calendars or {}).get(sym) or sess.XNYS for sym in series}
    dates = {sym: [cals[sym].local_date(pd.Timestamp(t).tz_localize("UTC").to_pydatetime()) for t in series[sym].ts]
             for sym in series}
    d0, d1 = min(d[0] for d in dates.values()), max(d[-1] for d in dates.values())

    def stream(order: int, sym: str) -> Iterator[tuple[datetime, int, Bar]]:
        cal, b = cals[sym], series[sym]
        rows = [(cal.session_index(d), j) for j, d in enumerate(dates[sym])]
        first = cal.sessions_through(d0 - timedelta(days=1))
        span = max(1, cal.sessions_through(d1) - first)
        loop = 0
        if after is not None:
            s = cal.session_at(after) or cal.next_session(cal.local_date(after))
            done = cal.session_index(s.day) if s is not None else first
            loop = max(0, (done - first) // span)
        while True:
            for idx, j in rows:
                s = cal.session_at_index(idx + loop * span)
                if s is None:
                    return
                if after is not None and s.open <= after:
                    continue
                yield s.open, order, Bar(ts=s.open, open=float(b.open[j]), high=float(b.high[j]), low=float(b.low[j]),
                                         close=float(b.close[j]), volume=float(b.volume[j]), symbol=sym)
            loop += 1

    for _, _, bar in heapq.merge(*(stream(i, sym) for i, sym in enumerate(series)), key=lambda r: (r[0], r[1])):
        yield bar


class Runtime:
    """One trader pod's asyncio runtime: paced bars -> engine, gates, durable state, kill switch.

    ``store`` None is dev mode (no durable state, no kill switch). All engine and
    gate mutations happen on the event loop thread; ``http.lock`` guards the
    metrics the HTTP thread renders.
    """

    def __init__(
        self,
        settings: TraderSettings,
        engine: Engine | Portfolio,
        bars: Bars | Mapping[str, Bars],
        metrics: TraderMetrics,
        http: _State,
        store: StateStore | None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        ib_orders: IBOrders | None = None,
        feed: LiveFeed | None = None,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.s = settings
        #: live bars (QR_BARS_FOLLOW, QR_BARS_SOURCE=ib; trader/livefeed.py), or None (the history replayed in a loop)
        self.feed = feed
        self.wall_clock = wall_clock
        #: the orders at Interactive Brokers (QR_BROKER=ib; trader/liveorders.py), or None (simulated broker)
        self.ib_orders = ib_orders
        self.engine = engine
        self.bars = bars
        self.metrics = metrics
        self.http = http
        self.store = store
        self.monotonic = monotonic
        self.rmetrics = RuntimeMetrics(metrics, durable=store is not None)
        self.gate = PauseGate(settings.start_paused, settings.pause_max_latency_s, settings.pause_window_s)
        self.rmetrics.set_paused(self.gate.paused)
        self.latch = ks.KillLatch()
        self.redis_up = store is None
        self.loaded = store is None
        self.last_ts: datetime | None = None
        self._last_cal: sess.Calendar | None = None
        self._ib_report = None  # the IB reconcile report whose position breaks were booked
        self.day: str | None = None
        self.processed = 0
        self._latch_version = 0
        self._latch_lock = asyncio.Lock()
        self._redis_log_at = -math.inf
        self._bar_arrival: float | None = None
        self.feed_stale = False
        self._order_cap_warned = False
        self.tag = f"strategy={settings.strategy} role={settings.role} stage={settings.stage or '-'}"
        #: the live allocation applied (None: none yet, or this pod runs on its env's capital)
        self.allocation: alloc.Allocation | None = None
        self._allocation_raw: bytes | None = None
        self._awaiting_allocation = False

    def _engines(self) -> list[Engine]:
        """The engines of this pod: one per symbol (a :class:`~.portfolio.Portfolio`'s), or the one."""
        eng = self.engine
        return list(eng.engines.values()) if isinstance(eng, Portfolio) else [eng]

    def _calendars(self) -> dict[str, sess.Calendar]:
        """symbol -> the calendar its engine trades (one symbol: also under "", the replay's key)."""
        cals = {e.config.symbol: e.calendar for e in self._engines()}
        if not isinstance(self.engine, Portfolio):
            cals[""] = self.engine.calendar
        return cals

    def _last_calendar(self) -> sess.Calendar:
        """The calendar of the newest bar's symbol (after a restart, before a bar: the first symbol's)."""
        return self._last_cal or self._engines()[0].calendar

    def _engine_of(self, bar: Bar) -> Engine:
        """The engine that trades ``bar``'s symbol."""
        eng = self.engine
        return eng.engine_for(bar) if isinstance(eng, Portfolio) else eng

    # -- readiness ---------------------------------------------------------------------------
    def _update_ready(self) -> None:
        if not self.loaded and self._awaiting_allocation:
            ready, why = False, f"waiting for the live allocation at {self.s.allocation_key}"
        elif not self.loaded:
            ready, why = False, "waiting for Redis to load the saved state"
        elif not self.redis_up:
            ready, why = False, "Redis unreachable: orders refused, flattening"
        elif self.ib_orders is not None and not self.ib_orders.ready:
            ready, why = False, f"Interactive Brokers not ready ({self.ib_orders.ib.state}): orders refused"
        elif self.feed_stale:
            ready, why = False, "market data feed silent: no bar within the max price age"
        elif self.processed == 0:
            ready, why = False, "model loaded, waiting for the first bar"
        else:
            ready, why = True, ""
        self.http.not_ready_reason = why
        self.http.ready = ready

    def block_reason(self) -> str | None:
        """Why orders are withheld now (kill, redis_down, paused), or None if they may go to the broker."""
        if self.latch.engaged:
            return "kill"
        if not self.redis_up:
            return "redis_down"
        if self.gate.paused:
            return "paused"
        return None

    def _enforce(self, ts: datetime | None) -> None:
        """Withhold the working order if blocked; queue a flattening order if the block asks for it.

        A working order that only reduces risk (the end-of-day flatten, a halt flatten, a
        reduce-only exit) is never withheld: a kill without flatten and a closed pause gate
        stop orders that add risk (FIA automated-trading guidance: kill switches still allow
        risk-reducing orders; review D10: the position was carried overnight).
        """
        reason = self.block_reason()
        if reason is None:
            return
        flatten = reason == "redis_down" or (reason == "kill" and self.latch.flatten)
        for eng in self._engines():
            working = eng.working_qty
            if flatten and (eng.live.position or eng.sim.position) and ts is not None:
                if working and working != -eng.live.position:
                    self.rmetrics.blocked(reason)
                if not (self.ib_orders is not None and eng.working_reduces_risk and working == -eng.live.position):
                    # (at IB a flatten already working stays: replacing it would cancel it first)
                    self._replace_working(eng, lambda e=eng: e.flatten_next(ts))
            elif working and not eng.working_reduces_risk:
                self._replace_working(eng, eng.cancel_working)
                self.rmetrics.blocked(reason)

    def _replace_working(self, eng: Engine, change: Callable[[], object]) -> None:
        """Apply ``change`` (cancel_working, flatten_next) to ``eng``'s working order; an order it drops
        that already went to IB (at its decision) is cancelled there at once and booked when IB
        confirms (trader/liveorders.py: cancels on kill and on Redis loss)."""
        before = eng.next_order()
        change()
        after = eng.next_order()
        if self.ib_orders is not None and before is not None and (after is None or after.order_id != before.order_id):
            if self.ib_orders.withdraw(before.order_id):
                log.warning("%s order %s (%+d %s) withdrawn: cancel sent to IB", self.tag, before.order_id,
                            before.qty, before.symbol)

    # -- orders at Interactive Brokers (trader/liveorders.py) ------------------------------------
    async def _send_decided(self, eng: Engine) -> None:
        """Send ``eng``'s working order to IB now, at its decision: written ahead first (D12), never
        while the symbol still has an order being withdrawn (its flatten is re-sized once IB
        confirms), never an order a control withholds (``_enforce`` already cancelled those)."""
        orders = self.ib_orders
        if orders is None:
            return
        order = eng.next_order()
        if order is None or order.order_id in orders.sent:
            return
        if orders.withdrawing(order.symbol):
            return
        if self.block_reason() is not None and not eng.working_reduces_risk:
            return
        await self._write_ahead(eng)
        # (the write may have found Redis down: the outage rules then withheld or replaced the order)
        again = eng.next_order()
        if again is None or again.order_id != order.order_id:
            return
        if self.block_reason() is not None and not eng.working_reduces_risk:
            return
        with self.http.lock:
            upd = orders.send(order, eng.live.mark, eng.impact.bps(order.qty))
        if upd.state == OrderState.REJECTED:
            log.error("%s order %s (%+d %s) refused: %s", self.tag, order.order_id, order.qty, order.symbol, upd.reason)

    async def _settle(self, eng: Engine, ts: datetime | None, owned: bool = True) -> None:
        """Before ``eng`` steps (or flattens between bars): settle its orders at IB (cancel the rest of
        a risk-adding one, wait for IB's confirmation), book what came late, count what is still
        working, and re-size a flatten that was decided before its withdrawn orders were booked.
        ``owned`` False (between bars): only the withdrawn orders are waited for; the engine's own
        order works until its bar."""
        orders = self.ib_orders
        if orders is None:
            return
        self._adopt_ib_breaks()
        await orders.settle(eng.config.symbol, owned=owned)
        with self.http.lock:
            moved = orders.book_loose_ends(eng)
            if moved and eng.working_reduces_risk and ts is not None:
                q, pos = eng.working_qty, eng.live.position
                if q * pos >= 0 or abs(q) > abs(pos):  # no longer a reduction of the position as booked
                    self._replace_working(eng, lambda: eng.flatten_next(ts))

    def _adopt_ib_breaks(self) -> None:
        """After IB reconnected mid-run (a new :attr:`~.ib.IBBroker.last_reconcile`): book into each engine
        the shares IB holds that none of the executions IB reported explains (the reconcile's
        ``position_breaks``: IB's position minus the IB book's, which every execution moved, so the
        executions still to be booked by the engine are not counted twice), at the engine's last mark.
        A break of a symbol this pod does not trade is IB's and only logged."""
        ib = self.ib_orders.ib
        rep = ib.last_reconcile
        if rep is None or rep is self._ib_report:
            return
        self._ib_report = rep
        engines = {e.config.symbol: e for e in self._engines()}
        for sym, (ours, theirs) in sorted(rep.position_breaks.items()):
            eng = engines.get(sym)
            if eng is None:
                log.error("%s IB holds %+d shares of %s after the reconnect, a symbol this pod does not trade: left alone",
                          self.tag, theirs, sym)
                continue
            with self.http.lock:
                eng.adopt_broker_shares(theirs - ours)
            log.error("%s position break after the IB reconnect: %s %+d shares at IB that no execution explains "
                      "(book %d, IB %d), booked at the last mark", self.tag, sym, theirs - ours, ours, theirs)

    async def _service_ib(self) -> None:
        """Between bars: book what IB reported and send what waits (a flatten after a withdrawal)."""
        if self.ib_orders is None:
            return
        for eng in self._engines():
            await self._settle(eng, self.last_ts, owned=False)
            await self._send_decided(eng)

    # -- Redis health --------------------------------------------------------------------------
    def _redis_lost(self, exc: BaseException) -> None:
        now = self.monotonic()
        if self.redis_up or now - self._redis_log_at >= REDIS_LOG_EVERY_S:
            log.error("%s Redis unreachable (%s): refusing new orders, flattening, not ready", self.tag, exc)
            self._redis_log_at = now
        if self.redis_up:
            self.redis_up = False
            with self.http.lock:
                self.rmetrics.set_redis_up(False)
                self._enforce(self.last_ts)
        self._update_ready()

    @property
    def day_turnover_usd(self) -> float:
        """Notional traded today (USD): the governor's own count, restored with the engine."""
        return self.engine.governor_state.turnover_usd

    def _extra(self) -> dict:
        return {
            "day_turnover_usd": self.day_turnover_usd,
            "bar_ts": self.last_ts.isoformat() if self.last_ts else "",
            "capital_usd": self.s.capital_usd,
            "model_uri": self.s.model_uri,
            "stage": self.s.stage,
        }

    async def _save(self) -> None:
        """Write the book of the current day (one pipeline) and catch up with the latch."""
        if self.store is None or not self.redis_up or self.day is None:
            return
        version = self._latch_version
        try:
            latch = await self.store.save(self.day, self.engine.snapshot(), self._extra())
        except StateUnavailable as exc:
            self._redis_lost(exc)
            return
        if latch is not None and version == self._latch_version and not self.latch.engaged:
            await self._latch_found(latch)

    async def _latch_found(self, raw: str) -> None:
        """The latch key is set but this pod has not seen the message: engage (never released this way)."""
        try:
            cmd = ks.parse(raw)
        except ks.BadKillMessage as exc:
            log.error("%s unreadable kill latch %r (%s): treating it as a kill", self.tag, raw[:80], exc)
            cmd = ks.KillCommand(ks.KILL, reason="unreadable latch", flatten=False)
        if cmd.action == ks.KILL and not self.latch.engaged:
            await self.on_kill(cmd, time.time(), write_latch=False)

    async def _recover(self, stop: asyncio.Event) -> None:
        """While Redis is down: ping every REDIS_RETRY_S; on success write the current state and resume."""
        assert self.store is not None
        while not stop.is_set():
            if not self.redis_up and self.loaded:
                try:
                    # orders stay blocked until the book is written and the latch re-read, so a
                    # kill published during the outage is honoured before anything trades
                    await self.store.ping()
                    if self.day is not None:
                        latch = await self.store.save(self.day, self.engine.snapshot(), self._extra())
                    else:
                        latch = await self.store.read_kill()
                    if latch is not None and not self.latch.engaged:
                        await self._latch_found(latch)
                    self.redis_up = True
                    self._redis_log_at = -math.inf
                    log.warning("%s Redis is back: state written, orders allowed again", self.tag)
                    with self.http.lock:
                        self.rmetrics.set_redis_up(True)
                except StateUnavailable as exc:
                    self._redis_lost(exc)
                self._update_ready()
            await wait_or_stop(stop, REDIS_RETRY_S)

    # -- kill switch ---------------------------------------------------------------------------
    async def on_resume(self, cmd: ks.KillCommand, received_at: float) -> dict | None:
        """Apply a resume (kill channel, action ``resume``) addressed to this role: lift the
        governor's halt, record who/why/when in its state, write the book at once, acknowledge.
        Returns the record, or None if the message is for the other role."""
        if cmd.role and cmd.role != self.s.role:
            return None
        at = datetime.fromtimestamp(received_at, timezone.utc).isoformat()
        with self.http.lock:
            rec = self.engine.resume(by=cmd.by, reason=cmd.reason, at=at)
        log.warning(
            "%s RESUME id=%s by=%r reason=%r: trading state %s (%s) -> %s", self.tag, cmd.id, cmd.by, cmd.reason,
            rec["trading_state"], rec["halt_reason"] or "-", rec["trading_state_after"],
        )
        if self.store is not None:
            await self._save()
            await self.store.ack(ks.ack_body(cmd, self.s.role, received_at, time.time()))
        return rec

    async def on_kill(self, cmd: ks.KillCommand, received_at: float, write_latch: bool = True) -> None:
        """Apply a kill or unkill: latch in memory, cancel / flatten, persist the latch, acknowledge.
        A resume message goes to :meth:`on_resume`."""
        if cmd.action == ks.RESUME:
            await self.on_resume(cmd, received_at)
            return
        async with self._latch_lock:
            self._latch_version += 1
            with self.http.lock:
                changed = self.latch.apply(cmd)
                self._enforce(self.last_ts)
                self.rmetrics.set_kill(self.latch.engaged)
            if cmd.action == ks.KILL:
                log.warning(
                    "%s KILL id=%s reason=%r flatten=%s: new orders blocked, working order cancelled%s",
                    self.tag, cmd.id, cmd.reason, cmd.flatten, ", flattening" if cmd.flatten else "",
                )
            elif changed:
                log.warning("%s UNKILL id=%s: orders allowed again", self.tag, cmd.id)
            if self.store is not None:
                await self._persist_kill(cmd, received_at, write_latch)
        # at IB (after the acknowledgement: the cancels went out with the latch): the withdrawn
        # orders booked once IB confirms, a kill's flatten sent now
        await self._service_ib()

    async def _persist_kill(self, cmd: ks.KillCommand, received_at: float, write_latch: bool) -> None:
        """Write the latch (or clear it) and acknowledge ``cmd`` on Redis."""
        assert self.store is not None
        if write_latch:
            await self.store.set_kill(cmd.to_json() if cmd.action == ks.KILL else None)
        acked = time.time()
        await self.store.ack(ks.ack_body(cmd, self.s.role, received_at, acked))
        if cmd.sent_at is not None:
            with self.http.lock:
                self.rmetrics.set_kill_ack(acked - cmd.sent_at)

    async def _on_subscribed(self) -> None:
        assert self.store is not None
        latch = await self.store.read_kill()
        if latch is not None and not self.latch.engaged:
            await self._latch_found(latch)

    def _listener_error(self, exc: Exception) -> None:
        if self.loaded:
            self._redis_lost(exc)

    # -- startup -------------------------------------------------------------------------------
    async def load(self, stop: asyncio.Event) -> bool:
        """Wait for Redis, restore the newest book and the latch. False if stopped first.

        Raises ValueError if the saved state cannot be read (the pod must not guess).
        """
        if self.store is None:
            return True
        while not stop.is_set():
            try:
                saved = await self.store.load()
                latch = await self.store.read_kill()
                intent = await self.store.read_intent()
                break
            except StateUnavailable as exc:
                now = self.monotonic()
                if now - self._redis_log_at >= REDIS_LOG_EVERY_S:
                    log.error("%s Redis unreachable at startup (%s): waiting, not ready", self.tag, exc)
                    self._redis_log_at = now
                self._update_ready()
                await wait_or_stop(stop, REDIS_RETRY_S)
        else:
            return False
        if saved is not None:
            day, snap, extra = saved
            old_cap = extra.get("capital_usd")
            saved_symbols = sorted(snap["symbols"]) if isinstance(snap.get("symbols"), dict) else None
            mine = sorted(self.engine.symbols) if isinstance(self.engine, Portfolio) else None
            if (saved_symbols is None) != (mine is None) or saved_symbols != mine:
                # the strategy's symbols changed under a book that is still in force: never guess a book
                was = ", ".join(saved_symbols) if saved_symbols else "one symbol"
                raise ValueError(f"the book {self.store.keys.book(day)} trades {was}, this pod {', '.join(self.s.symbols or (self.s.symbol,))}: "
                                 "restore the strategy's symbols, or flatten that book and delete it")
            self.engine.restore(snap)
            if isinstance(old_cap, (int, float)) and old_cap != self.s.capital_usd:
                # keep the USD distance to the (one, the governor's) peak when the stage's capital changes
                self.engine.rebase_capital(self.s.capital_usd - old_cap)
                log.warning("%s capital changed %.2f -> %.2f: peaks rebased", self.tag, old_cap, self.s.capital_usd)
            bar_ts = extra.get("bar_ts") or ""
            self.last_ts = datetime.fromisoformat(bar_ts) if bar_ts else None
            self.day = day
            if extra.get("model_uri") not in (None, self.s.model_uri):
                log.warning("%s resuming the book of model %s", self.tag, extra.get("model_uri"))
            st = self.engine.stats()
            log.info(
                "%s resumed from %s after bar %s: position=%d pnl=%.2f day_pnl=%.2f peak_equity=%.2f bars=%d",
                self.tag, self.store.keys.book(day), bar_ts or "-", st.position_qty, st.pnl_usd, st.day_pnl_usd,
                self.engine.peak_equity, st.bars,
            )
        else:
            log.info("%s no saved state in Redis: starting flat", self.tag)
        self._recover_orders(intent)
        if self.s.allocation_key:
            while not await self.refresh_allocation():
                if not self._awaiting_allocation:
                    log.warning("%s no live allocation at %s yet: not trading", self.tag, self.s.allocation_key)
                self._awaiting_allocation = True
                self._update_ready()
                await wait_or_stop(stop, REDIS_RETRY_S)
                if stop.is_set():
                    return False
            self._awaiting_allocation = False
        self.loaded = True
        self.redis_up = True
        self.rmetrics.set_redis_up(True)
        if latch is not None:
            await self._latch_found(latch)
        self._update_ready()
        return True

    async def refresh_allocation(self) -> bool:
        """Read the live allocation (``QR_ALLOCATION_KEY``) and apply it if it changed; returns
        whether one is in force. A missing or malformed record keeps the one in force (logged);
        with none yet the pod is not ready and does not trade. A Redis failure is a Redis outage."""
        if not self.s.allocation_key or self.store is None:
            return True
        try:
            raw = await self.store.client.get(self.s.allocation_key)
        except Exception as exc:  # noqa: BLE001 - any Redis failure: the outage rules
            self._redis_lost(exc)
            return self.allocation is not None
        if raw is None or raw == self._allocation_raw:
            return self.allocation is not None
        self._allocation_raw = raw
        try:
            new = alloc.Allocation.parse(raw)
        except ValueError as exc:
            log.error("%s live allocation at %s refused (%s): keeping %s", self.tag, self.s.allocation_key, exc, self.allocation)
            return self.allocation is not None
        self.apply_allocation(new)
        return True

    def apply_allocation(self, a: alloc.Allocation) -> None:
        """Apply ``a`` in place: engine capital and limits (every capital-scaled limit re-derived at
        the new capital, as at a restart; peaks rebased by the change in USD), settings, the
        capital gauge. No restart, no lost day P&L or daily-loss state (review B11)."""
        try:
            limits = self.s.limits_at(a.capital_usd, a.max_position_usd, a.max_order_usd, a.max_daily_loss_usd)
        except ValueError as exc:
            log.error("%s live allocation %s refused (%s): keeping %s", self.tag, a, exc, self.allocation)
            return
        old = self.s.capital_usd
        with self.http.lock:
            self.engine.reallocate(a.capital_usd, limits)
            self.s = replace(self.s, capital_usd=a.capital_usd, max_position_usd=a.max_position_usd,
                             max_order_usd=a.max_order_usd, max_daily_loss_usd=a.max_daily_loss_usd, limits=limits)
            self.metrics.set_capital(a.capital_usd)
            self._enforce(self.last_ts)
        self.allocation = a
        log.warning("%s live allocation: capital %.2f -> %.2f USD, max position %.2f, max order %.2f, max daily loss %.2f",
                    self.tag, old, a.capital_usd, a.max_position_usd, a.max_order_usd, a.max_daily_loss_usd)

    async def _write_ahead(self, eng: Engine) -> None:
        """Write the intent of the order ``eng`` (the engine of the bar's symbol) will send next
        (deterministic id) before the broker sees it (review D12). Each order is written just
        before it is sent, so the one intent kept is the one a crash may have sent. If Redis fails
        here, the outage rules apply at once: a risk-adding order is withheld; a flatten still goes
        (unjournalled: reducing risk comes first, and the restart reconciles with the broker of
        record)."""
        order = eng.next_order()
        if order is None or self.store is None or not self.redis_up:
            return
        if self.ib_orders is not None and order.order_id in self.ib_orders.sent:
            return  # written when it was sent to IB, at its decision
        try:
            await self.store.write_intent(order.order_id, order.symbol, order.qty, order.closing)
        except StateUnavailable as exc:
            self._redis_lost(exc)

    def _recover_orders(self, intent: dict | None) -> None:
        """After a restore and before any trading: never re-send an order whose intent was written
        ahead (it may have reached the broker before the crash), then reconcile positions with the
        broker (review D12, D13)."""
        if intent is not None:
            what = self.engine.recover_intent(str(intent.get("id", "")))
            if what == "abandoned":
                log.error(
                    "%s order %s (%+d) was written ahead before the restart and may have been sent: not re-sent",
                    self.tag, intent.get("id"), int(intent.get("qty", 0)),
                )
            elif what == "resend":
                log.warning("%s order %s was written ahead but never reached the broker: sent on the next bar",
                            self.tag, intent.get("id"))
        diff = self.engine.reconcile()
        if diff:
            log.error("%s position reconciled with the broker of record: %+d shares booked at the last mark", self.tag, diff)

    # -- the bar loop ----------------------------------------------------------------------------
    async def on_bar(self, bar: Bar, feed_latency_s: float) -> StepResult:
        """Process one bar: pause gate, engine step, gates, metrics, then the durable write."""
        if self.gate.observe(feed_latency_s, self.monotonic()):
            log.warning(
                "%s pause gate open: feed latency under %.0f ms for %.1f s", self.tag,
                self.s.pause_max_latency_s * 1000, self.s.pause_window_s,
            )
        # the newest local trading date over the symbols (their exchanges' dates; monotonic)
        self.day = max(self.day or "", self._engine_of(bar).calendar.local_date(bar.ts).isoformat())
        await self.refresh_allocation()
        eng = self._engine_of(bar)
        await self._settle(eng, bar.ts)
        await self._write_ahead(eng)
        with self.http.lock:
            step = self.engine.on_bar(bar)
            self.last_ts, self._last_cal = bar.ts, eng.calendar
            self._enforce(bar.ts)
        await self._send_decided(eng)
        with self.http.lock:
            self.metrics.observe(step, self.engine.stats())
            self.metrics.set_trading_date(self.day)
            self.rmetrics.set_paused(self.gate.paused)
            self.rmetrics.set_feed_latency(feed_latency_s)
        self.processed += 1
        self._check_order_cap(bar)
        self._bar_arrival = self.monotonic()
        self.feed_stale = False
        await self._save()
        self._update_ready()
        return step

    def _check_order_cap(self, bar: Bar) -> None:
        """Say loudly (once) when the single-trade limit is below one share of the symbol: such a
        pod can never open a position (review D2: the seed profile at its own $1,000 reference
        capital has a $50 limit, below one share of any stock above $50)."""
        cap = self.engine.limits.max_order_usd
        if not self._order_cap_warned and 0.0 < cap < bar.close:
            self._order_cap_warned = True
            log.error(
                "%s the single-trade limit %.2f USD is below one share of %s at %.2f USD: this pod can never open a "
                "position (raise QR_CAPITAL_USD with QR_RISK_PROFILE=seed, or QR_MAX_ORDER_USD)",
                self.tag, cap, bar.symbol or self.s.symbol, bar.close,
            )

    # -- wall-clock duties (review D8) -----------------------------------------------------------
    def market_now(self) -> datetime | None:
        """Market time now on the wall clock: the last bar's close plus the wall time since it
        arrived, scaled by the pacing (bar_seconds market seconds per QR_BAR_INTERVAL_SECONDS
        wall seconds; 1:1 live). None before the first bar or when unpaced (interval 0)."""
        if self.feed is not None:  # live bars: market time is the wall clock
            return None if self.last_ts is None or self._bar_arrival is None else self.wall_clock()
        if self.last_ts is None or self._bar_arrival is None or self.s.bar_interval_s <= 0:
            return None
        bar_s = self.engine.config.bar_seconds
        ratio = bar_s / self.s.bar_interval_s
        return self._last_calendar().price_time(self.last_ts, bar_s) + \
            timedelta(seconds=(self.monotonic() - self._bar_arrival) * ratio)

    async def tick(self) -> StepResult | None:
        """The wall-clock duties, run between bars: when the feed has been silent for more than
        1.5 bars, (1) flatten at once if the end-of-day window (or the close) has been reached
        on the wall clock, (2) report not ready once it has been silent longer than the
        governor's max price age. Returns the flatten's result, if one was sent."""
        await self._service_ib()
        now = self.market_now()
        if now is None:
            return None
        bar_s = self.engine.config.bar_seconds
        cal = self._last_calendar()
        last_close = cal.price_time(self.last_ts, bar_s)
        silent_s = (now - last_close).total_seconds()  # market seconds since the last close
        wall_silent_s = self.monotonic() - self._bar_arrival
        if silent_s <= 0.5 * bar_s or wall_silent_s < WATCHDOG_MIN_WALL_S:
            return None  # (an accelerated replay's scheduling hiccup is no silent feed)
        done = None
        for eng in self._engines():
            # (daily bars hold positions across sessions: no end-of-day flatten, by bar or by wall clock)
            if not (eng.live.position and not eng.holds_overnight and eng.sessions.phase(now) <= 0):
                continue
            done = await self._flatten_at_once(eng, now)
            log.warning("%s feed silent at the end of day (%s UTC on the wall clock): %s flattened",
                        self.tag, now.astimezone(timezone.utc).isoformat(), eng.config.symbol)
            with self.http.lock:
                self.metrics.observe(StepResult(ts=now), self.engine.stats())
            await self._save()
        # stale: no close within the max price age after the one due next (intraday: the next bar's;
        # daily: the next session's close, so nights, weekends and holidays are no silence)
        due = cal.price_time(cal.fill_time(self.last_ts, bar_s), bar_s) if sess.is_daily(bar_s) else last_close
        stale = (now - due).total_seconds() > self.engine.limits.max_price_age_s
        if stale and not self.feed_stale:
            log.error("%s no bar for %.0f market seconds: feed stale, not ready", self.tag, silent_s)
        self.feed_stale = stale
        self._update_ready()
        return done

    async def retire_if_retired(self) -> dict | None:
        """On stop: if the operator no longer runs this pod's book scope for its role (key
        ``quantramp:{ns}:{strategy}:{role}:scope`` says another scope, or none), this pod is retired
        (a rolled-back or replaced challenger, a replaced champion version): flatten at once at the
        last mark, as the end-of-day flatten does (written ahead, then sent; risk-reducing, so no
        control blocks it), save the book and write the stop record (``...:retired``: scope,
        position left, flat). A pod stopped for a restart of its own scope keeps its position.
        Returns the record, or None (not retired, no Redis, or Redis failed: logged)."""
        store = self.store
        if store is None or not self.loaded:
            return None
        mine = store.keys.stage
        try:
            live = await store.client.get(store.keys.live_scope)
        except Exception as exc:  # noqa: BLE001 - cannot tell: keep the position (a restart is the safe guess)
            log.error("%s stopping: cannot read the live scope (%s): position kept", self.tag, exc)
            return None
        if live is None or live == mine:
            return None
        for eng in self._engines():
            await self._settle(eng, self.last_ts)
            if eng.live.position and self.last_ts is not None:
                await self._flatten_at_once(eng, self.last_ts)
                with self.http.lock:
                    self.metrics.observe(StepResult(ts=self.last_ts), self.engine.stats())
            elif eng.working_qty:
                with self.http.lock:
                    self._replace_working(eng, eng.cancel_working)
        await self._save()
        left = {e.config.symbol: e.live.position for e in self._engines() if e.live.position}
        # position_qty: the one symbol's signed shares; of several, the gross shares (each in "positions")
        qty = sum(left.values()) if len(left) <= 1 else sum(abs(q) for q in left.values())
        rec = {"scope": mine, "position_qty": qty, "flat": not left, "at": time.time()}
        if isinstance(self.engine, Portfolio):
            rec["positions"] = left
        try:
            await store.client.set(store.keys.retired, json.dumps(rec), ex=STATE_ACK_TTL_S)
        except Exception as exc:  # noqa: BLE001 - the book itself shows the position
            log.error("%s retired: cannot write the stop record (%s)", self.tag, exc)
        log.warning("%s retired (the operator runs scope %r for this role): %s", self.tag, live,
                    "flat" if rec["flat"] else f"{rec['position_qty']} shares LEFT OPEN")
        return rec

    async def _connect_ib(self, stop: asyncio.Event) -> bool:
        """With QR_BROKER=ib: connect to TWS / IB Gateway and reconcile (IB's open orders of this
        client cancelled, its positions read) before anything else; not ready meanwhile, retrying
        with back-off (trader/ib.py). False if stopped first."""
        if self.ib_orders is None:
            return True
        ib = self.ib_orders.ib
        cfg = ib.config
        log.info("%s connecting to Interactive Brokers at %s:%d (clientId %d, %s)", self.tag, cfg.host, cfg.api_port,
                 cfg.client_id, cfg.mode)
        ib_log_at = -math.inf  # the "not reachable" line at most every REDIS_LOG_EVERY_S
        while not stop.is_set():
            try:
                await ib.start(timeout=1.0)
            except asyncio.TimeoutError:
                self._update_ready()
                if ib.connect_failures and self.monotonic() - ib_log_at >= REDIS_LOG_EVERY_S:
                    ib_log_at = self.monotonic()
                    log.error("%s Interactive Brokers not reachable (%s): not trading, retrying", self.tag, ib.last_error)
                continue
            rep = self._ib_report = ib.last_reconcile  # the start-up's: adopted by Engine.reconcile at load
            log.warning("%s Interactive Brokers ready: positions %s, %d orders of an earlier life cancelled, %d fills booked",
                        self.tag, ib.positions() or "flat", len(rep.cancelled) if rep else 0,
                        rep.executions_booked if rep else 0)
            return True
        return False

    async def _flatten_at_once(self, eng: Engine, ts: datetime) -> StepResult | None:
        """Flatten ``eng`` now, between bars (the wall-clock end of day, retirement): the closing order
        replaces the working one, is written ahead like every order (D12) and sent; at IB it is sent
        at once and awaited (bounded) before it is booked, and it keeps working until filled."""
        await self._settle(eng, ts)
        with self.http.lock:
            self._replace_working(eng, lambda: eng.flatten_next(ts))  # the closing order, with its id
        if self.ib_orders is not None:
            await self._send_decided(eng)  # (written ahead there)
            await self.ib_orders.settle(eng.config.symbol)
        else:
            await self._write_ahead(eng)
        with self.http.lock:
            return eng.execute_working_now(ts)

    async def _follow(self, stop: asyncio.Event, max_bars: int | None) -> None:
        """Live bars (:mod:`.livefeed`): warm the engines up on the history they have not seen
        (:meth:`~.engine.Engine.prime`: no decision, no order), then trade each bar as it completes.
        A bar that arrives later than the governor's max price age after its close (missed while
        the feed was away) primes, never trades. Raises MarketDataError when the history cannot be
        read (the pod refuses to trade)."""
        assert self.feed is not None
        history = await self.feed.start()
        seen: dict[str, datetime | None] = {}  # the newest bar of each symbol primed or traded
        primed = 0
        with self.http.lock:
            for bar in merged(history, self.last_ts):
                if self.engine.prime(bar):
                    primed += 1
                    seen[bar.symbol] = self.last_ts = bar.ts
                    self._last_cal = self._engine_of(bar).calendar
        self._bar_arrival = self.monotonic()
        log.info("%s following %s: warmed up on %d bars, trading from the next one", self.tag, self.feed.describe(), primed)
        bar_s = self.engine.config.bar_seconds
        while not stop.is_set():
            for bar in await self.feed.next(stop):
                if stop.is_set():
                    break
                last = seen.get(bar.symbol, self.last_ts)
                if last is not None and bar.ts <= last:
                    continue
                seen[bar.symbol] = bar.ts
                late = (self.wall_clock() - self._engine_of(bar).calendar.price_time(bar.ts, bar_s)).total_seconds()
                if late > self.engine.limits.max_price_age_s:
                    with self.http.lock:
                        self.engine.prime(bar)
                        if self.last_ts is None or bar.ts >= self.last_ts:
                            self.last_ts, self._last_cal = bar.ts, self._engine_of(bar).calendar
                    log.warning("%s bar %s %s came %.0f s after its close: warms up, not traded", self.tag,
                                bar.symbol or self.s.symbol, bar.ts.isoformat(), late)
                    continue
                await self.on_bar(bar, max(0.0, late))
                if self.processed % LOG_EVERY_BARS == 0:
                    self._log_progress(bar)
                if max_bars is not None and self.processed >= max_bars:
                    return

    async def _watchdog(self, stop: asyncio.Event) -> None:
        """Run :meth:`tick` every half bar of wall time until ``stop``."""
        period = max(0.01, 0.5 * (self.engine.config.bar_seconds if self.feed is not None else self.s.bar_interval_s))
        while not stop.is_set():
            await wait_or_stop(stop, period)
            if not stop.is_set():
                await self.tick()

    async def run(self, stop: asyncio.Event, max_bars: int | None = None) -> int:
        """Load, then trade paced bars until ``stop`` or ``max_bars``; returns the bars processed."""
        if not await self._connect_ib(stop):
            return 0
        if not await self.load(stop):
            return 0
        if self.store is None and self.ib_orders is not None:
            self._recover_orders(None)  # (dev mode: no saved book, but IB's positions are adopted)
        with self.http.lock:
            self._enforce(self.last_ts)
        tasks = []
        if self.store is not None:
            tasks.append(asyncio.create_task(ks.listen(
                self.store.client, self.store.keys.kill, self.on_kill, self._on_subscribed, self._listener_error, stop,
                retry_s=REDIS_RETRY_S,
            )))
            tasks.append(asyncio.create_task(self._recover(stop)))
        interval = self.s.bar_interval_s
        if interval > 0 or self.feed is not None:
            tasks.append(asyncio.create_task(self._watchdog(stop)))
        try:
            if self.feed is not None:
                await self._follow(stop, max_bars)
                return self.processed
            start = self.monotonic()
            i, prev_ts = -1, None
            for bar in replay_from(self.bars, self.last_ts, self.engine.config.bar_seconds, self._calendars()):
                if stop.is_set():
                    break
                if bar.ts != prev_ts:  # the symbols' bars of one time share its slot
                    i, prev_ts = i + 1, bar.ts
                due = start + i * interval
                if interval > 0:
                    delay = due - self.monotonic()
                    if delay > 0:
                        await wait_or_stop(stop, delay)
                        if stop.is_set():
                            break
                    lateness = max(0.0, self.monotonic() - due)
                else:
                    await asyncio.sleep(0)  # let the kill listener in
                    lateness = 0.0
                await self.on_bar(bar, lateness)
                if self.processed % LOG_EVERY_BARS == 0:
                    self._log_progress(bar)
                if max_bars is not None and self.processed >= max_bars:
                    break
            if stop.is_set():
                await self.retire_if_retired()
        finally:
            stop.set()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return self.processed

    def _log_progress(self, bar: Bar) -> None:
        st = self.engine.stats()
        log.info(
            "%s bars=%d ts=%s pnl=%.2f sim_pnl=%.2f drawdown=%.4f trades=%d position=%d precision=%s%s",
            self.tag, st.bars, bar.ts.isoformat(), st.pnl_usd, st.simulated_pnl_usd, st.drawdown_ratio,
            st.trades, st.position_qty, "-" if st.precision_ratio is None else f"{st.precision_ratio:.3f}",
            "".join(f" blocked={r}" for r in [self.block_reason()] if r),
        )


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` or until ``stop`` is set, whichever comes first; returns whether it is set."""
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass
    return stop.is_set()


async def _serve(
    s: TraderSettings, engine: Engine | Portfolio, bars: Bars | Mapping[str, Bars], metrics: TraderMetrics, http: _State,
    stop: threading.Event, max_bars: int | None, feed: LiveFeed | None = None,
    wall_clock: Callable[[], datetime] | None = None,
) -> int:
    """Run the pod's runtime (``run``'s asyncio part): Redis, the IB broker (QR_BROKER=ib), the live feed
    (``feed``); returns the exit code. ``wall_clock``: the pod's clock for live bars (default the system's)."""
    store = None
    if s.redis_url:
        store = StateStore(connect(s.redis_url, s.redis_username, s.redis_password),
                           Keys(s.namespace, s.strategy, s.role, s.book_scope or s.stage))
    else:
        log.warning(
            "!!! %s DEV MODE: REDIS_URL is not set: no durable state (positions, P&L and peak equity are lost "
            "on restart) and NO KILL SWITCH listener. Never run real capital like this. !!!",
            f"strategy={s.strategy} role={s.role}",
        )
    ib_orders = None
    if s.broker == "ib":
        ib_orders = IBOrders(IBBroker(s.ib), paper=s.ib.mode == "paper", fee_schedule=s.fee_schedule(),
                             settle_timeout_s=s.ib_settle_s)
        for eng in (engine.engines.values() if isinstance(engine, Portfolio) else [engine]):
            eng.broker = ib_orders
    rt = Runtime(s, engine, bars, metrics, http, store, ib_orders=ib_orders, feed=feed,
                 **({"wall_clock": wall_clock} if wall_clock is not None else {}))
    astop = asyncio.Event()

    async def watch() -> None:
        while not astop.is_set():
            if stop.is_set():
                astop.set()
                return
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        n = await rt.run(astop, max_bars)
    finally:
        astop.set()
        await watcher
        if store is not None:
            await store.close()
        if ib_orders is not None:
            await ib_orders.ib.stop()
        if feed is not None:
            await feed.close()
    log.info("%s stopping after %d bars", rt.tag, n)
    return 0


#: where Kubernetes takes a stopped container's message from (the pod spec's default terminationMessagePath;
#: the kubelet mounts it writable even on a read-only root filesystem): the operator shows it in TradersReady
TERMINATION_LOG = "/dev/termination-log"


def refuse(message: str, code: int, env: Mapping[str, str]) -> int:
    """Say why the trader will not run, on stderr and in the termination log (``QR_TERMINATION_LOG``, default
    :data:`TERMINATION_LOG`; only a file that exists is written, never created: outside a pod nothing is), and
    return ``code``. Kubernetes keeps at most 4096 bytes of it."""
    line = f"quantramp-trader: {message}"
    print(line, file=sys.stderr)
    try:
        fd = os.open(env.get("QR_TERMINATION_LOG", TERMINATION_LOG), os.O_WRONLY | os.O_TRUNC)
    except OSError:
        return code
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(line.encode("utf-8")[:4000].decode("utf-8", "ignore"))
    return code


def build_engine(s: TraderSettings, model, reference=None) -> Engine | Portfolio:
    """The pod's engine for ``s``: one :class:`~.engine.Engine` for one symbol; for several, a
    :class:`~.portfolio.Portfolio` of one engine per symbol (capital split equally, one governor
    on the role's limits). SimBrokers seeded from the strategy and role (and symbol), the fee
    schedule of ``s``; ``reference``: the champion's model for paired evidence (or None)."""
    seed = stable_seed(s.namespace, s.strategy, s.role)
    if len(s.symbols) <= 1:
        engine = make_engine(model, s.engine_config(), None, seed=seed, fees=s.fee_schedule())
        engine.reference = reference
        return engine
    engines = {}
    for x in s.symbols:
        engines[x] = make_engine(model, s.engine_config(x), None, seed=stable_seed(str(seed), x), fees=s.fee_schedule())
        engines[x].reference = reference
    return Portfolio(engines, s.engine_config().limits)


def run(env: Mapping[str, str], stop: threading.Event | None = None, max_bars: int | None = None) -> int:
    """Run the trader until stopped (or ``max_bars``); returns the process exit code."""
    stop = stop or threading.Event()
    try:
        s = TraderSettings.from_env(env)
    except ConfigError as exc:
        return refuse(f"bad configuration: {exc}", EXIT_CONFIG, env)
    metrics = TraderMetrics(s.strategy, s.role, s.symbol, stage=s.stage, scope=s.book_scope, symbols=s.symbols)
    metrics.set_capital(s.capital_usd)
    state = _State(metrics)
    servers: list[ThreadingHTTPServer] = []
    try:
        for host in listen_addresses(s.pod_ip):
            servers.append(start_http(host, s.port, state))
    except (OSError, ValueError) as exc:
        for srv in servers:
            srv.shutdown()
            srv.server_close()
        return refuse(f"cannot listen on {s.pod_ip}:{s.port}: {exc}", EXIT_CONFIG, env)
    try:
        symbols = s.symbols or (s.symbol,)
        feed: LiveFeed | None = None
        try:
            if s.follow:
                # live: the history is read by the feed inside the runtime (warm-up), then followed
                feed = IBFeed(s.ib, tuple(symbols), s.bar_seconds) if s.bars.kind == "ib" else \
                    PollingFeed(s.bars.source(s.calendars), tuple(symbols), s.bar_seconds, poll_s=s.poll_s)
                log.info("bars of %s from %s", ", ".join(symbols), feed.describe())
                history = {}
            else:
                source = s.bars.source(s.calendars)
                log.info("bars of %s from %s", ", ".join(symbols), source.describe())
                history = {x: check_spacing(source.history(x), s.bar_seconds, source.describe(), source.calendar_of(x))
                           for x in symbols}
            model = load_model(s.model_uri, s.tracking_uri)
        except (MarketDataError, ModelLoadError) as exc:
            return refuse(f"refusing to trade: {exc}", EXIT_LOAD, env)
        reference = None
        if s.reference_model_uri:
            # evidence only (the paired precision stream): a reference that cannot load costs that
            # stream (the criterion then stays without data), never the trading
            try:
                reference = load_model(s.reference_model_uri, s.tracking_uri)
            except ModelLoadError as exc:
                log.warning("reference model %s not loaded, no paired precision evidence: %s", s.reference_model_uri, exc)
            if reference is not None and getattr(reference, "feature_spec", None) != getattr(model, "feature_spec", None):
                # the reference is fed this model's feature rows: other features would be compared wrongly
                log.warning("reference model %s computes other features than %s: no paired precision evidence",
                            s.reference_model_uri, s.model_uri)
                reference = None
        engine = build_engine(s, model, reference)
        bars: Bars | dict[str, Bars] = history if len(symbols) > 1 or feed is not None else history[symbols[0]]
        log.info(
            "strategy=%s role=%s stage=%s started model=%s serving=%r capital_usd=%.2f paper=%s threshold=%.3f "
            "limits=%s listening=%s:%d start_paused=%s state=%s",
            s.strategy, s.role, s.stage or "-", s.model_uri, (getattr(model, "info", None) or {}).get("serving", "-"),
            s.capital_usd, s.paper, s.entry_threshold, engine.limits,
            s.pod_ip, s.port, s.start_paused, "redis" if s.redis_url else "NONE (dev mode)",
        )
        try:
            return asyncio.run(_serve(s, engine, bars, metrics, state, stop, max_bars, feed))
        except MarketDataError as exc:
            return refuse(f"refusing to trade: {exc}", EXIT_LOAD, env)
        except (ValueError, KeyError) as exc:
            return refuse(f"refusing to trade: saved state unreadable: {exc!r}", EXIT_LOAD, env)
    finally:
        for srv in servers:
            srv.shutdown()
            srv.server_close()


def main(env: Mapping[str, str]) -> int:
    """Entry for ``quantramp-trader run``: logging (``QR_LOG_FORMAT`` text or json, :mod:`.logs`), signal
    handling, :func:`run`."""
    from . import logs

    try:
        logs.configure(logging.INFO, (env.get("QR_LOG_FORMAT") or "text").strip().lower())
    except ValueError as exc:
        logs.configure(logging.INFO, "text")
        return refuse(f"bad configuration: QR_LOG_FORMAT: {exc}", EXIT_CONFIG, env)
    stop = threading.Event()

    def _stop(signum, _frame) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return run(env, stop)
