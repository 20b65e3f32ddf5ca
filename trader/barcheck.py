"""Bar validation before a bar may move any state (marks, day, features, sizing, orders).

One bad or out-of-order print must never change the trading day, latch a halt or
reach a mark (review D6, D7). :class:`BarCheck` refuses a bar, and names why:

- ``invalid_price``: open/high/low/close not finite and > 0, or volume not finite
  and >= 0;
- ``inconsistent_range``: high < low;
- ``duplicate_bar``: the bar's start time equals the last accepted bar's;
- ``out_of_order``: the bar starts before the last accepted bar (time must increase
  per symbol; one checker per symbol);
- ``price_jump``: the open or the close is more than ``max_jump_ratio`` away from a
  robust reference, the median of the last :data:`REFERENCE_BARS` accepted closes. A
  move that persists is real: when the next bar's close is within ``max_jump_ratio`` of
  the refused bar's close, the new level is accepted (the reference restarts there), so
  a genuine gap or crash costs one bar, a single bad print costs nothing.

Default jump bound 10 %: twice the Limit Up-Limit Down Tier 1 price band (5 % for NMS
stocks above $3, doubled in the opening and closing periods; LULD Plan, Appendix A). A
real one-bar move beyond it would have paused trading in the symbol; a 10x or -50 %
print is an error. An overnight earnings gap below 10 % (AAPL 2026-07-31: -8.7 %) passes
at once; a larger one passes one bar late. The LULD argument holds for any intraday bar
(minute, 5-minute: the reference is the last 5 closes, at most 25 minutes old on 5-minute bars).

Daily bars (:func:`max_jump_ratio_for`, :data:`DAILY_MAX_JUMP_RATIO` 50 %): LULD bands do not
limit the move from one session's close to the next (the open after news is an auction), and
large caps do move 10-30 % in a session on earnings (e.g. META -26 % on 2022-02-03, NFLX
-35 % on 2022-04-20) and beyond (AAPL -52 % on 2000-09-29, in the bokeh sample). A 10 % bound
would refuse real daily moves and lose a trading day each time. 50 % keeps those, and still
refuses what is almost always an error on a daily series: a 10x or 1/10 print and an
unadjusted split of 3:1 or more (-67 %); a move that persists passes one bar (one session)
late, as intraday.

The state (``to_dict`` / ``from_dict``) is carried over a restart with the engine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: how many accepted closes make the reference (median)
REFERENCE_BARS = 5
#: default max |price / reference - 1| of one bar (ratio), see the module docstring
DEFAULT_MAX_JUMP_RATIO = 0.10
#: max |price / reference - 1| of one daily bar (ratio), see the module docstring
DAILY_MAX_JUMP_RATIO = 0.50
#: bar_seconds of daily bars (as :data:`.session.DAILY_BAR_SECONDS`)
_DAILY_S = 86_400


def max_jump_ratio_for(bar_seconds: float) -> float:
    """The jump bound (ratio) for bars of ``bar_seconds`` seconds: :data:`DEFAULT_MAX_JUMP_RATIO`
    (10 %, LULD) for intraday bars, :data:`DAILY_MAX_JUMP_RATIO` (50 %) for daily bars
    (86,400 s); see the module docstring for the sources."""
    return DAILY_MAX_JUMP_RATIO if bar_seconds >= _DAILY_S else DEFAULT_MAX_JUMP_RATIO

INVALID_PRICE = "invalid_price"
INCONSISTENT_RANGE = "inconsistent_range"
DUPLICATE_BAR = "duplicate_bar"
OUT_OF_ORDER = "out_of_order"
PRICE_JUMP = "price_jump"
#: every refusal reason (stable strings for logs and metric labels)
REASONS = (INVALID_PRICE, INCONSISTENT_RANGE, DUPLICATE_BAR, OUT_OF_ORDER, PRICE_JUMP)

_INF = math.inf
_NO_TS = -(1 << 62)


@dataclass
class BarCheck:
    """Validator of one symbol's bars (see module docstring).

    last_ts_ns: start of the last accepted bar, ns since the epoch (UTC). closes: the
    last accepted closes, USD, oldest first (at most :data:`REFERENCE_BARS`). suspect:
    close of the last bar refused as a ``price_jump`` (USD; None if the last bar was
    accepted). refused: count per reason. max_jump_ratio: the jump bound (0-1).
    """

    max_jump_ratio: float = DEFAULT_MAX_JUMP_RATIO
    last_ts_ns: int = _NO_TS
    closes: list[float] = field(default_factory=list)
    suspect: float | None = None
    refused: dict[str, int] = field(default_factory=lambda: {r: 0 for r in REASONS})

    def check(self, ts_ns: int, o: float, h: float, lo: float, c: float, v: float) -> str:
        """Validate one bar (start ``ts_ns``; prices USD; volume shares); accept it (update the
        reference) and return "" or refuse it and return the reason (counted in ``refused``)."""
        if not (0.0 < o < _INF and 0.0 < h < _INF and 0.0 < lo < _INF and 0.0 < c < _INF and 0.0 <= v < _INF):
            return self._refuse(INVALID_PRICE)
        if h < lo:
            return self._refuse(INCONSISTENT_RANGE)
        if ts_ns <= self.last_ts_ns:
            return self._refuse(DUPLICATE_BAR if ts_ns == self.last_ts_ns else OUT_OF_ORDER)
        closes = self.closes
        if closes:
            s = sorted(closes)
            ref = s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])
            k = self.max_jump_ratio
            if abs(c - ref) > k * ref or abs(o - ref) > k * ref:
                sus = self.suspect
                if sus is not None and abs(c - sus) <= k * sus:
                    closes[:] = [sus]  # the level persisted: a real move, the reference restarts there
                else:
                    self.suspect = c
                    return self._refuse(PRICE_JUMP)
        self.last_ts_ns = ts_ns
        closes.append(c)
        if len(closes) > REFERENCE_BARS:
            del closes[0]
        self.suspect = None
        return ""

    def _refuse(self, reason: str) -> str:
        self.refused[reason] += 1
        return reason

    def accept_run(self, ts_ns: list[int], closes: list[float]) -> None:
        """Take a run of bars already known to pass (the batch replay's quiet runs): the same
        state :meth:`check` would leave after accepting each of them in turn."""
        if not closes:
            return
        self.last_ts_ns = int(ts_ns[-1])
        tail = (self.closes + [float(c) for c in closes[-REFERENCE_BARS:]])[-REFERENCE_BARS:]
        self.closes = tail
        self.suspect = None

    def copy(self) -> "BarCheck":
        """An independent copy (same state)."""
        return BarCheck(self.max_jump_ratio, self.last_ts_ns, list(self.closes), self.suspect, dict(self.refused))

    def to_dict(self) -> dict:
        """JSON-able state."""
        return {
            "max_jump_ratio": self.max_jump_ratio, "last_ts_ns": self.last_ts_ns, "closes": list(self.closes),
            "suspect": self.suspect, "refused": dict(self.refused),
        }

    @staticmethod
    def from_dict(d: dict) -> "BarCheck":
        """Inverse of :meth:`to_dict`."""
        refused = {r: 0 for r in REASONS}
        refused.update({str(k): int(v) for k, v in dict(d.get("refused", {})).items()})
        return BarCheck(
            float(d.get("max_jump_ratio", DEFAULT_MAX_JUMP_RATIO)), int(d.get("last_ts_ns", _NO_TS)),
            [float(x) for x in d.get("closes", ())], None if d.get("suspect") is None else float(d["suspect"]), refused,
        )


__all__ = ["BarCheck", "DAILY_MAX_JUMP_RATIO", "DEFAULT_MAX_JUMP_RATIO", "REASONS", "REFERENCE_BARS", "max_jump_ratio_for"]
