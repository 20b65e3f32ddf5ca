"""PostgresBars against a real PostgreSQL 15 (Debian's /usr/lib/postgresql/15/bin): a private server
in a tmp dir on 127.0.0.1 and a free port, a scram-sha-256 password role, stopped after the module.
As root the server runs as ``nobody`` (postgres refuses to run as root)."""

from __future__ import annotations

import glob
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from quantramp.trader import barsource as B
from quantramp.trader import marketdata as md
from quantramp.trader import server as S

pytestmark = pytest.mark.integration
psycopg = pytest.importorskip("psycopg")

USER, PASSWORD, DB = "quantramp", "bars-test-pw", "market"


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/15/bin/initdb")) or sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def pg():
    """A running PostgreSQL: yields (password-free DSN of database ``market``, port)."""
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (hack/install-system-packages.sh installs it)")
    root = Path(tempfile.mkdtemp(prefix="qr-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(root, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    pwfile = root / "pw"
    pwfile.write_text(PASSWORD + "\n")
    if as_user:
        shutil.chown(pwfile, "nobody")
    port = _free_port()
    data = root / "data"

    def run(*cmd: str) -> None:
        subprocess.run([*as_user, *cmd], check=True, cwd=root, capture_output=True, timeout=60)

    run(str(bindir / "initdb"), "-D", str(data), "-U", USER, "-A", "scram-sha-256", f"--pwfile={pwfile}",
        "-E", "UTF8", "--no-sync")
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} -c fsync=off"
    run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "-t", "30", "-o", opts, "start")
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user=USER, password=PASSWORD, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DB}")
        yield f"postgresql://{USER}@127.0.0.1:{port}/{DB}", port
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                       cwd=root, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def password(monkeypatch, tmp_path):
    """PGPASSWORD as the operator sets it from a Secret; no ~/.pgpass in the way."""
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    monkeypatch.setenv("PGPASSWORD", PASSWORD)


@pytest.fixture()
def conn(pg, password):
    with psycopg.connect(pg[0]) as c:
        yield c


def msft(scale: float = 1.37) -> md.Bars:
    """MSFT-like bars: the bundled sample's 2,340 minute bars with prices scaled (cents)."""
    s = md.load_minute_bars()
    px = [(getattr(s, c) * scale).round(2) for c in ("open", "high", "low", "close")]
    return md.Bars("MSFT", s.ts, *px, s.volume)


def _same(a: md.Bars, b: md.Bars) -> bool:
    return len(a) == len(b) and all((getattr(a, c) == getattr(b, c)).all() for c in ("ts", "open", "high", "low",
                                                                                      "close", "volume"))


def test_load_history_and_idempotent_reload(pg, conn):
    B.create_schema(conn, "minute_bars")
    B.create_schema(conn, "minute_bars")  # IF NOT EXISTS
    bars = msft()
    assert B.load_frame(conn, "minute_bars", "MSFT", bars) == 2340
    assert B.load_frame(conn, "minute_bars", "MSFT", bars) == 0  # ON CONFLICT DO NOTHING
    assert B.load_frame(conn, "minute_bars", "IBM", msft(0.5).slice(0, 100)) == 100
    src = B.PostgresBars(pg[0])
    got = src.history("MSFT")
    assert got.symbol == "MSFT" and _same(got, bars)
    assert len(src.history("IBM")) == 100
    with pytest.raises(md.MarketDataError) as exc:
        src.history("GOOG")
    assert str(exc.value) == f"postgresql://{USER}@127.0.0.1:{pg[1]}/{DB} table minute_bars: no bars for symbol 'GOOG'"
    assert conn.execute("SELECT count(*) FROM minute_bars").fetchone()[0] == 2440


