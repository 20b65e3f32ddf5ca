"""``kubectl quantramp replay`` reads the bars the strategy's pods trade (spec.marketData, spec.calendars), not the
sample, and replays books of several symbols (one engine per symbol under one governor) as the pod traded them."""

from __future__ import annotations

import math
from datetime import date

import pytest

from quantramp.operator import adverse as A
from quantramp.operator.plugin import PluginError, render_replay, replay_strategy, strategy_bars
from quantramp.trader import session as sess
from quantramp.trader.marketdata import load_minute_bars
from quantramp.trader.server import build_engine, replay_from
from quantramp.trader.state import Keys, book_fields
from test_report import FakeRedis  # the redis-py calls read_books makes, over a dict


def obj(**spec):
    return {"metadata": {"name": "demo", "namespace": "trading"},
            "spec": {"model": {"name": "m", "version": "4"}, "capitalUsd": 50000.0, **spec},
            "status": {"phase": "Promoted", "allocation": {"champion": {"version": "3", "capitalPercent": 100,
                                                                        "replicas": 1, "stage": "production"}}}}


def msft_csv(tmp_path):
    a = load_minute_bars("AAPL").to_frame().reset_index()
    a.columns = ["datetime", *a.columns[1:]]
    for c in ("open", "high", "low", "close"):
        a[c] = (a[c] * 1.37).round(2)
    path = tmp_path / "MSFT.csv"
    a.to_csv(path, index=False)
    return str(tmp_path / "{symbol}.csv")


def test_the_replay_reads_the_strategys_file_bars(tmp_path):
    url = msft_csv(tmp_path)
    s = A.role_settings("demo", "trading", obj(symbols=["MSFT"], marketData={"source": "file", "url": url}),
                        "champion", 50000.0, "models:/m/3")
    steps: list[str] = []
    bars = strategy_bars(s, steps.append)
    assert bars.symbol == "MSFT" and len(bars) == 2340
    assert float(bars.close[0]) == pytest.approx(float(load_minute_bars("AAPL").close[0]) * 1.37, abs=0.01)
    assert any("reading the bars of MSFT from" in x for x in steps)


def test_a_missing_symbol_is_a_clear_error(tmp_path):
    url = msft_csv(tmp_path)
    s = A.role_settings("demo", "trading", obj(symbols=["IBM"], marketData={"source": "file", "url": url}),
                        "champion", 50000.0, "models:/m/3")
    with pytest.raises(PluginError, match="cannot read the strategy's bars"):
        strategy_bars(s)


class Tilt:
    """A deterministic model on the built-in features (trades often on real bars)."""

    def p_up_one(self, x):
        return 1.0 / (1.0 + math.exp(-(0.3 * float(x[0]) - 0.2 * float(x[1]) + 0.1 * float(x[2]))))


def pod_books(o, through: str, role="champion"):
    """Books of a pod built as trader.server.run builds it (build_engine on the rendered env), fed the
    feed it replays (replay_from over the symbols, each in its calendar), saved per trading date (the
    newest local date of its symbols), up to ``through``: (settings, bars, redis data)."""
    s = A.role_settings("demo", "trading", o, role, 50000.0, "models:/m/3")
    bars = strategy_bars(s)
    pod = build_engine(s, Tilt())
    cals = {x: e.calendar for x, e in A.members(pod).items()}
    keys = Keys("trading", "demo", role, stage="v3")
    data = {Keys("trading", "demo", role).live_scope: "v3"}
    day = ""
    for bar in replay_from(bars, None, s.bar_seconds, cals):
        day = max(day, (cals.get(bar.symbol) or cals[""]).local_date(bar.ts).isoformat())
        if day > through:
            break
        pod.on_bar(bar)
        data[keys.book(day)] = book_fields(pod.snapshot(), {"bar_ts": bar.ts.isoformat(), "capital_usd": 50000.0,
                                                            "model_uri": "models:/m/3"})
        data[keys.current] = day
    return s, bars, data


def both_csv(tmp_path):
    url = msft_csv(tmp_path)
    a = load_minute_bars("AAPL").to_frame().reset_index()
    a.columns = ["datetime", *a.columns[1:]]
    a.to_csv(tmp_path / "AAPL.csv", index=False)
    return url


