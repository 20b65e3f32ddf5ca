"""Pause gate: a trader started paused trades only after its feed has been timely for a while.

Feed latency is measured per bar:

- live feed: arrival time minus the time the bar was complete (bar timestamp + bar
  length), see :func:`feed_latency`;
- replay: how late the replay delivered the bar against its own schedule (start + i x
  interval), i.e. the replay clock's lateness.

The gate opens once every bar for the last ``window_s`` seconds had latency below
``max_latency_s`` (seed runbook: 100 ms) — the window is measured on the monotonic clock
from the first timely bar after the last late one, so one late bar restarts it. A gate
that is not configured to start paused is open from the start. Once open it stays open
(stale data afterwards is the governor's business, not the gate's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from .session import is_daily, price_time

#: seed runbook: feed latency under 100 ms before unpausing
DEFAULT_MAX_LATENCY_MS = 100.0
DEFAULT_WINDOW_S = 30.0


def feed_latency(bar_ts: datetime, arrival: datetime, bar_seconds: float) -> float:
    """Seconds between a bar being complete (``bar_ts`` + ``bar_seconds``; a daily bar, 86400:
    at its session's close, :func:`.session.price_time`) and its ``arrival`` (aware datetimes)."""
    if is_daily(bar_seconds):
        return (arrival - price_time(bar_ts, int(bar_seconds))).total_seconds()
    return (arrival - bar_ts).total_seconds() - bar_seconds


@dataclass
class PauseGate:
    """Open/closed state of the pause gate. Times are monotonic seconds; latency in seconds."""

    paused: bool
    max_latency_s: float = DEFAULT_MAX_LATENCY_MS / 1000.0
    window_s: float = DEFAULT_WINDOW_S

    def __post_init__(self) -> None:
        if not (math.isfinite(self.max_latency_s) and self.max_latency_s > 0):
            raise ValueError(f"max latency must be > 0 s, got {self.max_latency_s!r}")
        if not (math.isfinite(self.window_s) and self.window_s >= 0):
            raise ValueError(f"window must be >= 0 s, got {self.window_s!r}")
        self._good_since: float | None = None
        self.opened_at: float | None = None
        self.last_latency_s: float | None = None
        self.late_bars = 0
        self.last_late_at: float | None = None

    def observe(self, latency_s: float, now: float) -> bool:
        """Record one bar's feed latency at monotonic time ``now``; returns True if the gate opened on this bar."""
        self.last_latency_s = latency_s
        if not self.paused:
            return False
        if not (math.isfinite(latency_s) and latency_s < self.max_latency_s):
            self.late_bars += 1
            self.last_late_at = now
            self._good_since = None
            return False
        if self._good_since is None:
            self._good_since = now
        if now - self._good_since >= self.window_s:
            self.paused = False
            self.opened_at = now
            return True
        return False

    def timely_for(self, now: float) -> float:
        """Seconds the feed has been timely without interruption (0 if the last bar was late)."""
        return 0.0 if self._good_since is None else now - self._good_since