def test_since_reads_incrementally(pg, conn):
    B.create_schema(conn, "growing")
    bars = msft()
    B.load_frame(conn, "growing", "MSFT", bars.slice(0, 100))
    src = B.PostgresBars(pg[0], table="growing")
    first = src.since("MSFT", None, 1000)
    assert _same(first, bars.slice(0, 100))
    assert len(src.since("MSFT", first.bar(99).ts, 1000)) == 0  # nothing new yet
    B.load_frame(conn, "growing", "MSFT", bars.slice(100, 150))
    new = src.since("MSFT", first.bar(99).ts, 1000)  # strictly after the last one read
    assert _same(new, bars.slice(100, 150))
    limited = src.since("MSFT", first.bar(9).ts, 7)
    assert _same(limited, bars.slice(10, 17))
    one = src.since("MSFT", bars.bar(148).ts.replace(tzinfo=None), 5)  # naive = UTC; one bar passes the checks
    assert len(one) == 1 and one.ts[0] == bars.ts[149]


def test_a_timescale_style_numeric_table_is_read(pg, conn):
    conn.execute("CREATE TABLE ts_bars (symbol text, \"timestamp\" timestamptz, open numeric(12,4), high numeric(12,4),"
                 " low numeric(12,4), close numeric(12,4), volume bigint, PRIMARY KEY (symbol, \"timestamp\"))")
    conn.execute("INSERT INTO ts_bars VALUES ('MSFT', '2026-07-29 09:30-04', 400.1, 401.5, 399.9, 401.0, 1200),"
                 " ('MSFT', '2026-07-29 09:31-04', 401.0, 401.2, 400.2, 400.5, 900)")
    conn.commit()
    bars = B.PostgresBars(pg[0], table="ts_bars").history("MSFT")
    assert bars.bar(0).ts.isoformat() == "2026-07-29T13:30:00+00:00"
    assert list(bars.close) == [401.0, 400.5] and list(bars.volume) == [1200.0, 900.0]


def test_bad_rows_fail_the_loader_checks(pg, conn):
    B.create_schema(conn, "bad_bars")
    b = msft().slice(0, 20)
    high = b.high.copy()
    high[5] = b.low[5] - 1.0
    B.load_frame(conn, "bad_bars", "MSFT", md.Bars("MSFT", b.ts, b.open, high, b.low, b.close, b.volume))
    with pytest.raises(md.MarketDataError, match=r"table bad_bars \(MSFT\): high < low in row 5"):
        B.PostgresBars(pg[0], table="bad_bars").history("MSFT")


def test_the_password_comes_from_pgpassword(pg, monkeypatch, tmp_path):
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-pgpass"))
    monkeypatch.delenv("PGPASSWORD", raising=False)
    src = B.PostgresBars(pg[0])
    with pytest.raises(md.MarketDataError, match=r"table minute_bars: .*no password supplied"):
        src.history("MSFT")
    monkeypatch.setenv("PGPASSWORD", "wrong")
    with pytest.raises(md.MarketDataError, match=r"password authentication failed for user \"quantramp\""):
        src.history("MSFT")
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    with psycopg.connect(pg[0]) as c:
        B.create_schema(c, "minute_bars")
        B.load_frame(c, "minute_bars", "MSFT", msft())
    assert B.PostgresBars(f"host=127.0.0.1 port={pg[1]} user={USER} dbname={DB}").history("MSFT").symbol == "MSFT"


def test_a_dead_or_silent_server_fails_quickly(password):
    port = _free_port()  # nobody listens
    t0 = time.monotonic()
    with pytest.raises(md.MarketDataError, match=rf"postgresql://{USER}@127.0.0.1:{port}/{DB} table minute_bars: .*"):
        B.PostgresBars(f"postgresql://{USER}@127.0.0.1:{port}/{DB}").history("MSFT")
    assert time.monotonic() - t0 < 2
    # a server that accepts TCP but never answers: the connect timeout ends the wait
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        p = silent.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(md.MarketDataError, match="timeout|timed out"):
            B.PostgresBars(f"postgresql://{USER}@127.0.0.1:{p}/{DB}", connect_timeout=2).history("MSFT")
        took = time.monotonic() - t0
    assert 1.5 < took < 10, took


