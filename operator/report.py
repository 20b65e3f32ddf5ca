"""The daily report of one strategy (``kubectl quantramp report daily``), pure: built from Prometheus
range series already fetched and from the TradingStrategy's status, rendered as markdown, and an
equity curve drawn as a PNG (matplotlib, Agg). No I/O but the PNG file; the plugin fetches.

Source: seed 003 §1.1 ("Review daily report", ``daily_report_generator.py --date``), §1.2 (the
metrics to watch), §3 (rollbacks) and §6 (the post-mortem's timeline); DESIGN.md (units, labels).

The day. ``--date D`` is the UTC calendar day ``[D 00:00Z, D+1 00:00Z)`` of wall time, the time
Prometheus samples and ``status.history`` are stamped in (clipped to "now" for today). The trader
also has a *trading date* of its own (market time of its bars, ``quantramp_trading_date``): a
replayed pod runs many trading dates in a wall-clock day, so the report names the trading dates
seen and gives ``quantramp_day_pnl_usd`` of the last one, beside the wall-clock day's change.

Series (:data:`QUERIES`, aggregated ``by (role, stage)`` over the pods, so a restarted pod's new
series continues the old one). Each trader series is cumulative over its durable book (one book per
role and stage scope), so the day's figure of a (role, stage) row is:

=========================  ============================================================  =========
row                        computed from the samples in the window                       unit
=========================  ============================================================  =========
P&L over the day           last - first of ``quantramp_pnl_usd`` (net of fees)            USD
day P&L (trading date)     last ``quantramp_day_pnl_usd`` and its ``quantramp_trading_date``  USD
fees                       last - first of ``quantramp_fees_usd``                        USD
realised / modelled slip.  last ``quantramp_slippage_{realized,modeled}_bps`` (book means)  bps
slippage ratio             realised / modelled (the runbook's 1.5x gate, 2x/3x alerts)   ratio
fills (trades)             increase of ``quantramp_trades_total`` (resets handled)        count
fill ratio                 last ``quantramp_fill_ratio`` (filled / ordered qty, book)     0-1
max drawdown in the day    max of ``quantramp_drawdown_ratio`` samples                    0-1
=========================  ============================================================  =========

A series with no sample in the window gives ``None``, rendered "no data" (never zero, never a
crash); a query that failed is named in the report's "Data problems" section. Critical alerts are
``ALERTS{alertstate="firing", severity="critical"}`` of the strategy, as firing spans (at the
step's resolution). Transitions are ``status.history`` records stamped in the day; incidents are
the day's rollbacks and aborts (history), kill switch engagements and releases
(``status.killHistory``) and JIRA tickets (``status.tickets``, timed by the history record of the
same transition sequence number).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from quantramp.trader import contract as C

#: the report's default Prometheus step, seconds (1,440 points per series over a day)
#: Prometheus' limit of points per series in one query_range answer (it refuses more with a 400), with margin
MAX_POINTS = 10_000

DEFAULT_STEP_S = 60
#: PNG size of the equity curve, pixels (width, height) at :data:`PNG_DPI`
PNG_SIZE_PX = (1000, 600)
PNG_DPI = 100
#: history events counted as rollbacks in the incidents section (the engine's ``_record`` kinds)
ROLLBACK_EVENTS = ("RolledBack", "Aborted")
NO_DATA = "no data"

#: query key -> PromQL template; ``SEL`` stands for the label matchers of one strategy (:func:`selector`)
QUERIES: dict[str, str] = {
    "pnl_usd": f"max by (role, stage) ({C.PNL}{{SEL}})",
    "day_pnl_usd": f"max by (role, stage) ({C.DAY_PNL}{{SEL}})",
    "trading_date": f"max by (role, stage) ({C.TRADING_DATE}{{SEL}})",
    "fees_usd": f"max by (role, stage) ({C.FEES}{{SEL}})",
    "slippage_realized_bps": f"max by (role, stage) ({C.SLIPPAGE_REALIZED}{{SEL}})",
    "slippage_modeled_bps": f"max by (role, stage) ({C.SLIPPAGE_MODELED}{{SEL}})",
    "trades": f"sum by (role, stage) ({C.TRADES}{{SEL}})",
    "fill_ratio": f"min by (role, stage) ({C.FILL_RATIO}{{SEL}})",
    "drawdown_ratio": f"max by (role, stage) ({C.DRAWDOWN}{{SEL}})",
    "capital_usd": f"max by (role, stage) ({C.CAPITAL}{{SEL}})",
    "alerts": 'ALERTS{SEL,alertstate="firing",severity="critical"}',
}


def selector(namespace: str, strategy: str) -> str:
    """The PromQL label matchers of one strategy's series (``namespace`` is added by the scrape)."""
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"')
    return f'namespace="{esc(namespace)}",strategy="{esc(strategy)}"'


