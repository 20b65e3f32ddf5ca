"""Pause gate: opens only after the feed latency stayed under the threshold for the whole window."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from quantramp.trader.pausegate import PauseGate, feed_latency


def test_not_configured_is_open():
    g = PauseGate(paused=False)
    assert not g.paused and g.observe(5.0, 0.0) is False and not g.paused


def test_opens_after_window_of_timely_bars():
    g = PauseGate(paused=True, max_latency_s=0.1, window_s=30.0)
    opened = [g.observe(0.01, t) for t in range(0, 30)]  # 0 .. 29 s: 29 s of timely feed
    assert not any(opened) and g.paused
    assert g.observe(0.01, 30.0) is True and not g.paused and g.opened_at == 30.0
    assert g.observe(5.0, 31.0) is False and not g.paused  # stays open


def test_a_late_bar_restarts_the_window():
    g = PauseGate(paused=True, max_latency_s=0.1, window_s=10.0)
    for t in range(0, 9):
        g.observe(0.05, float(t))
    g.observe(0.1, 9.0)  # at the threshold counts as late
    assert g.late_bars == 1 and g.timely_for(9.0) == 0.0
    for t in range(10, 20):
        assert g.observe(0.05, float(t)) is False
    assert g.observe(0.05, 20.0) is True


def test_nan_latency_is_late():
    g = PauseGate(paused=True, window_s=0.0)
    assert g.observe(float("nan"), 0.0) is False and g.paused
    assert g.observe(0.0, 1.0) is True


@pytest.mark.parametrize("kw", [{"max_latency_s": 0}, {"max_latency_s": float("nan")}, {"window_s": -1}])
def test_bad_settings(kw):
    with pytest.raises(ValueError):
        PauseGate(paused=True, **kw)


def test_live_feed_latency_is_arrival_minus_bar_end():
    ts = datetime(2026, 7, 29, 13, 30, tzinfo=timezone.utc)
    assert feed_latency(ts, ts + timedelta(seconds=60.05), 60.0) == pytest.approx(0.05)
