"""Bar sources (trader/barsource.py): files of any symbol, the env contract, the sample unchanged,
and the trader wired to them (TraderSettings, run, backtest)."""

from __future__ import annotations

import functools
import http.server
import logging
import socket
import threading
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from quantramp.trader import barsource as B
from quantramp.trader import marketdata as md
from quantramp.trader import server as S


@functools.lru_cache(maxsize=1)
def _sample() -> md.Bars:
    return md.load_minute_bars()


def msft_frame(scale: float = 1.37, n: int | None = None) -> pd.DataFrame:
    """MSFT-like bars: the bundled sample with prices scaled (cents), columns timestamp + OHLCV."""
    f = _sample().to_frame()
    if n is not None:
        f = f.iloc[:n]
    out = pd.DataFrame({"timestamp": f.index})
    for c in ("open", "high", "low", "close"):
        out[c] = (f[c].to_numpy() * scale).round(2)
    out["volume"] = f["volume"].to_numpy()
    return out


def assert_bars_equal(bars: md.Bars, frame: pd.DataFrame, symbol: str) -> None:
    assert bars.symbol == symbol and len(bars) == len(frame)
    want = pd.DatetimeIndex(frame["timestamp"]).tz_convert("UTC").tz_localize(None).to_numpy("datetime64[ns]")
    assert (bars.ts == want).all()
    for c in ("open", "high", "low", "close", "volume"):
        np.testing.assert_allclose(getattr(bars, c), frame[c].to_numpy(dtype=float), rtol=0, atol=1e-9)


# -- files: round trips for a symbol the sample does not have ------------------------------------
@pytest.mark.parametrize("name", ["MSFT.csv", "MSFT.csv.gz", "MSFT.parquet", "MSFT.pq"])
def test_file_round_trip_for_a_non_sample_symbol(tmp_path, name):
    frame = msft_frame()
    path = tmp_path / name
    if ".csv" in name:
        frame.to_csv(path, index=False)
    else:
        frame.to_parquet(path, index=False)
    if name.endswith(".gz"):
        with open(path, "rb") as fh:
            assert fh.read(2) == b"\x1f\x8b"  # really gzip
    bars = B.FileBars(str(path)).history("MSFT")
    assert_bars_equal(bars, frame, "MSFT")
    assert len(bars) == 6 * 390 and bars.close[0] != _sample().close[0]
    # the same through a file:// URL
    assert_bars_equal(B.FileBars(path.as_uri()).history("MSFT"), frame, "MSFT")


def test_symbol_template_reads_one_file_per_symbol(tmp_path):
    msft, ibm = msft_frame(1.37), msft_frame(0.55)
    msft.to_csv(tmp_path / "MSFT.csv.gz", index=False)
    ibm.to_parquet(tmp_path / "IBM.parquet", index=False)
    assert_bars_equal(B.FileBars(str(tmp_path / "{symbol}.csv.gz")).history("MSFT"), msft, "MSFT")
    src = B.FileBars(f"file://{tmp_path}/{{symbol}}.parquet")
    assert_bars_equal(src.history("IBM"), ibm, "IBM")
    with pytest.raises(md.MarketDataError, match=r"GOOG\.parquet: no such file, so no bars for symbol 'GOOG'"):
        src.history("GOOG")
    # a symbol is part of a path: one that could leave the directory is refused
    with pytest.raises(md.MarketDataError, match="not a valid symbol"):
        src.history("../IBM")


def test_a_symbol_column_selects_the_rows(tmp_path):
    msft, ibm = msft_frame(1.37, n=500), msft_frame(0.55, n=500)
    both = pd.concat([msft.assign(symbol="MSFT"), ibm.assign(symbol="IBM")]).sort_values("timestamp", kind="stable")
    both = both.rename(columns={"symbol": "Symbol", "timestamp": "Timestamp", "open": "OPEN"})  # names: any case
    both.to_parquet(tmp_path / "bars.parquet", index=False)
    src = B.FileBars(str(tmp_path / "bars.parquet"))
    assert_bars_equal(src.history("MSFT"), msft, "MSFT")
    assert_bars_equal(src.history("IBM"), ibm, "IBM")
    with pytest.raises(md.MarketDataError, match=r"bars\.parquet: no bars for symbol 'GOOG' \(the file has IBM, MSFT\)"):
        src.history("GOOG")