def queries(namespace: str, strategy: str) -> dict[str, str]:
    """:data:`QUERIES` for one strategy: {key: PromQL}."""
    sel = selector(namespace, strategy)
    return {k: q.replace("SEL", sel) for k, q in QUERIES.items()}


def day_window(day: date, now: datetime) -> tuple[datetime, datetime]:
    """``[day 00:00Z, min(day+1 00:00Z, now))``, UTC. Raises ValueError for a day that has not begun."""
    start = datetime.combine(day, time(0), tzinfo=timezone.utc)
    if now <= start:
        raise ValueError(f"{day.isoformat()} has not begun yet (it is {now:%Y-%m-%d %H:%M}Z)")
    return start, min(start + timedelta(days=1), now)


# -- series -----------------------------------------------------------------------------------------
Samples = list[tuple[float, float]]  # (unix seconds, value), time-ordered


def samples(item: Mapping[str, Any]) -> Samples:
    """The finite samples of one ``query_range`` matrix item ``{"metric": {...}, "values": [[t, "v"], ...]}``."""
    out = []
    for t, v in item.get("values") or []:
        try:
            x = float(v)
        except (TypeError, ValueError):
            continue
        if math.isfinite(x):
            out.append((float(t), x))
    out.sort()
    return out


def by_role_stage(result: Iterable[Mapping[str, Any]] | None) -> dict[tuple[str, str], Samples]:
    """{(role, stage): samples} of a matrix result (items of one (role, stage) merged, time-ordered)."""
    out: dict[tuple[str, str], Samples] = {}
    for item in result or []:
        m = item.get("metric") or {}
        key = (str(m.get("role", "")), str(m.get("stage", "")))
        out.setdefault(key, []).extend(samples(item))
    for k in out:
        out[k].sort()
    return out


def change(s: Samples) -> float | None:
    """last - first value (USD for the P&L and fee series); None without samples."""
    return s[-1][1] - s[0][1] if s else None


def increase(s: Samples) -> float | None:
    """Increase of a counter over the samples, a drop counted as a reset (Prometheus' rule); None without samples."""
    if not s:
        return None
    total = 0.0
    for (_, a), (_, b) in zip(s, s[1:]):
        total += b - a if b >= a else b
    return total


def last(s: Samples) -> float | None:
    """The last value; None without samples."""
    return s[-1][1] if s else None


def peak(s: Samples) -> float | None:
    """The largest value; None without samples."""
    return max(v for _, v in s) if s else None


def trading_date_text(v: float | None) -> str | None:
    """The number YYYYMMDD of ``quantramp_trading_date`` as ``YYYY-MM-DD`` (None if absent or implausible)."""
    if v is None or v < 19000101:
        return None
    d = int(v)
    return f"{d // 10000:04d}-{d // 100 % 100:02d}-{d % 100:02d}"


# -- the report -------------------------------------------------------------------------------------
@dataclass
class RoleDay:
    """One (role, stage) row of the day. USD, bps, ratios 0-1, counts; None = no data."""

    role: str
    stage: str
    pnl_usd: float | None = None
    day_pnl_usd: float | None = None
    trading_date: str | None = None
    trading_dates: list[str] = field(default_factory=list)
    fees_usd: float | None = None
    slippage_realized_bps: float | None = None
    slippage_modeled_bps: float | None = None
    slippage_ratio: float | None = None
    trades: int | None = None
    fill_ratio: float | None = None
    max_drawdown_ratio: float | None = None
    capital_usd: float | None = None

    @property
    def label(self) -> str:
        return f"{self.role or '?'} / {self.stage or '-'}"


@dataclass
class AlertSpan:
    """A critical alert firing in the day: from ``start`` to ``end`` (UTC, at the query step's resolution)."""

    alertname: str
    role: str
    stage: str
    start: datetime
    end: datetime
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Curve:
    """One (role, stage)'s P&L (USD) and drawdown (0-1) over the day, for the equity curve."""

    role: str
    stage: str
    pnl: Samples = field(default_factory=list)
    drawdown: Samples = field(default_factory=list)