def test_table_names_are_identifiers_never_sql(pg, conn):
    B.create_schema(conn, "minute_bars")
    evil = "minute_bars; DROP TABLE minute_bars"
    with pytest.raises(B.BarSourceConfigError, match="not an SQL identifier"):
        B.PostgresBars(pg[0], table=evil)
    with pytest.raises(B.BarSourceConfigError, match="not an SQL identifier"):
        B.create_schema(conn, evil)
    with pytest.raises(B.BarSourceConfigError, match="not an SQL identifier"):
        B.load_frame(conn, 'minute_bars" (symbol) VALUES (1); --', "MSFT", msft().slice(0, 2))
    assert conn.execute("SELECT to_regclass('minute_bars') IS NOT NULL").fetchone()[0]
    # a schema-qualified name is quoted part by part; a missing table is a clear market data error
    conn.execute("CREATE SCHEMA IF NOT EXISTS md")
    B.create_schema(conn, "md.bars_1m")
    B.load_frame(conn, "md.bars_1m", "MSFT", msft().slice(0, 3))
    assert len(B.PostgresBars(pg[0], table="md.bars_1m").history("MSFT")) == 3
    with pytest.raises(md.MarketDataError, match=r"table nope: relation \"nope\" does not exist"):
        B.PostgresBars(pg[0], table="nope").history("MSFT")


class Half:
    def p_up_one(self, x):
        return 0.5


def test_the_trader_runs_on_postgres_bars_and_refuses_a_dead_database(pg, password, monkeypatch, caplog, capsys):
    monkeypatch.setattr(S, "load_model", lambda uri, tracking: Half())
    env = {
        "QR_STRATEGY": "msft-pg", "QR_ROLE": "champion", "QR_MODEL_URI": "models:/m/1", "MLFLOW_TRACKING_URI": "http://x",
        "QR_CAPITAL_USD": "10000", "QR_BAR_INTERVAL_SECONDS": "0", "POD_IP": "127.0.0.1", "QR_PORT": str(_free_port()),
        "QR_SYMBOLS": "MSFT", "QR_BARS_SOURCE": "postgres", "QR_BARS_POSTGRES_DSN": pg[0],
    }
    with psycopg.connect(pg[0]) as c:
        B.create_schema(c, "minute_bars")
        B.load_frame(c, "minute_bars", "MSFT", msft())
    with caplog.at_level(logging.INFO, logger="quantramp.trader"):
        assert S.run(env, max_bars=5) == 0
    assert any("bars of MSFT from postgresql://" in r.getMessage() for r in caplog.records)
    dead = dict(env, QR_PORT=str(_free_port()),
                QR_BARS_POSTGRES_DSN=f"postgresql://{USER}@127.0.0.1:{_free_port()}/{DB}")
    assert S.run(dead, max_bars=5) == S.EXIT_LOAD
    assert "refusing to trade: postgresql://quantramp@127.0.0.1:" in capsys.readouterr().err


