"""Replay of adverse trades (``kubectl quantramp replay``): the worst recent round trips of a trader
role, and what the current model and governor would do at each of them. Pure but for the engine
runs (numpy, no I/O); the plugin reads Redis, the API server and MLflow.

Source: seed 003 "Replay Adverse Trades" (``replay_suite.py --last-n 10``, ``--threshold -50``,
``--date``), §2.1 (pull the trades of a loss-limit breach) and §3.3 (investigate after a rollback).

What exists. The trader keeps no list of fills or trades anywhere: Prometheus has counters and
running means, and the durable book in Redis
(``quantramp:{ns}:{strategy}:{role}:{scope}:{day}:book``, field ``engine`` =
:meth:`~quantramp.trader.engine.Engine.snapshot`) holds the state *after the last bar of that
trading day*: positions, cash, counters, the working order, the feature window, the governor and
sizer states and the SimBroker's RNG. It is enough to re-create the trades, because the engine is
deterministic given its state, the model and the bars:

1. the start state is the role's newest book of a trading date *before* the day (the state after
   that day's last bar, i.e. at the day's open), else a fresh engine at the start of the market
   data (a book's first pod starts there, :func:`quantramp.trader.server.replay_from`); the days
   between that book and the day are re-run with the model that traded them;
2. the bars are the trader's own feed: the strategy's bars (``spec.marketData``; every symbol of a
   several-symbol book, merged in time order) looped as the pod loops them, by whole weeks or, for
   daily bars, by sessions of each symbol's calendar (:func:`~quantramp.trader.server.replay_from`
   after the start book's last bar), up to the day book's last bar (``bar_ts``);
3. the model is the one the day's book was traded with (its ``model_uri``), the engine settings
   the role's pod contract (:func:`~quantramp.operator.workloads.render_deployments` ->
   :class:`~quantramp.trader.server.TraderSettings`) at the book's capital; the bars go through
   :meth:`Engine.on_bar`, the per-bar path the pod runs (:mod:`quantramp.trader.replay` batches
   quiet bars to the same end state but does not expose each bar's fill and decision);
4. the result is **verified** against the day's book: trades, position (of each symbol) and P&L
   must match exactly; otherwise the report says "differs" with both figures (the runtime's gates, which
   the engine alone does not see, acted that day: a kill switch, the pause gate, a Redis outage,
   a capital change within the day, a restart that abandoned an order).

The fills are cut into round trips (flat -> position -> flat; a flip closes one and opens the
next; commissions split pro rata), P&L net of fees, USD. For "now", a second engine starts from
the same state at the day's open with the *current* model (the MLflow ``champion`` alias, or a URI given) and
the current spec's limits and runs the same bars; at each worst trip's entry decision bar it
reports P(up), the signal, the order it wanted and the governor's verdict (allowed, clipped or
denied, with reasons), and its marked P&L over the trip's bars. That is a counterfactual of the
whole day under the current model from the same start, not an isolated re-decision: its position
at the entry bar may differ from the original's, and the table says so.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

#: the round trips' verdicts under the current model
SAME, SMALLER, LARGER, NO_SIGNAL, HOLDING, DENIED, OPPOSITE, NO_BAR = (
    "same", "smaller", "larger", "no entry: P(up) inside the band", "no entry: already positioned",
    "denied by the governor", "opposite side", "bar not reached")


@dataclass
class FillEvent:
    """One booked live fill. ts: the fill bar's start (UTC; filled at its open). qty: signed shares
    filled. price: average fill price, USD/share. commission_usd: fees, USD. decided_at: the bar
    whose close decided the order (UTC). closing: an end-of-day / halt / reduce-only order."""

    ts: datetime
    qty: int
    price: float
    commission_usd: float
    slippage_bps: float = 0.0
    decided_at: datetime | None = None
    closing: bool = False


@dataclass
class BarRecord:
    """What the engine did on one bar. p_up: P(up) (None in warm-up); signal +1/-1/0; position: shares
    before the decision (after this bar's fill); order_qty: shares decided for the next open;
    reasons: the governor's reason codes; denied / clipped: its verdict; pnl_usd: live P&L after
    the bar (marked at its close), USD."""

    ts: datetime
    p_up: float | None
    signal: int
    position: int
    order_qty: int
    reasons: tuple[str, ...] = ()
    denied: bool = False
    clipped: bool = False
    closing: bool = False
    pnl_usd: float = 0.0
    refused: str = ""


@dataclass
class DayRun:
    """One engine's run over the recorded bars of a day: every bar's record (by ts), the live fills,
    the position at the first recorded bar and the engine's end figures (USD, shares, counts)."""

    bars: dict[datetime, BarRecord] = field(default_factory=dict)
    fills: list[FillEvent] = field(default_factory=list)
    start_position: int = 0
    start_pnl_usd: float = 0.0
    start_mark: float = math.nan
    last_close: float = math.nan
    end_pnl_usd: float = 0.0
    end_position: int = 0
    end_trades: int = 0
    bars_fed: int = 0
    #: the decision still working after the last bar: (decision bar ts, closing), for a run that continues
    pending: tuple[datetime, bool] | None = None


@dataclass
class RoundTrip:
    """A round trip: from flat to a position and back. side +1 long / -1 short; qty: largest |position|,
    shares; prices USD/share (share-weighted); pnl_usd net of fees_usd; open: not closed by the
    last recorded bar (P&L marked at its close); inherited: the position was open at the day's start."""

    side: int
    qty: int
    entry_ts: datetime
    exit_ts: datetime | None
    decided_at: datetime | None
    entry_price: float
    exit_price: float | None
    pnl_usd: float
    fees_usd: float
    fills: int
    open: bool = False
    inherited: bool = False


def capture(engine: Any, bars: Iterable[Any], record_day: str | None = None, *,
            day_of: Any = None, pending: tuple[datetime, bool] | None = None) -> DayRun:
    """Feed ``bars`` to ``engine`` (:meth:`Engine.on_bar`, bar by bar) and record the bars whose
    trading date (``day_of(bar.ts)``, YYYY-MM-DD) is ``record_day`` (None: every bar): each bar's
    decision and verdict, every live fill and the P&L. Bars before the day go through the engine
    unrecorded (they bring its state to the day's open). ``pending``: the decision working when the
    run starts (from a previous run's :attr:`DayRun.pending`). Returns a :class:`DayRun`."""
    day = None if day_of is None else (lambda bar: day_of(bar.ts))
    return capture_book(engine, bars, record_day, day_of=day, pending={"": pending})[""]


def members(engine: Any) -> dict[str, Any]:
    """symbol -> engine of a :class:`~quantramp.trader.portfolio.Portfolio`; {"": engine} for one engine."""
    subs = getattr(engine, "engines", None)
    return dict(subs) if isinstance(subs, Mapping) else {"": engine}


def capture_book(engine: Any, bars: Iterable[Any], record_day: str | None = None, *, day_of: Any = None,
                 pending: Mapping[str, tuple[datetime, bool] | None] | None = None) -> dict[str, DayRun]:
    """:func:`capture` of a book of one engine or of several symbols (a Portfolio: each bar goes through
    the portfolio, recorded on its symbol's run). ``day_of(bar)``: the bar's trading date; ``pending``:
    symbol -> the decision working at the start. Returns symbol -> :class:`DayRun` ("" for one engine)."""
    subs = members(engine)
    runs = {sym: DayRun() for sym in subs}
    pend = {sym: (pending or {}).get(sym) for sym in subs}
    started: set[str] = set()
    for bar in bars:
        sym = bar.symbol if "" not in subs else ""
        sub, run = subs[sym], runs[sym]
        rec = record_day is None or day_of(bar) == record_day
        if rec and sym not in started:
            started.add(sym)
            run.start_position = int(sub.live.position)
            run.start_pnl_usd = float(sub.live.pnl())
            run.start_mark = float(sub.live.mark)
        step = engine.on_bar(bar)
        run.bars_fed += 1
        f, p = step.fill, pend[sym]
        if rec and f is not None and f.filled_qty:
            run.fills.append(FillEvent(bar.ts, int(f.filled_qty), float(f.price), float(f.commission_usd),
                                       float(f.slippage_bps), p[0] if p else None, p[1] if p else False))
        pend[sym] = (bar.ts, bool(step.closing)) if step.order_qty else None
        if rec:
            v = step.verdict
            run.bars[bar.ts] = BarRecord(
                ts=bar.ts, p_up=step.p_up, signal=int(step.signal), position=int(sub.live.position),
                order_qty=int(step.order_qty), reasons=tuple(getattr(r, "value", str(r)) for r in (v.reasons if v else ())),
                denied=bool(v and v.denied), clipped=bool(v and v.clipped), closing=bool(step.closing),
                pnl_usd=float(sub.live.pnl()), refused=step.bar_refused,
            )
            run.last_close = float(bar.close)
    for sym, run in runs.items():
        sub = subs[sym]
        if sym not in started:  # no recorded bar: the start is the end
            run.start_position, run.start_pnl_usd, run.start_mark = int(sub.live.position), float(sub.live.pnl()), float(sub.live.mark)
        run.end_pnl_usd = float(sub.live.pnl())
        run.end_position = int(sub.live.position)
        run.end_trades = int(sub.trades)
        run.pending = pend[sym]
    return runs


def round_trips(fills: list[FillEvent], start_position: int = 0, start_mark: float = math.nan,
                last_mark: float = math.nan, day_start: datetime | None = None) -> list[RoundTrip]:
    """Cut ``fills`` (time-ordered) into round trips. A position open at the start (``start_position``
    shares, entered at ``start_mark``) is an inherited trip; one still open after the last fill is
    marked at ``last_mark``. A fill that crosses zero closes the trip and opens the next one; its
    commission is split in proportion to the shares."""
    trips: list[RoundTrip] = []
    pos = start_position
    cur: dict[str, Any] | None = None
    if pos:
        t0 = day_start or (fills[0].ts if fills else datetime.fromtimestamp(0, timezone.utc))
        cur = {"side": 1 if pos > 0 else -1, "qty": abs(pos), "entry_ts": t0, "decided_at": None, "cash": -pos * start_mark,
               "fees": 0.0, "in_sh": abs(pos), "in_usd": abs(pos) * start_mark, "out_sh": 0, "out_usd": 0.0, "fills": 0,
               "inherited": True}

    def close(ts: datetime | None, open_: bool, mark: float = math.nan) -> None:
        assert cur is not None
        cash = cur["cash"] + (pos * mark if open_ else 0.0)
        trips.append(RoundTrip(
            side=cur["side"], qty=cur["qty"], entry_ts=cur["entry_ts"], exit_ts=ts, decided_at=cur["decided_at"],
            entry_price=cur["in_usd"] / cur["in_sh"] if cur["in_sh"] else math.nan,
            exit_price=(cur["out_usd"] / cur["out_sh"]) if cur["out_sh"] else None,
            pnl_usd=cash - cur["fees"], fees_usd=cur["fees"], fills=cur["fills"], open=open_, inherited=cur["inherited"]))

    for f in fills:
        q = f.qty
        counted = False
        while q:
            if pos == 0:
                cur = {"side": 1 if q > 0 else -1, "qty": 0, "entry_ts": f.ts, "decided_at": f.decided_at, "cash": 0.0,
                       "fees": 0.0, "in_sh": 0, "in_usd": 0.0, "out_sh": 0, "out_usd": 0.0, "fills": 0, "inherited": False}
            assert cur is not None
            if pos == 0 or (q > 0) == (pos > 0):
                part = q  # opens or adds
                cur["in_sh"] += abs(part)
                cur["in_usd"] += abs(part) * f.price
            else:
                part = q if abs(q) < abs(pos) else -pos  # closes (part of) the position; the rest opens the next
                cur["out_sh"] += abs(part)
                cur["out_usd"] += abs(part) * f.price
            cur["cash"] -= part * f.price
            cur["fees"] += f.commission_usd * abs(part) / abs(f.qty)
            if not counted or cur["fills"] == 0:
                cur["fills"] += 1
            counted = True
            pos += part
            q -= part
            cur["qty"] = max(cur["qty"], abs(pos))
            if pos == 0:
                close(f.ts, False)
                cur = None
    if cur is not None and pos:
        close(None, True, last_mark)
    return trips


def worst(trips: list[RoundTrip], n: int, threshold_usd: float | None = None) -> list[RoundTrip]:
    """The ``n`` round trips with the lowest P&L (USD), worst first; with ``threshold_usd`` only those at
    or below it (seed 003: ``--threshold -50``)."""
    pool = [t for t in trips if threshold_usd is None or t.pnl_usd <= threshold_usd]
    return sorted(pool, key=lambda t: (t.pnl_usd, t.entry_ts))[: max(0, n)]


def what_now(trip: RoundTrip, original: DayRun, now: DayRun) -> dict[str, Any]:
    """What the current model and governor did at ``trip``'s entry decision bar in the ``now`` run:
    ``{"p_up", "signal", "position", "order_qty", "reasons", "verdict", "pnl_usd", "original_p_up"}``.
    ``verdict`` is one of the module's constants; ``pnl_usd`` is the ``now`` engine's marked P&L change
    from the decision bar's close to the exit bar's close (USD; None when either bar is missing)."""
    at = trip.decided_at
    orig = original.bars.get(at) if at else None
    rec = now.bars.get(at) if at else None
    out: dict[str, Any] = {"p_up": None, "signal": None, "position": None, "order_qty": None, "reasons": [],
                           "verdict": NO_BAR, "pnl_usd": None, "original_p_up": None if orig is None else orig.p_up,
                           "original_order_qty": None if orig is None else orig.order_qty}
    if rec is None:
        return out
    out.update(p_up=rec.p_up, signal=rec.signal, position=rec.position, order_qty=rec.order_qty, reasons=list(rec.reasons))
    want = orig.order_qty if orig is not None else trip.side * trip.qty
    q = rec.order_qty
    if q and (q > 0) == (want > 0):
        out["verdict"] = SAME if q == want else SMALLER if abs(q) < abs(want) else LARGER
    elif q:
        out["verdict"] = OPPOSITE
    elif rec.denied:
        out["verdict"] = DENIED
    elif rec.signal == 0 or rec.p_up is None:
        out["verdict"] = NO_SIGNAL
    elif rec.signal * trip.side < 0:
        out["verdict"] = OPPOSITE
    else:
        out["verdict"] = HOLDING
    end = now.bars.get(trip.exit_ts) if trip.exit_ts else None
    if end is None and trip.open and now.bars:
        end = now.bars[max(now.bars)]
    if end is not None:
        out["pnl_usd"] = end.pnl_usd - rec.pnl_usd
    return out


def verify(run: DayRun, snapshot: Mapping[str, Any] | None, book_pnl_usd: float | None) -> tuple[bool, str]:
    """Compare the replayed end state with the day's durable book (its engine ``snapshot`` and
    ``pnl_usd``): (exact, text). Exact: same trade count, same position, P&L within 1e-6 USD."""
    if not snapshot:
        return False, "no day book to compare with"
    trades, pos = int(snapshot.get("trades", -1)), int((snapshot.get("live") or {}).get("position", 0))
    pnl = book_pnl_usd
    exact = trades == run.end_trades and pos == run.end_position and pnl is not None and abs(pnl - run.end_pnl_usd) <= 1e-6
    text = (f"trades {run.end_trades} (book {trades}), position {run.end_position} (book {pos}), "
            f"P&L {run.end_pnl_usd:+.2f} USD (book {'?' if pnl is None else f'{pnl:+.2f}'})")
    return exact, ("exact: " if exact else "differs: ") + text


def verify_book(runs: Mapping[str, DayRun], snapshot: Mapping[str, Any] | None, book_pnl_usd: float | None
                ) -> tuple[bool, str]:
    """:func:`verify` of a book of one engine ({"": run}) or of several symbols (the portfolio snapshot's
    ``symbols``): each symbol's trades and position exact, the book's P&L (the sum) within 1e-6 USD."""
    if "" in runs:
        return verify(runs[""], snapshot, book_pnl_usd)
    per = (snapshot or {}).get("symbols")
    if not isinstance(per, Mapping) or set(per) != set(runs):
        return False, "differs: the day book is not a book of " + ", ".join(runs)
    parts, exact = [], True
    for sym, run in runs.items():
        trades, pos = int(per[sym].get("trades", -1)), int((per[sym].get("live") or {}).get("position", 0))
        exact &= trades == run.end_trades and pos == run.end_position
        parts.append(f"{sym} trades {run.end_trades} (book {trades}), position {run.end_position} (book {pos})")
    pnl = sum(r.end_pnl_usd for r in runs.values())
    exact &= book_pnl_usd is not None and abs(book_pnl_usd - pnl) <= 1e-6
    text = "; ".join(parts) + f"; P&L {pnl:+.2f} USD (book {'?' if book_pnl_usd is None else f'{book_pnl_usd:+.2f}'})"
    return exact, ("exact: " if exact else "differs: ") + text


def trip_json(t: RoundTrip) -> dict[str, Any]:
    """A JSON-able round trip (times ISO UTC)."""
    d = asdict(t)
    for k in ("entry_ts", "exit_ts", "decided_at"):
        if d[k] is not None:
            d[k] = d[k].astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    for k in ("entry_price", "exit_price"):
        if isinstance(d[k], float) and not math.isfinite(d[k]):
            d[k] = None
    return d


def role_settings(name: str, namespace: str, obj: Mapping[str, Any], role: str, capital_usd: float, model_uri: str) -> Any:
    """The role's pod contract (:class:`~quantramp.trader.server.TraderSettings`) as the operator renders it
    today (:func:`~quantramp.operator.workloads.render_deployments` from the current spec and status), at
    ``capital_usd`` (the book's; every limit scaled to it as the live allocation does). Raises
    ``ValueError`` (pydantic's, or the contract's ConfigError) on a spec the trader would refuse."""
    from quantramp.trader.server import TraderSettings

    from .models import TradingStrategySpec, TradingStrategyStatus
    from .workloads import render_deployments

    spec = TradingStrategySpec.model_validate(dict(obj.get("spec") or {}))
    status = TradingStrategyStatus.model_validate(dict(obj.get("status") or {}))
    manifest = next(m for m in render_deployments(name, namespace, spec, status) if m["metadata"]["name"].endswith(f"-{role}"))
    env = {e["name"]: e["value"] for e in manifest["spec"]["template"]["spec"]["containers"][0]["env"] if "value" in e}
    risk = spec.risk
    env.update({
        "QR_CAPITAL_USD": repr(float(capital_usd)),
        "QR_MAX_POSITION_USD": f"{capital_usd * risk.max_position_percent / 100:.2f}",
        "QR_MAX_ORDER_USD": f"{capital_usd * risk.max_order_percent / 100:.2f}",
        "QR_MAX_DAILY_LOSS_USD": f"{capital_usd * risk.max_daily_loss_percent / 100:.2f}",
        "QR_MODEL_URI": model_uri or "models:/unknown/1", "MLFLOW_TRACKING_URI": "unused", "POD_IP": "127.0.0.1",
    })
    for k in ("QR_ALLOCATION_KEY", "REDIS_URL"):
        env.pop(k, None)
    if env.get("IB_HOST"):
        env.setdefault("IB_ACCOUNT", "(the Secret's)")  # its value is read by the kubelet; a replay never connects
    return TraderSettings.from_env(env)


def day_bars(bars: Any, day: str, after: datetime | None, until: datetime | None = None, *, bar_seconds: int = 60,
             calendars: Mapping[str, Any] | None = None) -> list[tuple[Any, str]]:
    """The trader's own feed (:func:`~quantramp.trader.server.replay_from`: ``bars``, one symbol's or symbol ->
    bars, looped as the pod loops them, by whole weeks or, daily, by sessions of each symbol's calendar) from the
    first bar after ``after`` (None: the start of the data) to the last bar of trading date ``day`` (YYYY-MM-DD,
    the pod's date: the newest exchange-local date of the bars so far), or to ``until`` (UTC, inclusive) if earlier. Bars of the
    dates before ``day`` are included: they bring a fresh or older engine to the day's open. Returns (bar, the pod's
    date at that bar) pairs."""
    from quantramp.trader.server import replay_from

    out = []
    for bar, bar_day in _with_days(replay_from(bars, after, bar_seconds, calendars), calendars):
        if bar_day > day or (until is not None and bar.ts > until):
            break
        out.append((bar, bar_day))
    return out


def _with_days(feed: Iterable[Any], calendars: Mapping[str, Any] | None) -> Iterable[tuple[Any, str]]:
    """(bar, the pod's trading date at that bar): the newest exchange-local date of the bars so far (each bar's
    date in its symbol's calendar, New York by default), as the pod's runtime keeps it (monotonic)."""
    from quantramp.trader import session as sess

    day = ""
    for bar in feed:
        cal = (calendars or {}).get(bar.symbol) or sess.XNYS
        day = max(day, cal.local_date(bar.ts).isoformat())
        yield bar, day


@dataclass
class Book:
    """One durable book as read from Redis (:func:`quantramp.trader.state.parse_book`): its trading date,
    the engine snapshot and the runtime extras (``bar_ts``, ``model_uri``, ``capital_usd``, ``pnl_usd``...)."""

    day: str
    snapshot: dict[str, Any]
    extra: dict[str, Any]

    @property
    def bar_ts(self) -> datetime | None:
        raw = self.extra.get("bar_ts") or ""
        return datetime.fromisoformat(str(raw)) if raw else None


def replay_role(
    *,
    bars: Any,
    engine_for: Any,
    traded_model: Any,
    current_model: Any,
    day_book: Book,
    start_book: Book | None,
    last_n: int,
    threshold_usd: float | None = None,
    bar_seconds: int = 60,
) -> dict[str, Any]:
    """Re-run one role's trading date ``day_book.day`` and report its worst round trips with what the
    current model would do (see the module docstring). ``engine_for(model, capital_usd)`` builds a
    fresh engine with the role's settings: an Engine, or a Portfolio for a book of several symbols
    (then ``bars`` is symbol -> bars, replayed merged as the pod replays them, and every symbol's
    trips are ranked together); ``bar_seconds``: the bars' length (the feed loops daily bars by
    sessions); ``start_book``: the newest book before the day (None: fresh engine from the start of
    the data). Returns a JSON-able dict: ``day``, ``bars``, ``startedFrom``, ``verification``
    (``exact``, ``text``), ``tripsTotal``, ``pnlUsd`` (original, now: the day's P&L change of each
    run, USD), ``rows`` ([{``trip`` (with its ``symbol`` in a several-symbol book), ``now``}], worst first)."""
    day = day_book.day
    capital = (start_book or day_book).extra.get("capital_usd")
    orig = engine_for(traded_model, capital)
    calendars = {sym: getattr(e, "calendar", None) for sym, e in members(orig).items()}
    feed = day_bars(bars, day, start_book.bar_ts if start_book else None, day_book.bar_ts, bar_seconds=bar_seconds,
                    calendars=calendars)
    split = next((i for i, (_, d) in enumerate(feed) if d >= day), len(feed))
    before, today = [b for b, _ in feed[:split]], [b for b, _ in feed[split:]]
    if start_book is not None:
        orig.restore(start_book.snapshot)
    orig.reconcile()
    warm = capture_book(orig, before, None)  # the days between the start book and the day, as traded
    opening = orig.snapshot()  # the state at the day's open: both runs start the day from it
    now_eng = engine_for(current_model, capital)
    now_eng.restore(opening)
    now_eng.reconcile()
    pending = {sym: r.pending for sym, r in warm.items()}
    original = capture_book(orig, today, pending=pending)
    now = capture_book(now_eng, today, pending=pending)
    for sym, r in warm.items():
        original[sym].bars_fed += r.bars_fed
    try:
        book_pnl = float(day_book.extra.get("pnl_usd"))
    except (TypeError, ValueError):
        book_pnl = None
    exact, text = verify_book(original, day_book.snapshot, book_pnl)
    trips: list[tuple[str, RoundTrip]] = []
    for sym, run in original.items():
        first = min(run.bars) if run.bars else None
        trips += [(sym, t) for t in round_trips(run.fills, run.start_position, run.start_mark, run.last_close, first)]
    by_trip = {id(t): sym for sym, t in trips}
    rows = []
    for t in worst([t for _, t in trips], last_n, threshold_usd):
        sym = by_trip[id(t)]
        trip = trip_json(t) if sym == "" else {"symbol": sym, **trip_json(t)}
        rows.append({"trip": trip, "now": what_now(t, original[sym], now[sym])})

    def total(runs: Mapping[str, DayRun], f: Any) -> Any:
        return sum(f(r) for r in runs.values())
    return {
        "day": day,
        "bars": total(original, lambda r: len(r.bars)),
        "barsFed": total(original, lambda r: r.bars_fed),
        "startedFrom": f"book of {start_book.day}" if start_book else "a fresh engine at the start of the market data",
        "verification": {"exact": exact, "text": text},
        "tripsTotal": len(trips),
        "pnlUsd": {"original": total(original, lambda r: r.end_pnl_usd - r.start_pnl_usd),
                   "now": total(now, lambda r: r.end_pnl_usd - r.start_pnl_usd)},
        "tradesInDay": {"original": total(original, lambda r: len(r.fills)), "now": total(now, lambda r: len(r.fills))},
        "rows": rows,
    }


__all__ = ["BarRecord", "Book", "DayRun", "day_bars", "replay_role", "FillEvent", "RoundTrip", "capture", "capture_book",
           "members", "round_trips", "trip_json", "verify", "verify_book", "what_now", "worst"]
