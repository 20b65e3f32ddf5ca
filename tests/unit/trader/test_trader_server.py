"""Env contract parsing and the HTTP endpoints."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from quantramp.trader import server as S
from quantramp.trader.metrics import TraderMetrics

BASE = {
    "QR_STRATEGY": "aapl-meanrev",
    "QR_NAMESPACE": "trading",
    "QR_ROLE": "challenger",
    "QR_STAGE": "canary-1",
    "QR_MODEL_URI": "models:/aapl-meanrev/2",
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
    "QR_SYMBOLS": "AAPL",
    "QR_CAPITAL_USD": "1000",
    "QR_PAPER": "false",
    "QR_BAR_INTERVAL_SECONDS": "0.05",
    "QR_MAX_POSITION_USD": "500",
    "QR_MAX_DAILY_LOSS_USD": "8",
    "QR_MAX_ORDER_USD": "1000",
    "QR_ENTRY_THRESHOLD": "0.02",
    "POD_IP": "127.0.0.10",
    "QR_PORT": "8080",
}


def test_full_contract_parses():
    s = S.TraderSettings.from_env(BASE)
    assert (s.strategy, s.namespace, s.role, s.stage) == ("aapl-meanrev", "trading", "challenger", "canary-1")
    assert s.capital_usd == 1000.0 and s.paper is False and s.bar_interval_s == 0.05
    assert (s.max_position_usd, s.max_daily_loss_usd, s.max_order_usd) == (500.0, 8.0, 1000.0)
    assert s.entry_threshold == 0.02 and s.pod_ip == "127.0.0.10" and s.port == 8080 and s.symbol == "AAPL"
    cfg = s.engine_config()
    assert cfg.limits.max_daily_loss_usd == 8.0 and cfg.capital_usd == 1000.0


def test_defaults_derive_limits_from_capital():
    env = {k: v for k, v in BASE.items() if not k.startswith("QR_MAX") and k not in ("POD_IP", "QR_PORT", "QR_PAPER")}
    env["QR_CAPITAL_USD"] = "100000"
    s = S.TraderSettings.from_env(env)
    assert s.max_position_usd == 50_000.0 and s.max_order_usd == 100_000.0 and s.max_daily_loss_usd == 2_000.0
    assert s.pod_ip == "127.0.0.1" and s.port == 8080 and s.paper is False


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("QR_ROLE", "boss", "QR_ROLE"),
        ("QR_SYMBOLS", "MSFT", "MSFT"),
        ("QR_SYMBOLS", "AAPL,GOOG", "GOOG"),
        ("QR_CAPITAL_USD", "-1", "QR_CAPITAL_USD"),
        ("QR_CAPITAL_USD", "lots", "not a number"),
        ("QR_PAPER", "maybe", "QR_PAPER"),
        ("QR_ENTRY_THRESHOLD", "0.7", "below 0.5"),
        ("QR_MAX_ORDER_USD", "0", "QR_MAX_ORDER_USD"),
        ("QR_PORT", "99999", "QR_PORT"),
        ("QR_MODEL_URI", "", "QR_MODEL_URI is required"),
    ],
)
def test_bad_config_is_reported(key, value, message):
    env = dict(BASE, **{key: value})
    with pytest.raises(S.ConfigError, match=message):
        S.TraderSettings.from_env(env)


def test_run_exits_2_on_bad_config(capsys):
    assert S.run({"QR_ROLE": "champion"}) == S.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "bad configuration" in err and "QR_STRATEGY is required" in err


def test_run_refuses_to_trade_when_mlflow_is_unreachable(capsys):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    env = dict(BASE, POD_IP="127.0.0.1", QR_PORT="0", MLFLOW_TRACKING_URI=f"http://127.0.0.1:{dead}")
    env["QR_PORT"] = str(_free_port())
    assert S.run(env) == S.EXIT_LOAD
    assert "unreachable" in capsys.readouterr().err


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode(), r.headers.get("Content-Type")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(), e.headers.get("Content-Type")


def test_http_endpoints():
    metrics = TraderMetrics("s", "champion", "AAPL")
    state = S._State(metrics)
    srv = S.start_http("127.0.0.1", 0, state)
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        assert _get(base + "/healthz")[0] == 200
        assert _get(base + "/readyz")[0] == 503
        state.ready = True
        assert _get(base + "/readyz")[0] == 200
        code, body, ctype = _get(base + "/metrics")
        assert code == 200 and ctype.startswith("text/plain")
        assert 'quantramp_capital_usd{role="champion",stage="",strategy="s"}' in body
        assert _get(base + "/nope")[0] == 404
    finally:
        srv.shutdown()
        srv.server_close()


def test_stop_event_ends_the_loop_quickly(monkeypatch):
    # a model that loads instantly; the loop must stop on the event and exit 0
    from quantramp.trader import server

    class Half:
        def p_up_one(self, x):
            return 0.5

    monkeypatch.setattr(server, "load_model", lambda uri, tracking: Half())
    env = dict(BASE, POD_IP="127.0.0.1", QR_PORT=str(_free_port()), QR_BAR_INTERVAL_SECONDS="10")
    stop = threading.Event()
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("rc", server.run(env, stop)))
    t.start()
    threading.Timer(1.5, stop.set).start()
    t.join(timeout=10)
    assert not t.is_alive() and result["rc"] == 0


def test_the_book_scope_keys_the_durable_book():
    # default: the stage (as before); the operator sends QR_BOOK_SCOPE (review B11, B12)
    assert S.TraderSettings.from_env(BASE).book_scope == "canary-1"
    s = S.TraderSettings.from_env({**BASE, "QR_BOOK_SCOPE": "r2-canary-1"})
    assert (s.stage, s.book_scope) == ("canary-1", "r2-canary-1")


def test_the_pods_redis_user_comes_from_env_and_is_never_printed():
    from quantramp.trader.state import connect

    s = S.TraderSettings.from_env({**BASE, "REDIS_URL": "redis://redis.q:6379/0", "QR_REDIS_USERNAME": "qr:trading:aapl-meanrev",
                                   "QR_REDIS_PASSWORD": "pod-pw"})
    assert (s.redis_url, s.redis_username, s.redis_password) == ("redis://redis.q:6379/0", "qr:trading:aapl-meanrev", "pod-pw")
    assert "pod-pw" not in repr(s)
    kw = connect(s.redis_url, s.redis_username, s.redis_password).connection_pool.connection_kwargs
    assert (kw["host"], kw["username"], kw["password"]) == ("redis.q", "qr:trading:aapl-meanrev", "pod-pw")
    kw = connect("redis://redis.q:6379/0").connection_pool.connection_kwargs  # no user: none sent
    assert kw.get("username") is None and kw.get("password") is None