@dataclass
class DailyReport:
    """Everything the markdown and the PNG show (see the module docstring for every figure)."""

    namespace: str
    strategy: str
    day: date
    start: datetime
    end: datetime
    generated_at: datetime
    step_s: float
    phase: str = ""
    stage: str = ""
    champion_version: str | None = None
    challenger_version: str | None = None
    capital_usd: float | None = None
    kill_engaged: bool = False
    rows: list[RoleDay] = field(default_factory=list)
    totals: dict[str, float | int | None] = field(default_factory=dict)
    alerts: list[AlertSpan] = field(default_factory=list)
    transitions: list[dict[str, Any]] = field(default_factory=list)
    rollbacks: list[dict[str, Any]] = field(default_factory=list)
    kills: list[dict[str, Any]] = field(default_factory=list)
    tickets: list[dict[str, Any]] = field(default_factory=list)
    curves: list[Curve] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (times ISO UTC; curves left out: they are in the PNG)."""
        d = asdict(self)
        d.pop("curves")
        return _jsonable(d)


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, datetime):
        return v.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(v, date):
        return v.isoformat()
    return v


def parse_time(v: Any) -> datetime | None:
    """An ISO time from the status (``...Z`` or with an offset) as an aware UTC datetime; None if unreadable."""
    if isinstance(v, datetime):
        t = v
    else:
        try:
            t = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
        except ValueError:
            return None
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _in(t: datetime | None, start: datetime, end: datetime) -> bool:
    return t is not None and start <= t < end


def alert_spans(result: Iterable[Mapping[str, Any]] | None, step_s: float) -> list[AlertSpan]:
    """Firing spans of ALERTS range series: samples less than 1.5 steps apart are one span."""
    spans: list[AlertSpan] = []
    for item in result or []:
        m = {str(k): str(v) for k, v in (item.get("metric") or {}).items()}
        ts = [t for t, v in samples(item) if v > 0]
        if not ts:
            continue
        first = prev = ts[0]
        for t in ts[1:] + [math.inf]:
            if t - prev > 1.5 * step_s:
                spans.append(AlertSpan(m.get("alertname", "?"), m.get("role", ""), m.get("stage", ""),
                                       datetime.fromtimestamp(first, timezone.utc), datetime.fromtimestamp(prev, timezone.utc),
                                       {k: v for k, v in m.items() if k not in ("__name__", "alertstate")}))
                first = t
            prev = t
    spans.sort(key=lambda a: (a.start, a.alertname, a.role))
    return spans


def build_daily(
    namespace: str,
    strategy: str,
    day: date,
    start: datetime,
    end: datetime,
    series: Mapping[str, Any],
    obj: Mapping[str, Any],
    *,
    errors: Mapping[str, str] | None = None,
    step_s: float = DEFAULT_STEP_S,
    generated_at: datetime | None = None,
) -> DailyReport:
    """The report of ``strategy`` for ``day`` (window ``[start, end)``, UTC).

    ``series``: {query key of :data:`QUERIES`: ``query_range`` matrix result (list of
    ``{"metric", "values"}``)}; a key absent or None means no data. ``errors``: {query key: error
    text} of the queries that failed. ``obj``: the TradingStrategy (``spec``, ``status`` as the API
    server returns them, camelCase); ``{}`` works. Pure: never raises on missing or odd data.
    """
    st = dict(obj.get("status") or {})
    spec = dict(obj.get("spec") or {})
    rep = DailyReport(
        namespace=namespace, strategy=strategy, day=day, start=start, end=end,
        generated_at=generated_at or datetime.now(timezone.utc), step_s=step_s,
        phase=str(st.get("phase") or "Pending"), stage=str(st.get("stage") or ""),
        champion_version=st.get("championVersion"), challenger_version=st.get("challengerVersion"),
        capital_usd=spec.get("capitalUsd"), kill_engaged=bool((st.get("killSwitch") or {}).get("engaged")),
        errors=dict(errors or {}),
    )
    grouped = {k: by_role_stage(series.get(k)) for k in QUERIES if k != "alerts"}
    keys = sorted({rs for g in grouped.values() for rs in g}, key=lambda rs: (rs[0] != "champion", rs[0], rs[1]))
    for role, stage in keys:
        def get(k: str) -> Samples:
            return grouped[k].get((role, stage), [])
        row = RoleDay(role=role, stage=stage)
        row.pnl_usd = change(get("pnl_usd"))
        row.day_pnl_usd = last(get("day_pnl_usd"))
        dates = sorted({d for d in (trading_date_text(v) for _, v in get("trading_date")) if d})
        row.trading_dates = dates
        row.trading_date = trading_date_text(last(get("trading_date")))
        row.fees_usd = change(get("fees_usd"))
        row.slippage_realized_bps = last(get("slippage_realized_bps"))
        row.slippage_modeled_bps = last(get("slippage_modeled_bps"))
        if row.slippage_realized_bps is not None and row.slippage_modeled_bps:
            row.slippage_ratio = row.slippage_realized_bps / row.slippage_modeled_bps
        inc = increase(get("trades"))
        row.trades = None if inc is None else int(round(inc))
        row.fill_ratio = last(get("fill_ratio"))
        row.max_drawdown_ratio = peak(get("drawdown_ratio"))
        row.capital_usd = last(get("capital_usd"))
        rep.rows.append(row)
        rep.curves.append(Curve(role, stage, get("pnl_usd"), get("drawdown_ratio")))

    def total(attr: str) -> float | None:
        vals = [getattr(r, attr) for r in rep.rows if getattr(r, attr) is not None]
        return sum(vals) if vals else None
    rep.totals = {"pnl_usd": total("pnl_usd"), "fees_usd": total("fees_usd"), "trades": total("trades"),
                  "max_drawdown_ratio": max((r.max_drawdown_ratio for r in rep.rows if r.max_drawdown_ratio is not None),
                                            default=None)}
    rep.alerts = alert_spans(series.get("alerts"), step_s)

    history = [h for h in st.get("history") or [] if isinstance(h, Mapping)]
    for h in history:
        t = parse_time(h.get("time"))
        if _in(t, start, end):
            rec = {"time": t, "seq": h.get("seq"), "event": str(h.get("event", "")), "from": h.get("fromPhase", ""),
                   "to": h.get("toPhase", ""), "stage": h.get("stage", ""), "by": h.get("by", ""), "reason": h.get("reason", "")}
            rep.transitions.append(rec)
            if rec["event"] in ROLLBACK_EVENTS:
                rep.rollbacks.append(rec)
    rep.transitions.sort(key=lambda r: (r["time"], r["seq"] or 0))
    for k in st.get("killHistory") or []:
        t = parse_time(k.get("time"))
        if _in(t, start, end):
            rep.kills.append({"time": t, "action": k.get("action", ""), "trigger": k.get("trigger", ""), "by": k.get("by", ""),
                              "reason": k.get("reason", ""), "latencySeconds": k.get("latencySeconds")})
    rep.kills.sort(key=lambda r: r["time"])
    by_seq = {h.get("seq"): h for h in history}
    for tid, key in (st.get("tickets") or {}).items():
        try:
            seq = int(str(tid).rsplit(".", 1)[-1])
        except ValueError:
            seq = None
        h = by_seq.get(seq)
        t = parse_time(h.get("time")) if h else None
        if _in(t, start, end):
            rep.tickets.append({"time": t, "transition": tid, "key": key, "event": h.get("event", "") if h else ""})
    rep.tickets.sort(key=lambda r: r["time"])
    return rep


# -- markdown ---------------------------------------------------------------------------------------
def fmt_usd(v: float | None, signed: bool = True) -> str:
    """``+1,234.56 USD`` (``no data`` for None)."""
    if v is None:
        return NO_DATA
    return f"{v:+,.2f} USD" if signed else f"{v:,.2f} USD"


def fmt_bps(v: float | None) -> str:
    """``1.23 bps``."""
    return NO_DATA if v is None else f"{v:.2f} bps"


def fmt_pct(v: float | None, digits: int = 2) -> str:
    """A ratio 0-1 as a percentage, ``12.34%``."""
    return NO_DATA if v is None else f"{100 * v:.{digits}f}%"


def fmt_ratio(v: float | None) -> str:
    """A multiple, ``1.23x``."""
    return NO_DATA if v is None else f"{v:.2f}x"


def _t(v: datetime | None) -> str:
    return "-" if v is None else v.strftime("%H:%M:%S")


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


#: the metric rows of the evidence table: (title, how to format a RoleDay)
ROWS: tuple[tuple[str, Any], ...] = (
    ("P&L over the day (net of fees)", lambda r: fmt_usd(r.pnl_usd)),
    ("Day P&L (trading date)", lambda r: NO_DATA if r.day_pnl_usd is None else
     f"{fmt_usd(r.day_pnl_usd)} ({r.trading_date or 'date unknown'})"),
    ("Fees", lambda r: fmt_usd(r.fees_usd, signed=False)),
    ("Realised slippage", lambda r: fmt_bps(r.slippage_realized_bps)),
    ("Modelled slippage", lambda r: fmt_bps(r.slippage_modeled_bps)),
    ("Slippage realised / modelled", lambda r: fmt_ratio(r.slippage_ratio)),
    ("Fills (trades)", lambda r: NO_DATA if r.trades is None else str(r.trades)),
    ("Fill ratio", lambda r: fmt_pct(r.fill_ratio, 1)),
    ("Max drawdown in the day", lambda r: fmt_pct(r.max_drawdown_ratio)),
    ("Capital allocated (last)", lambda r: fmt_usd(r.capital_usd, signed=False)),
    ("Trading dates seen", lambda r: ", ".join(r.trading_dates) if r.trading_dates else NO_DATA),
)


def render_markdown(rep: DailyReport, png_name: str | None = None) -> str:
    """The report as markdown (seed 003 §1.1's ``daily_report_YYYY-MM-DD.md``); ``png_name`` links the equity curve."""
    out: list[str] = []
    add = out.append
    add(f"# Daily report: {rep.namespace}/{rep.strategy}, {rep.day.isoformat()}")
    add("")
    add(f"Window {rep.start:%Y-%m-%d %H:%M}Z to {rep.end:%Y-%m-%d %H:%M}Z (UTC wall-clock day), Prometheus step "
        f"{rep.step_s:g} s. Generated {rep.generated_at:%Y-%m-%d %H:%M:%S}Z.")
    add("")
    add("| | |")
    add("|---|---|")
    add(f"| Phase | {_cell(rep.phase)}{' (kill switch ENGAGED)' if rep.kill_engaged else ''} |")
    add(f"| Stage | {_cell(rep.stage or '-')} |")
    add(f"| Champion / challenger version | {rep.champion_version or '-'} / {rep.challenger_version or '-'} |")
    add(f"| Strategy capital | {fmt_usd(rep.capital_usd, signed=False)} |")
    add(f"| P&L over the day, all roles | {fmt_usd(rep.totals.get('pnl_usd'))} |")
    add(f"| Fees over the day, all roles | {fmt_usd(rep.totals.get('fees_usd'), signed=False)} |")
    tr = rep.totals.get("trades")
    add(f"| Fills over the day, all roles | {NO_DATA if tr is None else int(tr)} |")
    add(f"| Critical alerts | {len(rep.alerts)} |")
    add(f"| Incidents | {len(rep.rollbacks)} rollback(s)/abort(s), "
        f"{sum(1 for k in rep.kills if k['action'] == 'Engaged')} kill(s), {len(rep.tickets)} ticket(s) |")
    add("")
    add("## P&L and execution by role and stage")
    add("")
    cols = rep.rows or [RoleDay(role="", stage="")]
    head = [r.label if rep.rows else "all roles" for r in cols]
    add("| metric | " + " | ".join(_cell(h) for h in head) + " |")
    add("|---|" + "---|" * len(cols))
    for title, f in ROWS:
        add(f"| {title} | " + " | ".join(_cell(f(r)) for r in cols) + " |")
    add("")
    add("P&L and fees are the change of the book's cumulative series over the window; slippage and fill "
        "ratio are the book's running means at the end of the window (seed 003 §1.2: slippage warning 2x, "
        "critical 3x; fill rate warning < 95%, critical < 90%).")
    add("")
    if png_name:
        add(f"![Equity curve]({png_name})")
        add("")
    add("## Critical alerts")
    add("")
    if rep.alerts:
        add("| alert | role / stage | firing from | to |")
        add("|---|---|---|---|")
        for a in rep.alerts:
            add(f"| {_cell(a.alertname)} | {_cell(a.role or '-')} / {_cell(a.stage or '-')} | {_t(a.start)} | {_t(a.end)} |")
    else:
        add(NO_DATA if "alerts" in rep.errors else "None fired.")
    add("")
    add("## Transitions")
    add("")
    if rep.transitions:
        add("| time (UTC) | event | from | to | stage | by | reason |")
        add("|---|---|---|---|---|---|---|")
        for r in rep.transitions:
            add(f"| {_t(r['time'])} | {_cell(r['event'])} | {_cell(r['from'])} | {_cell(r['to'])} | {_cell(r['stage'])} | "
                f"{_cell(r['by'])} | {_cell(r['reason'])} |")
    else:
        add("None in this day.")
    add("")
    add("## Incidents")
    add("")
    if not (rep.rollbacks or rep.kills or rep.tickets):
        add("None in this day.")
    lines: list[tuple[datetime, int, str]] = []
    for r in rep.rollbacks:
        lines.append((r["time"], 0, f"- {_t(r['time'])} **{r['event']}** ({r['stage'] or '-'}) by {r['by']}: {r['reason']}"))
    for k in rep.kills:
        lat = "" if k.get("latencySeconds") is None else f", broadcast to last ack {k['latencySeconds']} s"
        lines.append((k["time"], 1, f"- {_t(k['time'])} kill switch **{k['action']}** ({k['trigger']}) by {k['by']}: "
                                    f"{k['reason']}{lat}"))
    for t in rep.tickets:
        lines.append((t["time"], 2, f"- {_t(t['time'])} ticket **{t['key']}** for {t['event'] or 'transition'} {t['transition']}"))
    out.extend(text for _, _, text in sorted(lines, key=lambda x: (x[0], x[1])))
    add("")
    if rep.errors:
        add("## Data problems")
        add("")
        for k, e in sorted(rep.errors.items()):
            add(f"- `{k}`: {_cell(e)}")
        add("")
    return "\n".join(out)


# -- the equity curve -------------------------------------------------------------------------------
def draw_equity_png(rep: DailyReport, path: str | Path, size_px: tuple[int, int] = PNG_SIZE_PX, dpi: int = PNG_DPI) -> Path:
    """Draw the day's equity curve to ``path`` (PNG, ``size_px`` pixels): top, each (role, stage)'s
    cumulative P&L net of fees (USD, ``quantramp_pnl_usd``); bottom, its drawdown (%). A day without
    data still gives a PNG that says so. Uses the Agg canvas directly (no pyplot, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    fig = Figure(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    fig.suptitle(f"{rep.namespace}/{rep.strategy} {rep.day.isoformat()}: equity curve (P&L net of fees)")
    drawn = False
    for i, c in enumerate(rep.curves):
        colour = f"C{i % 10}"  # one colour per (role, stage) in both panels
        if c.pnl:
            top.plot([datetime.fromtimestamp(t, timezone.utc) for t, _ in c.pnl], [v for _, v in c.pnl],
                     label=f"{c.role} / {c.stage}", linewidth=1.2, color=colour, marker="." if len(c.pnl) == 1 else None)
            drawn = True
        if c.drawdown:
            bottom.plot([datetime.fromtimestamp(t, timezone.utc) for t, _ in c.drawdown], [100 * v for _, v in c.drawdown],
                        linewidth=1.0, color=colour, marker="." if len(c.drawdown) == 1 else None)
    if drawn:
        top.legend(loc="best", fontsize="small")
    else:
        top.text(0.5, 0.5, "no data", ha="center", va="center", transform=top.transAxes, fontsize=16)
    top.set_ylabel("P&L (USD)")
    top.grid(True, alpha=0.3)
    top.axhline(0.0, color="grey", linewidth=0.6)
    bottom.set_ylabel("drawdown (%)")
    bottom.set_xlabel("time (UTC)")
    bottom.grid(True, alpha=0.3)
    bottom.set_xlim(rep.start, rep.end)
    from matplotlib.dates import DateFormatter

    bottom.xaxis.set_major_formatter(DateFormatter("%H:%M", tz=timezone.utc))
    fig.savefig(path, format="png", dpi=dpi)
    return path


def file_names(strategy: str, day: date) -> tuple[str, str]:
    """(markdown, PNG) file names of one strategy's report for ``day`` (seed 003: ``daily_report_<date>.md``)."""
    return f"daily_report_{strategy}_{day.isoformat()}.md", f"equity_{strategy}_{day.isoformat()}.png"


__all__ = [
    "QUERIES", "AlertSpan", "Curve", "DailyReport", "RoleDay", "build_daily", "day_window", "draw_equity_png", "file_names",
    "queries", "render_markdown", "selector",
]
