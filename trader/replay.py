"""Batch replay: run an :class:`~.engine.Engine` over a whole bar series, fast, with the same results.

:meth:`Engine.on_bar` does everything per bar: features, model, end-of-day
rule, sizing, both books, governor. Over a historical series most of that is
vectorisable, and on most bars nothing but the marks moves. :func:`run`:

1. computes, for the whole series at once, what does not depend on the
   engine's state: the feature rows (:func:`~.features.feature_matrix` with the
   engine stream's spec, equal bit for bit to the stream's rows), P(up) and the signal, the end-of-day
   phase of every fill time and its session open
   (:meth:`~.session.SessionClock.phases`), the local date (the symbol's exchange) of every bar;
2. walks the bars: a run of *quiet* bars (nothing working, target equal to
   the position, governor state unchanged) is applied in one call to
   :meth:`Engine.advance_quiet`; every other bar (an order, a fill, a day
   change, a bad price, a state change) goes through :meth:`Engine.step`, the
   per-bar path itself, with the precomputed P(up);
3. leaves the engine's feature stream primed with the last bars, so the
   engine can go on bar by bar (live, or :meth:`Engine.on_bar`).

Every figure of :meth:`Engine.stats`, the governor and sizer states and the
broker's RNG come out equal to an :meth:`Engine.on_bar` loop over the same
bars (``tests/unit/trader/test_trader_replay.py`` checks it on real bars in
several settings). Throughput is in ``make bench`` (``bench/bench_replay.py``).

Daily bars (one per session): every bar starts a new local date, so no run of
bars is quiet and every bar goes through :meth:`Engine.step` (the same results by
construction). A daily series is not looped (:func:`run` refuses ``stop`` beyond it):
a loop shifts whole weeks, which would put daily bars on holidays and, across DST, off
the session opens.

P(up) in batch: the model's ``p_up_rows(X)`` when it has one (it must equal
``p_up_one`` row by row, bit for bit); otherwise ``p_up_one`` per row.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np

from .barcheck import REFERENCE_BARS, BarCheck
from .engine import BarRun, Engine, signal_of
from .features import feature_matrix
from .marketdata import Bar, Bars, loop_offset
from .session import NO_SESSION

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _p_up(model, X: np.ndarray) -> np.ndarray:
    """P(up) per feature row, shape (n,); NaN rows (warm-up) stay NaN."""
    p = np.full(len(X), np.nan)
    ok = np.isfinite(X).all(axis=1)
    if not ok.any():
        return p
    rows = getattr(model, "p_up_rows", None)
    if rows is not None:
        p[ok] = rows(X[ok])
    else:
        p[ok] = [float(model.p_up_one(x)) for x in X[ok]]
    return p


def _accepted(check: BarCheck, ts: np.ndarray, o, h, lo, c, v) -> np.ndarray:
    """Which bars the engine's own :class:`~.barcheck.BarCheck` will accept (bool, shape (n,)),
    without changing it. Fast path (the usual clean series): the first bars one by one on a
    copy, then the rest vectorised under the assumption that every bar is accepted (the median
    of the previous 5 closes is then a plain rolling median); if that finds any refusal, every
    bar is checked one by one on a copy (the sequential rule is the reference)."""
    n = len(ts)
    k = min(n, REFERENCE_BARS)
    chk = check.copy()
    head = [not chk.check(int(ts[i]), float(o[i]), float(h[i]), float(lo[i]), float(c[i]), float(v[i])) for i in range(k)]
    if all(head) and n > k and len(chk.closes) == REFERENCE_BARS and chk.suspect is None:
        r = slice(k, n)
        with np.errstate(invalid="ignore"):
            ok = np.isfinite(o[r]) & np.isfinite(h[r]) & np.isfinite(lo[r]) & np.isfinite(c[r]) & np.isfinite(v[r])
            ok &= (o[r] > 0) & (h[r] > 0) & (lo[r] > 0) & (c[r] > 0) & (v[r] >= 0) & (h[r] >= lo[r])
        ok &= np.diff(ts[k - 1:]) > 0
        if ok.all():
            hist = np.concatenate([np.asarray(chk.closes, dtype=float), np.asarray(c[r], dtype=float)])
            ref = np.median(np.lib.stride_tricks.sliding_window_view(hist, REFERENCE_BARS)[: n - k], axis=1)
            lim = chk.max_jump_ratio * ref
            if not ((np.abs(c[r] - ref) > lim) | (np.abs(o[r] - ref) > lim)).any():
                return np.ones(n, dtype=bool)
    chk = check.copy()
    return np.fromiter(
        (not chk.check(t, a, b, d, e, f) for t, a, b, d, e, f in zip(ts.tolist(), o.tolist(), h.tolist(), lo.tolist(),
                                                                      c.tolist(), v.tolist())),
        dtype=bool, count=n,
    )


def run(engine: Engine, bars: Bars, stop: int | None = None, *, start: int = 0) -> int:
    """Feed bars ``start .. stop - 1`` of the looped series to ``engine`` and return how many.

    The looped series is what :func:`~.marketdata.replay` yields: ``bars`` over and
    over, each loop shifted by whole weeks (:func:`~.marketdata.loop_offset`), so
    ``stop`` may exceed ``len(bars)`` (default: ``len(bars)``, one pass). Calls with
    consecutive ranges continue each other exactly. The engine ends in the state an
    :meth:`Engine.on_bar` loop over the same bars would leave (see module
    docstring); its feature window continues from where it was. Raises ValueError
    for an empty series or range.
    """
    n0 = len(bars)
    stop = n0 if stop is None else stop
    if n0 == 0 or not 0 <= start < stop:
        raise ValueError(f"replay needs bars and a range 0 <= start < stop, got {n0} bars, [{start}, {stop})")
    if stop > n0 and engine.config.daily:
        raise ValueError(
            f"daily bars are not looped ({stop} bars asked, the series has {n0}): a loop shifts whole weeks, "
            f"which puts daily bars on holidays and off the session opens"
        )
    off = loop_offset(bars)
    first, last = start // n0, -(-stop // n0)
    cut = slice(start - first * n0, stop - first * n0)
    ts = np.concatenate([bars.ts + off * k for k in range(first, last)]).astype("datetime64[us]").astype("int64")[cut] * 1000
    o, h, lo, c, v = (
        np.tile(np.asarray(a, dtype=float), last - first)[cut] for a in (bars.open, bars.high, bars.low, bars.close, bars.volume)
    )
    n = len(ts)
    valid = _accepted(engine.bar_check, ts, o, h, lo, c, v)

    # features of the valid bars, continuing the engine's window (the stream skips bad bars)
    held = engine.features.window()
    w = len(held["close"])
    cols = [np.concatenate([np.asarray(held[k], dtype=float), a[valid]])
            for k, a in (("high", h), ("low", lo), ("close", c), ("volume", v))]
    p = np.full(n, np.nan)
    warm = np.ones(n, dtype=bool)
    X = feature_matrix(*cols, engine.features.spec)[w:]
    p[valid] = _p_up(engine.model, X)
    warm[valid] = ~np.isfinite(X).all(axis=1)
    signal = signal_of(p, engine.config.entry_threshold)
    signal[warm] = 0

    # fill time (next bar's open) and price time (this bar's close) of every bar: ts + 1 bar
    # intraday; daily bars: the next session's open and this session's close
    fill_ns, price_ns = engine.calendar.bar_times_ns(ts, engine.config.bar_seconds)
    phase, open_ns = engine.sessions.phases(fill_ns)
    if engine.config.daily:
        open_ns = np.full_like(open_ns, NO_SESSION)  # as Engine.step: no intraday ATR on daily bars
    day = engine.calendar.local_days(ts).astype("int64")
    # a quiet run stops at a bar that may want an order (which depends on the sign of the
    # position: one "next stop" table per sign), a bad bar or a change of the exchange's local date
    brk = ~valid | np.r_[True, day[1:] != day[:-1]]
    at = np.arange(n)
    next_stop = {}
    for sign in (-1, 0, 1):
        ends_run = brk | engine.wants_order(signal, phase, sign)
        next_stop[sign] = np.minimum.accumulate(np.where(ends_run, at, n)[::-1])[::-1].tolist()

    cur_day = None if engine._day is None else int(np.datetime64(engine._day, "D").astype("int64"))
    step, advance, live = engine.step, engine.advance_quiet, engine.live
    valid_l, day_l = valid.tolist(), day.tolist()
    i = 0
    while i < n:
        if valid_l[i] and day_l[i] == cur_day and engine._pending is None:
            pos = live.position
            j = next_stop[(pos > 0) - (pos < 0)][i]
            if j > i:
                i += advance(BarRun(ts[i:j], h[i:j], lo[i:j], c[i:j], signal[i:j], phase[i:j], open_ns[i:j], price_ns[i:j],
                                       v[i:j]))
                if i >= n:
                    break
        bar = Bar(
            ts=_EPOCH + timedelta(microseconds=int(ts[i]) // 1000), open=float(o[i]), high=float(h[i]),
            low=float(lo[i]), close=float(c[i]), volume=float(v[i]),
        )
        step(bar, None if warm[i] else float(p[i]))
        cur_day = day_l[i]
        i += 1

    # prime the feature stream with the last lookback valid bars (what on_bar would hold), same spec
    engine.features = engine.features.refilled(*(a[-engine.features.lookback:].tolist() for a in cols))
    return n


__all__ = ["run"]
