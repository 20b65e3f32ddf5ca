"""The trader process: env contract -> model -> replay loop, with /metrics /healthz /readyz.

HTTP runs in a stdlib ``ThreadingHTTPServer`` thread on POD_IP:QR_PORT; the
main thread runs the replay loop. SIGTERM/SIGINT stop both and exit 0.
Exit codes: 0 stopped cleanly, 2 bad configuration, 3 model or market data
could not be loaded (the trader refuses to trade rather than guess).
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Mapping

from . import governor as gov
from .backtest import make_engine, stable_seed
from .engine import (
    DEFAULT_DAILY_LOSS_FRACTION,
    DEFAULT_ENTRY_THRESHOLD,
    DEFAULT_ORDER_FRACTION,
    DEFAULT_POSITION_FRACTION,
    EngineConfig,
)
from .marketdata import SUPPORTED_SYMBOLS, MarketDataError, load_minute_bars, replay
from .metrics import CONTENT_TYPE, TraderMetrics
from .model import ModelLoadError, load_model

log = logging.getLogger("quantramp.trader")

ROLES = ("champion", "challenger")
#: one log line every this many bars
LOG_EVERY_BARS = 100
EXIT_CONFIG = 2
EXIT_LOAD = 3


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
        symbols = [s.strip().upper() for s in text("QR_SYMBOLS", "AAPL").split(",") if s.strip()]
        unknown = [s for s in symbols if s not in SUPPORTED_SYMBOLS]
        if unknown:
            errors.append(
                f"QR_SYMBOLS: no market data for {', '.join(unknown)} (only {', '.join(SUPPORTED_SYMBOLS)} has minute bars)"
            )
        if len(set(symbols)) > 1:
            errors.append("QR_SYMBOLS: one symbol per trader")
        capital = number("QR_CAPITAL_USD")
        paper_raw = text("QR_PAPER", "false").lower()
        if paper_raw not in ("true", "false", "1", "0", "yes", "no"):
            errors.append(f"QR_PAPER={paper_raw!r} must be true or false")
        paper = paper_raw in ("true", "1", "yes")
        interval = number("QR_BAR_INTERVAL_SECONDS", 60.0, positive=False)
        cap = capital if math.isfinite(capital) and capital > 0 else float("nan")

        def limit(name: str, fraction: float) -> float:
            # default: a fraction of the capital (nan if the capital is invalid, already reported)
            return number(name, fraction * cap) if env.get(name, "").strip() else fraction * cap

        max_pos = limit("QR_MAX_POSITION_USD", DEFAULT_POSITION_FRACTION)
        max_loss = limit("QR_MAX_DAILY_LOSS_USD", DEFAULT_DAILY_LOSS_FRACTION)
        max_order = limit("QR_MAX_ORDER_USD", DEFAULT_ORDER_FRACTION)
        threshold = number("QR_ENTRY_THRESHOLD", DEFAULT_ENTRY_THRESHOLD, positive=False)
        if math.isfinite(threshold) and threshold >= 0.5:
            errors.append(f"QR_ENTRY_THRESHOLD={threshold} must be below 0.5")
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
        )

    def engine_config(self) -> EngineConfig:
        """The engine configuration these settings describe."""
        return EngineConfig(
            capital_usd=self.capital_usd,
            limits=gov.RiskLimits(
                max_order_usd=self.max_order_usd,
                max_position_usd=self.max_position_usd,
                max_daily_loss_usd=self.max_daily_loss_usd,
            ),
            entry_threshold=self.entry_threshold,
            paper=self.paper,
            symbol=self.symbol,
        )


class _State:
    def __init__(self, metrics: TraderMetrics) -> None:
        self.metrics = metrics
        self.ready = False
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
                    self._send(503, b"not ready: model loaded, waiting for the first bar\n")
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


def run(env: Mapping[str, str], stop: threading.Event | None = None, max_bars: int | None = None) -> int:
    """Run the trader until stopped (or ``max_bars``); returns the process exit code."""
    stop = stop or threading.Event()
    try:
        s = TraderSettings.from_env(env)
    except ConfigError as exc:
        print(f"quantramp-trader: bad configuration: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    tag = f"strategy={s.strategy} role={s.role} stage={s.stage or '-'}"
    metrics = TraderMetrics(s.strategy, s.role, s.symbol, stage=s.stage)
    metrics.set_capital(s.capital_usd)
    state = _State(metrics)
    try:
        srv = start_http(s.pod_ip, s.port, state)
    except OSError as exc:
        print(f"quantramp-trader: cannot listen on {s.pod_ip}:{s.port}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        try:
            bars = load_minute_bars(s.symbol)
            model = load_model(s.model_uri, s.tracking_uri)
        except (MarketDataError, ModelLoadError) as exc:
            print(f"quantramp-trader: refusing to trade: {exc}", file=sys.stderr)
            return EXIT_LOAD
        cfg = s.engine_config()
        engine = make_engine(model, cfg, bars, seed=stable_seed(s.namespace, s.strategy, s.role))
        log.info(
            "%s started model=%s capital_usd=%.2f paper=%s threshold=%.3f limits=%s listening=%s:%d",
            tag, s.model_uri, s.capital_usd, s.paper, s.entry_threshold, cfg.limits, s.pod_ip, s.port,
        )
        n = 0
        for bar in replay(bars, s.bar_interval_s, sleep=stop.wait):
            if stop.is_set():
                break
            with state.lock:
                step = engine.on_bar(bar)
                metrics.observe(step, engine.stats())
            state.ready = True
            n += 1
            if n % LOG_EVERY_BARS == 0:
                st = engine.stats()
                log.info(
                    "%s bars=%d ts=%s pnl=%.2f sim_pnl=%.2f drawdown=%.4f trades=%d position=%d precision=%s",
                    tag, st.bars, bar.ts.isoformat(), st.pnl_usd, st.simulated_pnl_usd, st.drawdown_ratio,
                    st.trades, st.position_qty,
                    "-" if st.precision_ratio is None else f"{st.precision_ratio:.3f}",
                )
            if max_bars is not None and n >= max_bars:
                break
        log.info("%s stopping after %d bars", tag, n)
        return 0
    finally:
        srv.shutdown()
        srv.server_close()


def main(env: Mapping[str, str]) -> int:
    """Entry for ``quantramp-trader run``: logging, signal handling, :func:`run`."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stdout)
    stop = threading.Event()

    def _stop(signum, _frame) -> None:
        log.info("signal %d: stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return run(env, stop)