def test_a_file_without_symbol_column_is_one_symbols_bars(tmp_path):
    msft_frame(n=100).to_csv(tmp_path / "bars.csv", index=False)
    src = B.FileBars(str(tmp_path / "bars.csv"))
    assert len(src.history("MSFT")) == 100
    with pytest.raises(md.MarketDataError, match="no symbol column, so it is the bars of 'MSFT' only"):
        src.history("IBM")
    pinned = B.FileBars(str(tmp_path / "bars.csv"), symbol="IBM")
    with pytest.raises(md.MarketDataError, match="bars of 'IBM' only; no bars for symbol 'MSFT'"):
        pinned.history("MSFT")
    assert pinned.history("IBM").symbol == "IBM"


def test_naive_timestamps_are_utc_and_zones_are_converted(tmp_path):
    frame = msft_frame(n=50)
    naive = frame.assign(timestamp=frame["timestamp"].dt.tz_localize(None))
    naive.to_csv(tmp_path / "naive.csv", index=False)
    ny = frame.assign(timestamp=frame["timestamp"].dt.tz_convert("America/New_York"))
    ny.to_parquet(tmp_path / "ny.parquet", index=False)
    ny.to_csv(tmp_path / "ny.csv", index=False)  # ISO text with -04:00 offsets
    for name in ("naive.csv", "ny.parquet", "ny.csv"):
        bars = B.FileBars(str(tmp_path / name)).history("MSFT")
        assert_bars_equal(bars, frame, "MSFT")
        assert bars.bar(0).ts.isoformat() == "2026-07-29T13:30:00+00:00"  # 09:30 New York


def test_http_urls_are_read(tmp_path):
    frame = msft_frame(n=200)
    frame.to_csv(tmp_path / "MSFT.csv", index=False)
    frame.to_parquet(tmp_path / "MSFT.parquet", index=False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *a, **k: None
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}"
        for ext in ("csv", "parquet"):
            assert_bars_equal(B.FileBars(f"{base}/{{symbol}}.{ext}").history("MSFT"), frame, "MSFT")
        with pytest.raises(md.MarketDataError, match=r"IBM\.csv: cannot read as csv: .*404"):
            B.FileBars(f"{base}/{{symbol}}.csv").history("IBM")
    finally:
        srv.shutdown()
        srv.server_close()


@pytest.mark.parametrize("drop", ["timestamp", "open", "volume"])
def test_a_missing_column_is_named(tmp_path, drop):
    msft_frame(n=20).drop(columns=[drop]).to_csv(tmp_path / "MSFT.csv", index=False)
    with pytest.raises(md.MarketDataError, match=rf"MSFT\.csv: missing column {drop} \(has "):
        B.FileBars(str(tmp_path / "MSFT.csv")).history("MSFT")


@pytest.mark.parametrize(
    "row, change, message",
    [
        (7, {"high": 1.0}, "high < low in row 7"),
        (3, {"low": -1.0}, "non-positive price in row 3"),
        (5, {"close": 0.0}, "non-positive price in row 5"),
        (4, {"volume": -10.0}, "negative volume in row 4"),
        (9, {"close": float("nan")}, "NaN or infinite value in row 9"),
        (6, {"timestamp": None}, "unparseable or missing timestamps"),
    ],
)
def test_bad_bars_fail_the_loader_checks(tmp_path, row, change, message):
    frame = msft_frame(n=20)
    for col, value in change.items():
        if col == "timestamp":
            frame[col] = frame[col].astype(object)
        frame.loc[row, col] = value
    frame.to_csv(tmp_path / "MSFT.csv", index=False)
    with pytest.raises(md.MarketDataError, match=rf"MSFT\.csv \(MSFT\): {message}"):
        B.FileBars(str(tmp_path / "MSFT.csv")).history("MSFT")


def test_out_of_order_or_duplicate_bars_are_refused(tmp_path):
    frame = msft_frame(n=20)
    frame.iloc[[3, 4]].to_csv(tmp_path / "x.csv", index=False)
    pd.concat([frame.iloc[:5], frame.iloc[4:10]]).to_csv(tmp_path / "dup.csv", index=False)
    frame.iloc[::-1].to_csv(tmp_path / "rev.csv", index=False)
    for name in ("dup.csv", "rev.csv"):
        with pytest.raises(md.MarketDataError, match="timestamps not strictly increasing"):
            B.FileBars(str(tmp_path / name)).history("MSFT")


def test_unreadable_and_unsupported_files(tmp_path):
    (tmp_path / "MSFT.parquet").write_text("not parquet")
    with pytest.raises(md.MarketDataError, match=r"MSFT\.parquet: cannot read as parquet"):
        B.FileBars(str(tmp_path / "MSFT.parquet")).history("MSFT")
    with pytest.raises(B.BarSourceConfigError, match=r"scheme s3:// is not supported"):
        B.FileBars("s3://bucket/MSFT.parquet")
    with pytest.raises(B.BarSourceConfigError, match=r"unknown file type"):
        B.FileBars(str(tmp_path / "MSFT.json"))