def test_daily_bars_round_trip(pg, conn):
    """Daily bars (bokeh-sampledata MSFT 2010-01-04 .. 2013-03-01, tests/support/stock_bars.py):
    load_frame stores them at their session opens (given as Bars or as a frame of dates), and
    PostgresBars reads back the same Bars, one per XNYS session (check_spacing 86400)."""
    from support.stock_bars import daily_bars, daily_frame

    B.create_schema(conn, "daily_bars")
    bars = daily_bars("MSFT")
    assert len(bars) == 795
    assert B.load_frame(conn, "daily_bars", "MSFT", bars) == 795
    assert B.load_frame(conn, "daily_bars", "MSFT", daily_frame("MSFT")) == 0  # the dates land on the same rows
    assert B.load_frame(conn, "daily_bars", "IBM", daily_frame("IBM")) == 795  # a frame of dates, stamped
    src = B.PostgresBars(pg[0], table="daily_bars")
    got = src.history("MSFT")
    assert _same(got, bars)
    assert B.check_spacing(got, 86_400, src.describe()) is got
    assert B.check_spacing(src.history("IBM"), 86_400, src.describe()) is not None
    stamps = {got.bar(i).ts.date().isoformat(): got.bar(i).ts.isoformat() for i in range(len(got))}
    assert stamps["2010-01-04"] == "2010-01-04T14:30:00+00:00"  # 09:30 EST
    assert stamps["2010-07-01"] == "2010-07-01T13:30:00+00:00"  # 09:30 EDT
    assert stamps["2012-11-23"] == "2012-11-23T14:30:00+00:00"  # an early close opens at 09:30 too
    assert "2012-10-29" not in stamps and "2012-10-30" not in stamps  # Hurricane Sandy: no sessions
    # incremental reads work on daily rows as on minute rows
    assert _same(src.since("MSFT", got.bar(9).ts, 5), bars.slice(10, 15))
    # a frame with a date that is not a session is refused before anything is written
    bad = daily_frame("MSFT", "2013-02-01", "2013-03-01")
    bad.loc[bad.index[3], "datetime"] = "2013-02-09"  # a Saturday
    with pytest.raises(md.MarketDataError, match="2013-02-09"):
        B.load_frame(conn, "daily_bars", "GOOG", bad)
    assert conn.execute("SELECT count(*) FROM daily_bars WHERE symbol = 'GOOG'").fetchone()[0] == 0


def test_a_pod_follows_the_table_trading_only_new_bars(pg, conn):
    """QR_BARS_FOLLOW=true: the pod warms up on the rows already there (no trading), then trades each
    row as it is inserted (polled with ``WHERE timestamp > last``), through the pod's own wiring
    (``_serve`` with the feed ``run`` builds)."""
    import asyncio
    import threading
    from datetime import timedelta

    from quantramp.trader.backtest import make_engine
    from quantramp.trader.livefeed import PollingFeed
    from quantramp.trader.metrics import TraderMetrics
    from support.trader_pod import Momentum

    B.create_schema(conn, "live_bars")
    bars = msft()
    B.load_frame(conn, "live_bars", "MSFT", bars.slice(0, 60))
    env = {"QR_STRATEGY": "follow", "QR_ROLE": "challenger", "QR_MODEL_URI": "models:/m/1", "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
           "QR_CAPITAL_USD": "10000", "QR_SYMBOLS": "MSFT", "QR_BARS_SOURCE": "postgres", "QR_BARS_POSTGRES_DSN": pg[0],
           "QR_BARS_TABLE": "live_bars", "QR_BARS_FOLLOW": "true", "QR_BARS_POLL_SECONDS": "0.05"}
    s = S.TraderSettings.from_env(env)
    assert s.follow and s.poll_s == 0.05
    engine = make_engine(Momentum(), s.engine_config(), None, seed=7)
    feed = PollingFeed(s.bars.source(), ("MSFT",), 60, poll_s=s.poll_s)
    inserted = [60]
    clock = lambda: bars.bar(inserted[0] - 1).ts + timedelta(seconds=61)  # noqa: E731 - just after the newest close
    n_live = 150
    seen_before_live: list[int] = []

    async def feed_rows(rt_engine) -> None:
        await asyncio.sleep(0.3)  # the pod has warmed up
        seen_before_live.append(rt_engine.bars)
        for i in range(60, 60 + n_live):
            await asyncio.to_thread(B.load_frame, conn, "live_bars", "MSFT", bars.slice(i, i + 1))
            inserted[0] = i + 1
            await asyncio.sleep(0.06)

    async def scenario() -> int:
        metrics = TraderMetrics(s.strategy, s.role, s.symbol, stage=s.stage)
        writer = asyncio.create_task(feed_rows(engine))
        code = await S._serve(s, engine, {}, metrics, S._State(metrics), threading.Event(), n_live, feed, clock)
        await writer
        return code

    assert asyncio.run(asyncio.wait_for(scenario(), 60)) == 0
    assert seen_before_live == [0], "the history was traded"
    assert engine.bars == n_live and engine.trades > 0
    assert engine.features.ready
