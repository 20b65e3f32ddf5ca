"""``kubectl quantramp replay`` reads the bars the strategy's pods trade (spec.marketData), not the sample."""

from __future__ import annotations

import pytest

from quantramp.operator import adverse as A
from quantramp.operator.plugin import PluginError, replay_strategy, strategy_bars
from quantramp.trader.marketdata import load_minute_bars


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


def test_a_several_symbol_book_is_refused_plainly(tmp_path, monkeypatch):
    o = obj(symbols=["MSFT", "AAPL"], marketData={"source": "file", "url": msft_csv(tmp_path)})

    class Books:
        def __getattr__(self, name):
            raise AssertionError("not reached")

    from quantramp.operator import plugin

    def read_books(*a):
        book = type("B", (), {"extra": {"model_uri": "models:/m/3", "capital_usd": 50000.0}, "day": "2026-07-30"})()
        return "v3", book, None

    monkeypatch.setattr(plugin, "read_books", read_books)
    with pytest.raises(PluginError, match="several-symbol book is not built yet"):
        replay_strategy(o, ["champion"], Books(), lambda uri: object(), last_n=1)


def test_live_ib_bars_are_refused_plainly():
    s = A.role_settings("demo", "trading", obj(symbols=["MSFT"], marketData={"source": "ib"},
                                              broker={"type": "ib", "ib": {
                                                  "host": "ib-gateway",
                                                  "championAccountSecretKeyRef": {"name": "ib", "key": "a"},
                                                  "challengerAccountSecretKeyRef": {"name": "ib", "key": "b"}}}),
                        "champion", 50000.0, "models:/m/3")
    with pytest.raises(PluginError, match="cannot replay this strategy's bars: ib bars are live only"):
        strategy_bars(s)