def test_since_cuts_the_history_strictly_after(tmp_path):
    frame = msft_frame(n=100)
    frame.to_csv(tmp_path / "MSFT.csv", index=False)
    src = B.FileBars(str(tmp_path / "MSFT.csv"))
    full = src.history("MSFT")
    after = full.bar(9).ts
    got = src.since("MSFT", after, 5)
    assert len(got) == 5 and (got.ts == full.ts[10:15]).all()
    assert len(src.since("MSFT", after.replace(tzinfo=None), 1000)) == 90  # naive = UTC
    assert len(src.since("MSFT", None, 3)) == 3 and src.since("MSFT", None, 3).ts[0] == full.ts[0]
    assert len(src.since("MSFT", full.bar(99).ts, 10)) == 0
    with pytest.raises(ValueError, match="limit"):
        src.since("MSFT", None, 0)


# -- the sample, unchanged -----------------------------------------------------------------------
def test_sample_source_is_the_bundled_sample_and_the_default():
    src = B.source_from_env({})
    assert isinstance(src, B.SampleBars)
    a, b = src.history("AAPL"), md.load_minute_bars("AAPL")
    assert len(a) == len(b) == 2340 and (a.ts == b.ts).all() and (a.close == b.close).all()
    with pytest.raises(md.MarketDataError, match=r"no market data for symbol 'MSFT': only AAPL has bars in the sample data"):
        src.history("MSFT")
    assert isinstance(B.source_from_env({"QR_BARS_SOURCE": "SAMPLE"}), B.SampleBars)


# -- the environment contract --------------------------------------------------------------------
def test_env_contract_builds_each_source(tmp_path):
    f = B.source_from_env({"QR_BARS_SOURCE": "file", "QR_BARS_URL": f"{tmp_path}/{{symbol}}.csv.gz"})
    assert isinstance(f, B.FileBars) and f.describe() == f"{tmp_path}/{{symbol}}.csv.gz"
    p = B.source_from_env({"QR_BARS_SOURCE": "postgres",
                           "QR_BARS_POSTGRES_DSN": "postgresql://quantramp@db.example:5433/market"})
    assert isinstance(p, B.PostgresBars) and p.table == "minute_bars"
    assert p.describe() == "postgresql://quantramp@db.example:5433/market table minute_bars"
    q = B.source_from_env({"QR_BARS_SOURCE": "postgres", "QR_BARS_TABLE": "md.bars_1m",
                           "QR_BARS_POSTGRES_DSN": "host=db.example user=quantramp dbname=market"})
    assert q.describe() == "postgresql://quantramp@db.example/market table md.bars_1m"


@pytest.mark.parametrize(
    "env, message",
    [
        ({"QR_BARS_SOURCE": "kafka"}, r"QR_BARS_SOURCE='kafka' must be one of sample, file, postgres"),
        ({"QR_BARS_SOURCE": "file"}, r"QR_BARS_URL is required when QR_BARS_SOURCE=file"),
        ({"QR_BARS_SOURCE": "postgres"}, r"QR_BARS_POSTGRES_DSN is required when QR_BARS_SOURCE=postgres"),
        ({"QR_BARS_URL": "/x/{symbol}.csv"}, r"QR_BARS_URL is set but QR_BARS_SOURCE=sample does not use it"),
        ({"QR_BARS_SOURCE": "file", "QR_BARS_URL": "/x.csv", "QR_BARS_POSTGRES_DSN": "host=h"},
         r"QR_BARS_POSTGRES_DSN is set but QR_BARS_SOURCE=file does not use it"),
        ({"QR_BARS_SOURCE": "file", "QR_BARS_URL": "/x.csv", "QR_BARS_TABLE": "t"},
         r"QR_BARS_TABLE is set but QR_BARS_SOURCE=file does not use it"),
        ({"QR_BARS_SOURCE": "file", "QR_BARS_URL": "ftp://h/x.csv"}, r"QR_BARS_URL: .*scheme ftp:// is not supported"),
        ({"QR_BARS_SOURCE": "file", "QR_BARS_URL": "/x.xlsx"}, r"QR_BARS_URL: .*unknown file type"),
        ({"QR_BARS_SOURCE": "postgres", "QR_BARS_POSTGRES_DSN": "postgresql://qr:s3cret@h/market"},
         r"QR_BARS_POSTGRES_DSN carries a password: remove it and set PGPASSWORD"),
        ({"QR_BARS_SOURCE": "postgres", "QR_BARS_POSTGRES_DSN": "host=h password=s3cret dbname=m"},
         r"QR_BARS_POSTGRES_DSN carries a password"),
        ({"QR_BARS_SOURCE": "postgres", "QR_BARS_POSTGRES_DSN": "host='unterminated"},
         r"QR_BARS_POSTGRES_DSN: .*not a valid libpq"),
        ({"QR_BARS_SOURCE": "postgres", "QR_BARS_POSTGRES_DSN": "host=h", "QR_BARS_TABLE": "bars; DROP TABLE x"},
         r"QR_BARS_TABLE: table 'bars; DROP TABLE x' is not an SQL identifier"),
        ({"QR_BARS_SOURCE": "postgres", "QR_BARS_POSTGRES_DSN": "host=h", "QR_BARS_TABLE": 'a"b'},
         r"QR_BARS_TABLE: .*not an SQL identifier"),
    ],
)
def test_env_contract_errors_name_the_variable(env, message):
    with pytest.raises(B.BarSourceConfigError, match=message):
        B.source_from_env(env)