def test_a_book_of_two_symbols_replays_exactly_with_each_symbol_s_trips(tmp_path):
    o = obj(symbols=["MSFT", "AAPL"], marketData={"source": "file", "url": both_csv(tmp_path)})
    s, bars, data = pod_books(o, "2026-07-30")
    assert isinstance(bars, dict) and set(bars) == {"MSFT", "AAPL"}
    (res,) = replay_strategy(o, ["champion"], FakeRedis(data), lambda uri: Tilt(), last_n=50, bars=None)
    assert res["verification"]["exact"], res["verification"]
    assert res["day"] == "2026-07-30" and res["startedFrom"] == "book of 2026-07-29"
    assert res["verification"]["text"].startswith("exact: MSFT trades ") and "; AAPL trades " in res["verification"]["text"]
    assert res["bars"] == 2 * 390
    assert {r["trip"]["symbol"] for r in res["rows"]} == {"MSFT", "AAPL"}
    pnls = [r["trip"]["pnl_usd"] for r in res["rows"]]
    assert pnls == sorted(pnls)
    table = render_replay({"role": "champion", "scope": "v3", "tradedModel": "m", "currentModel": "m", **res})
    assert table.columns[0].header == "symbol"


def test_a_changed_book_of_two_symbols_is_flagged_not_guessed(tmp_path):
    o = obj(symbols=["MSFT", "AAPL"], marketData={"source": "file", "url": both_csv(tmp_path)})
    _, _, data = pod_books(o, "2026-07-30")
    key = next(k for k in data if k.endswith(":2026-07-30:book"))
    data[key] = dict(data[key], pnl_usd=repr(float(data[key]["pnl_usd"]) + 1.0))  # the runtime did something else
    (res,) = replay_strategy(o, ["champion"], FakeRedis(data), lambda uri: Tilt(), last_n=1)
    assert not res["verification"]["exact"] and res["verification"]["text"].startswith("differs: MSFT trades ")
    # a book of other symbols than the spec's: a clear error (the pod would refuse that book too)
    other = obj(symbols=["MSFT", "IBM"], marketData={"source": "file", "url": both_csv(tmp_path)})
    (tmp_path / "IBM.csv").write_text((tmp_path / "AAPL.csv").read_text())
    with pytest.raises(PluginError, match="cannot replay the champion's book of 2026-07-30: the saved book trades"):
        replay_strategy(other, ["champion"], FakeRedis(data), lambda uri: Tilt(), last_n=1)


def test_a_daily_book_on_two_exchanges_replays_exactly(tmp_path):
    """MSFT on New York, CSPX on London (spec.calendars), daily bars: the replay loops each symbol by its own
    sessions, as the pod does, and reproduces the book of the last date exactly."""
    from support.stock_bars import daily_frame

    london = sess.calendar("XLON")
    daily_frame("MSFT", "2011-01-03", "2011-12-30").to_csv(tmp_path / "MSFT.csv", index=False)
    c = daily_frame("AAPL", "2011-01-03", "2011-12-30")
    c[[london.session_for(date.fromisoformat(d)) is not None for d in c["datetime"]]].to_csv(tmp_path / "CSPX.csv", index=False)
    o = obj(symbols=["MSFT", "CSPX"], calendars={"CSPX": "XLON"},
            marketData={"source": "file", "url": str(tmp_path / "{symbol}.csv"), "barSeconds": 86400})
    s, bars, data = pod_books(o, "2012-03-30")  # the second loop (the data ends 2011-12-30)
    assert s.calendars == {"CSPX": "XLON"}
    (res,) = replay_strategy(o, ["champion"], FakeRedis(data), lambda uri: Tilt(), last_n=5)
    assert res["verification"]["exact"], res["verification"]
    assert res["day"] == "2012-03-30" and res["bars"] == 2


def test_live_ib_bars_are_refused_plainly():
    s = A.role_settings("demo", "trading", obj(symbols=["MSFT"], marketData={"source": "ib"},
                                              broker={"type": "ib", "ib": {
                                                  "host": "ib-gateway",
                                                  "championAccountSecretKeyRef": {"name": "ib", "key": "a"},
                                                  "challengerAccountSecretKeyRef": {"name": "ib", "key": "b"}}}),
                        "champion", 50000.0, "models:/m/3")
    with pytest.raises(PluginError, match="cannot replay this strategy's bars: ib bars are live only"):
        strategy_bars(s)