def test_the_password_is_never_in_the_dsn_nor_shown():
    with pytest.raises(B.BarSourceConfigError, match="carries a password") as exc:
        B.PostgresBars("postgresql://qr:s3cret@h/market")
    assert "s3cret" not in str(exc.value)
    with pytest.raises(B.BarSourceConfigError, match="not an SQL identifier"):
        B.PostgresBars("host=h", table="x.y.z")


# -- the trader wired to a source ----------------------------------------------------------------
POD = {
    "QR_STRATEGY": "msft-t", "QR_ROLE": "champion", "QR_MODEL_URI": "models:/m/1", "MLFLOW_TRACKING_URI": "http://x",
    "QR_CAPITAL_USD": "10000", "QR_BAR_INTERVAL_SECONDS": "0", "POD_IP": "127.0.0.1",
}


def test_settings_carry_the_source_and_check_symbols_only_for_the_sample(tmp_path):
    url = f"{tmp_path}/{{symbol}}.parquet"
    s = S.TraderSettings.from_env(dict(POD, QR_SYMBOLS="msft", QR_BARS_SOURCE="file", QR_BARS_URL=url))
    assert s.symbol == "MSFT" and s.bars == B.BarsConfig("file", url, "", "minute_bars")
    assert S.TraderSettings.from_env(POD).bars == B.BarsConfig()
    with pytest.raises(S.ConfigError, match="QR_SYMBOLS: no market data for MSFT"):
        S.TraderSettings.from_env(dict(POD, QR_SYMBOLS="MSFT"))
    # bar source errors are collected with the others, each naming its variable
    with pytest.raises(S.ConfigError) as exc:
        S.TraderSettings.from_env(dict(POD, QR_SYMBOLS="MSFT", QR_BARS_SOURCE="file", QR_CAPITAL_USD="-1"))
    assert "QR_BARS_URL is required when QR_BARS_SOURCE=file" in str(exc.value)
    assert "QR_CAPITAL_USD" in str(exc.value) and "QR_SYMBOLS" not in str(exc.value)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Half:
    def p_up_one(self, x):
        return 0.5


def test_run_trades_a_file_symbol_and_refuses_a_missing_one(tmp_path, monkeypatch, caplog, capsys):
    monkeypatch.setattr(S, "load_model", lambda uri, tracking: Half())
    msft_frame().to_parquet(tmp_path / "MSFT.parquet", index=False)
    env = dict(POD, QR_SYMBOLS="MSFT", QR_BARS_SOURCE="file", QR_BARS_URL=f"{tmp_path}/{{symbol}}.parquet",
               QR_PORT=str(_free_port()))
    with caplog.at_level(logging.INFO, logger="quantramp.trader"):
        assert S.run(env, max_bars=5) == 0
    assert any(f"bars of MSFT from {tmp_path}/{{symbol}}.parquet" in r.getMessage() for r in caplog.records)
    env.update(QR_SYMBOLS="IBM", QR_PORT=str(_free_port()))
    assert S.run(env, max_bars=5) == S.EXIT_LOAD
    err = capsys.readouterr().err
    assert f"refusing to trade: {tmp_path}/IBM.parquet: no such file, so no bars for symbol 'IBM'" in err


def test_backtest_options_reach_the_source(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from quantramp.trader import cli, model

    monkeypatch.setattr(model, "load_model", lambda uri, tracking=None: Half())
    for var in B.ENV_NAMES.values():
        monkeypatch.delenv(var, raising=False)
    msft_frame().to_csv(tmp_path / "MSFT.csv.gz", index=False)
    runner = CliRunner()
    ok = runner.invoke(cli.app, ["backtest", "--model-uri", "models:/m/1", "--capital-usd", "1000", "--bars", "50",
                                 "--bars-source", "file", "--bars-url", f"{tmp_path}/{{symbol}}.csv.gz",
                                 "--symbol", "msft"])
    assert ok.exit_code == 0, ok.output
    import json

    out = json.loads(ok.stdout)
    assert out["bars"] == 50 and out["symbol"] == "MSFT" and out["bars_source"].endswith("{symbol}.csv.gz")
    missing = runner.invoke(cli.app, ["backtest", "--model-uri", "m", "--capital-usd", "1000", "--bars-source", "file",
                                      "--bars-url", f"{tmp_path}/{{symbol}}.csv.gz", "--symbol", "IBM"])
    assert missing.exit_code == 1 and "no bars for symbol 'IBM'" in missing.output
    bad = runner.invoke(cli.app, ["backtest", "--model-uri", "m", "--capital-usd", "1000", "--bars-source", "postgres",
                                  "--bars-dsn", "postgresql://u:pw@h/db", "--symbol", "IBM"])
    assert bad.exit_code == 2 and "--bars-dsn (or QR_BARS_POSTGRES_DSN) carries a password" in bad.output
    nosym = runner.invoke(cli.app, ["backtest", "--model-uri", "m", "--capital-usd", "1000", "--bars-source", "file",
                                    "--bars-url", f"{tmp_path}/{{symbol}}.csv.gz"])
    assert nosym.exit_code == 2 and "--symbol is required" in nosym.output


# -- bar length: a source whose bars are not the trader's bar length is refused, not traded ------------
def five_minute_frame() -> pd.DataFrame:
    """The MSFT-like minute bars resampled to 5-minute bars within each session (OHLCV aggregation)."""
    f = msft_frame().set_index("timestamp")
    f.index = pd.DatetimeIndex(f.index).tz_localize("UTC") if pd.DatetimeIndex(f.index).tz is None else f.index
    out = f.resample("5min").agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    return out.dropna().reset_index()


def test_bars_of_another_length_than_the_traders_are_refused(tmp_path, monkeypatch, capsys):
    minute = B.FileBars(str(tmp_path / "{symbol}.csv"))
    msft_frame().to_csv(tmp_path / "MSFT.csv", index=False)
    assert len(B.check_spacing(minute.history("MSFT"), 60, minute.describe())) == len(msft_frame())
    five_minute_frame().to_csv(tmp_path / "IBM.csv", index=False)
    five = minute.history("IBM")
    assert len(B.check_spacing(five, 300, "f")) == len(five)
    with pytest.raises(md.MarketDataError, match=r"bars of IBM are 300 s apart .* trades 60-second bars \(QR_BAR_SECONDS\)"):
        B.check_spacing(five, 60, minute.describe())
    # the pod refuses to trade them
    monkeypatch.setattr(S, "load_model", lambda uri, tracking: Half())
    env = dict(POD, QR_SYMBOLS="IBM", QR_BARS_SOURCE="file", QR_BARS_URL=f"{tmp_path}/{{symbol}}.csv",
               QR_PORT=str(_free_port()))
    assert S.run(env, max_bars=5) == S.EXIT_LOAD
    assert "refusing to trade: " in capsys.readouterr().err


def test_a_refusal_is_left_in_the_termination_log_for_the_operator(tmp_path, monkeypatch):
    monkeypatch.setattr(S, "load_model", lambda uri, tracking: Half())
    log = tmp_path / "termination-log"
    log.write_text("")  # the kubelet creates it in a pod
    env = dict(POD, QR_SYMBOLS="IBM", QR_BARS_SOURCE="file", QR_BARS_URL=f"{tmp_path}/{{symbol}}.csv",
               QR_PORT=str(_free_port()), QR_TERMINATION_LOG=str(log))
    assert S.run(env, max_bars=5) == S.EXIT_LOAD
    assert log.read_text() == f"quantramp-trader: refusing to trade: {tmp_path}/IBM.csv: no such file, so no bars for symbol 'IBM'"
    # outside a pod there is no such file, and none is made
    env.update(QR_TERMINATION_LOG=str(tmp_path / "absent"), QR_PORT=str(_free_port()))
    assert S.run(env, max_bars=5) == S.EXIT_LOAD
    assert not (tmp_path / "absent").exists()
