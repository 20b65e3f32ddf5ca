"""``kubectl quantramp``: the kubectl plugin (console script ``kubectl-quantramp``).

Read: ``status NAME [--watch]``, ``history NAME``, ``kill status NAME``, ``kill history NAME``. Act:
``promote NAME [--full]``, ``abort NAME --reason``, ``retry NAME``, ``pause NAME``, ``resume NAME``,
``clear NAME --reason``, ``kill on|off NAME --reason`` (the kill switch is ``spec.killSwitch``, written
with the kubeconfig user as ``by``; the operator broadcasts it and records the acknowledgements).
Reports and drills (seed 003 §1, seed 004 "Rollback Drill Procedure"): ``report daily NAME [--date]``
(markdown + equity curve PNG, :mod:`.report`), ``replay NAME --last-n N [--threshold USD]`` (the worst
round trips re-run from the traders' Redis books, :mod:`.adverse`), ``drill rollback NAME [--dry-run]``
and ``drill status NAME`` (:mod:`.drill`). Long commands show progress on stderr.

Actions are requests through the API server: the plugin writes the annotation
``quantramp.io/action`` (JSON ``{"id", "action", "reason", "by", "at"}``, ``by`` = the
kubeconfig user) and waits until the operator has taken it (``status.handledAction`` = the
id; default 30 s). The operator takes each id once and records it in ``status.history``
(who, when, why), or refuses it with the reason (e.g. promote over InsufficientData).
Because the request is an ordinary object update, RBAC and a ValidatingAdmissionPolicy can
restrict who may send which action.

Every command takes ``-n/--namespace`` (default: the kubeconfig context's namespace, else
``default``) and ``-o json``; errors are one line on stderr with exit code 1.
"""

from __future__ import annotations

import json
import math
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, Optional

import typer
from rich.console import Console
from rich.table import Table

from .models import GROUP, PLURAL, VERSION

app = typer.Typer(help="Operate quantramp TradingStrategies.", no_args_is_help=True, add_completion=False)
console = Console()
ACTION_ANNOTATION = f"{GROUP}/action"

NamespaceOpt = typer.Option(None, "--namespace", "-n", help="namespace (default: the kubeconfig context's)")
OutputOpt = typer.Option("text", "--output", "-o", help="text or json")


class PluginError(Exception):
    """A one-line error for the user."""


def _kube() -> tuple[Any, str, str]:
    """(CustomObjectsApi, the context's namespace, the context's user name)."""
    from kubernetes import client, config

    try:
        _, ctx = config.list_kube_config_contexts()
        config.load_kube_config()
    except Exception as exc:  # noqa: BLE001 - no or bad kubeconfig
        raise PluginError(f"cannot load the kubeconfig: {exc}") from exc
    c = (ctx or {}).get("context", {})
    return client.CustomObjectsApi(), c.get("namespace") or "default", c.get("user") or "unknown"


def _get(api: Any, name: str, ns: str) -> dict[str, Any]:
    from kubernetes.client import ApiException

    try:
        return api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    except ApiException as exc:
        if exc.status == 404:
            raise PluginError(f'tradingstrategy "{name}" not found in namespace "{ns}"') from exc
        raise PluginError(f"API server: {exc.status} {exc.reason}") from exc


def _run(fn):
    try:
        fn()
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None


def render_status(obj: dict[str, Any]) -> Table:
    """A rich table of one TradingStrategy's status (pure; used by ``status``)."""
    st = obj.get("status") or {}
    spec = obj.get("spec") or {}
    ramp = st.get("ramp") or {}
    table = Table(title=f"{obj['metadata']['namespace']}/{obj['metadata']['name']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("phase", str(st.get("phase", "Pending")))
    table.add_row("ramp", f"{ramp.get('id', '-')} since {ramp.get('startedAt', '-')}")
    table.add_row("stage", f"{st.get('stage')} ({st.get('capitalPercent')}% of {spec.get('capitalUsd')} USD)")
    table.add_row("model", f"{spec.get('model', {}).get('name')}: champion v{st.get('championVersion')}, "
                  f"challenger v{st.get('challengerVersion')}")
    table.add_row("stage since", str(st.get("stageStartTime")))
    table.add_row("message", str(st.get("message", "")))
    if st.get("pause"):
        table.add_row("paused", f"{st['pause'].get('reason')}: {st['pause'].get('message', '')}")
    for c in st.get("conditions", []):
        table.add_row(f"condition {c['type']}", f"{c['status']} {c['reason']}: {c.get('message', '')}")
    last = st.get("lastAnalysis") or {}
    if last:
        table.add_row("last analysis", f"{last.get('time')} {last.get('verdict')}: {last.get('message', '')}")
        counters = st.get("criteria") or {}
        for key, m in sorted((last.get("measurements") or {}).items()):
            c = counters.get(key, {})
            tally = f" [ok {c.get('successful', 0)} fail {c.get('failed', 0)} err {c.get('error', 0)} n {c.get('count', 0)}]" if c else ""
            seq = c.get("sequential") if c else None
            if seq:  # anytime-valid: the sequence's figures, not Argo's counters
                table.add_row(f"  {key}", f"{m.get('result')} ({seq.get('decision')}): n {seq.get('observations')}, "
                              f"mean {seq.get('mean')}, bounds [{seq.get('lower')}, {seq.get('upper')}], "
                              f"p {seq.get('pValue')} (alpha rollback {seq.get('alphaRollback')})")
                continue
            table.add_row(f"  {key}", f"{m.get('result')}: {m.get('value')} (threshold {m.get('threshold')}) "
                          f"{m.get('message', '')}{tally}")
    pending = [e for e in st.get("effects", []) if e.get("state") == "Pending"]
    if pending:
        table.add_row("pending effects", "; ".join(f"{e['id']} {e['kind']} ({e.get('attempts', 0)} attempts) {e.get('lastError', '')}" for e in pending))
    return table


@app.command()
def status(
    name: str,
    namespace: Optional[str] = NamespaceOpt,
    watch: bool = typer.Option(False, "--watch", "-w", help="refresh every 2 s until interrupted"),
    output: str = OutputOpt,
) -> None:
    """Show one TradingStrategy's ramp."""
    def go() -> None:
        api, ns, _ = _kube()
        while True:
            obj = _get(api, name, namespace or ns)
            if output == "json":
                print(json.dumps(obj.get("status") or {}, indent=2))
            else:
                if watch:
                    console.clear()
                console.print(render_status(obj))
            if not watch:
                return
            time.sleep(2)
    _run(go)


@app.command()
def history(name: str, namespace: Optional[str] = NamespaceOpt, output: str = OutputOpt) -> None:
    """The ramp's transitions and manual actions: who, when, why."""
    def go() -> None:
        api, ns, _ = _kube()
        records = (_get(api, name, namespace or ns).get("status") or {}).get("history", [])
        if output == "json":
            print(json.dumps(records, indent=2))
            return
        table = Table("seq", "time", "event", "from", "to", "stage", "by", "reason")
        for r in records:
            table.add_row(str(r.get("seq")), r.get("time", ""), r.get("event", ""), r.get("fromPhase", ""),
                          r.get("toPhase", ""), r.get("stage", ""), r.get("by", ""), r.get("reason", ""))
        console.print(table)
    _run(go)


def request(name: str, namespace: Optional[str], action: str, reason: str, wait: float, output: str) -> None:
    """Send ``action`` to strategy ``name`` and wait up to ``wait`` seconds for the operator to take it."""
    def go() -> None:
        api, ns, user = _kube()
        ns = namespace or ns
        _get(api, name, ns)
        rid = uuid.uuid4().hex[:12]
        payload = {"id": rid, "action": action, "reason": reason, "by": user,
                   "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        from kubernetes.client import ApiException

        try:
            api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name,
                                               {"metadata": {"annotations": {ACTION_ANNOTATION: json.dumps(payload)}}})
        except ApiException as exc:
            raise PluginError(f"cannot send {action}: {_api_message(exc)}") from exc
        deadline = time.monotonic() + wait
        while wait > 0:
            st = _get(api, name, ns).get("status") or {}
            if st.get("handledAction") == rid:
                rec = next((r for r in reversed(st.get("history", [])) if r.get("by") == user), {})
                refused = rec.get("event", "").startswith("Refused")
                if output == "json":
                    print(json.dumps({"id": rid, "action": action, "taken": not refused, "phase": st.get("phase"),
                                      "stage": st.get("stage"), "record": rec}))
                elif refused:
                    raise PluginError(f"{action} refused: {rec.get('reason', '')}")
                else:
                    console.print(f"{name}: {action} taken: {st.get('phase')} {st.get('stage') or ''} — {st.get('message', '')}")
                if refused:
                    raise typer.Exit(1)
                return
            if time.monotonic() > deadline:
                raise PluginError(f"{action} sent (id {rid}) but the operator has not taken it within {wait:g} s; is it running?")
            time.sleep(0.5)
        if output == "json":
            print(json.dumps({"id": rid, "action": action, "sent": True}))
        else:
            console.print(f"{name}: {action} sent (id {rid})")
    _run(go)


WaitOpt = typer.Option(30.0, "--wait", help="seconds to wait for the operator to take the action (0: do not wait)")


@app.command()
def promote(
    name: str,
    full: bool = typer.Option(False, "--full", help="promote to production at once, skipping the remaining stages"),
    reason: str = typer.Option("", "--reason"),
    namespace: Optional[str] = NamespaceOpt, wait: float = WaitOpt, output: str = OutputOpt,
) -> None:
    """Advance one stage now (or all, with --full): over dwell and an Inconclusive pause, never over failed,
    errored or insufficient evidence."""
    request(name, namespace, "promote-full" if full else "promote", reason, wait, output)


@app.command()
def abort(
    name: str, reason: str = typer.Option(..., "--reason", help="why (recorded in history and on the MLflow version)"),
    namespace: Optional[str] = NamespaceOpt, wait: float = WaitOpt, output: str = OutputOpt,
) -> None:
    """Stop the ramp: challenger stopped, champion alias back to the last known good version."""
    request(name, namespace, "abort", reason, wait, output)


@app.command()
def retry(name: str, reason: str = typer.Option("", "--reason"), namespace: Optional[str] = NamespaceOpt,
          wait: float = WaitOpt, output: str = OutputOpt) -> None:
    """Start a fresh ramp of the same candidate after an abort or a rollback."""
    request(name, namespace, "retry", reason, wait, output)


@app.command()
def pause(name: str, reason: str = typer.Option("", "--reason"), namespace: Optional[str] = NamespaceOpt,
          wait: float = WaitOpt, output: str = OutputOpt) -> None:
    """Hold the ramp in its stage (safety guards keep judging and can still roll back)."""
    request(name, namespace, "pause", reason, wait, output)


@app.command()
def resume(name: str, reason: str = typer.Option("", "--reason"), namespace: Optional[str] = NamespaceOpt,
           wait: float = WaitOpt, output: str = OutputOpt) -> None:
    """Resume a paused ramp."""
    request(name, namespace, "resume", reason, wait, output)


@app.command()
def clear(name: str, reason: str = typer.Option(..., "--reason", help="why the incident is cleared (recorded in history)"),
          namespace: Optional[str] = NamespaceOpt, wait: float = WaitOpt, output: str = OutputOpt) -> None:
    """Clear the reduced sizing of an automated rollback: the champion trades its full share again."""
    request(name, namespace, "clear", reason, wait, output)


kill_app = typer.Typer(help="The kill switch: halt a strategy's trading at once (on), release it (off), status, history.",
                       no_args_is_help=True)
app.add_typer(kill_app, name="kill")


class Strategies:
    """The TradingStrategy API of one cluster as ``get(name, ns)`` / ``patch(name, ns, body)`` (JSON merge
    patch), errors as :class:`PluginError` (what :mod:`.drill` and :func:`apply_kill` need; tests fake it)."""

    def __init__(self, api: Any) -> None:
        self.api = api

    def get(self, name: str, namespace: str) -> dict[str, Any]:
        return _get(self.api, name, namespace)

    def patch(self, name: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        from kubernetes.client import ApiException

        try:
            return self.api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, body)
        except ApiException as exc:
            raise PluginError(_api_message(exc)) from exc


def apply_kill(strategies: Any, name: str, ns: str, user: str, engage: bool, reason: str, flatten: bool, wait: float,
               *, trigger: str = "Manual", poll: float = 0.25) -> dict[str, Any] | None:
    """Write ``spec.killSwitch`` (``engaged``, ``reason``, ``by`` = ``user``, ``trigger``, ``flatten``) and wait up
    to ``wait`` seconds until the operator has broadcast it (its BroadcastKill effect Done or Failed) and
    recorded the trader pods' acknowledgements. Returns ``status.killSwitch`` then (None when ``wait`` is
    0: not waited). Raises :class:`PluginError` (same request twice, refused by the API server, not
    broadcast in time). The code path of ``kill on|off`` and of the rollback drill (trigger ``Drill``)."""
    if not reason.strip():
        raise PluginError("--reason is required (it is recorded in the kill history and the ticket)")
    before = strategies.get(name, ns)
    ks = {"engaged": engage, "reason": reason.strip(), "by": user, "trigger": trigger, "flatten": flatten and engage}
    old = (before.get("spec") or {}).get("killSwitch") or {}
    if all(old.get(k) == v for k, v in ks.items()):
        raise PluginError(f"the kill switch already says this ({'on' if engage else 'off'}, same reason): give a new --reason")
    try:
        strategies.patch(name, ns, {"spec": {"killSwitch": ks}})
    except PluginError as exc:
        raise PluginError(f"kill {'on' if engage else 'off'} refused: {exc}") from exc
    deadline = time.monotonic() + wait
    while wait > 0:
        full = strategies.get(name, ns).get("status") or {}
        st = full.get("killSwitch") or {}
        broadcast = next((e for e in full.get("effects", []) if e.get("id") == st.get("commandId")), {})
        if st.get("engaged") is engage and st.get("reason") == ks["reason"] and broadcast.get("state") in ("Done", "Failed"):
            return st
        if time.monotonic() > deadline:
            raise PluginError(f"kill {'on' if engage else 'off'} written to the spec, but the operator has not broadcast it "
                              f"within {wait:g} s; is it running? (kubectl quantramp kill status {name})")
        time.sleep(poll)
    return None


def set_kill(name: str, namespace: Optional[str], engage: bool, reason: str, flatten: bool, wait: float, output: str) -> None:
    """``kill on|off``: :func:`apply_kill` with trigger ``Manual``, then print what the pods acknowledged."""
    def go() -> None:
        if not reason.strip():
            raise PluginError("--reason is required (it is recorded in the kill history and the ticket)")
        api, ns, user = _kube()
        st = apply_kill(Strategies(api), name, namespace or ns, user, engage, reason, flatten, wait)
        if st is None:
            console.print(f"{name}: kill {'on' if engage else 'off'} written (not waiting)")
        elif output == "json":
            print(json.dumps(st))
        else:
            acks = ", ".join(f"{r} {a.get('latencySeconds')} s" for r, a in sorted((st.get("acks") or {}).items()))
            console.print(f"{name}: kill switch {'ENGAGED' if engage else 'released'} by {user}; "
                          f"acknowledged by {acks or 'no running pod'}"
                          + (f"; broadcast to last ack {st['latencySeconds']} s" if st.get("latencySeconds") is not None else ""))
    _run(go)


def _api_message(exc: Any) -> str:
    """The API server's own message (e.g. a CRD validation rule's) from an ApiException."""
    try:
        return json.loads(exc.body).get("message") or f"{exc.status} {exc.reason}"
    except (TypeError, ValueError, AttributeError):
        return f"{exc.status} {exc.reason}"


@kill_app.command("on")
def kill_on(
    name: str, reason: str = typer.Option(..., "--reason", help="why (recorded; the JIRA ticket says it)"),
    no_flatten: bool = typer.Option(False, "--no-flatten", help="stop new risk but keep the open positions"),
    namespace: Optional[str] = NamespaceOpt, wait: float = WaitOpt, output: str = OutputOpt,
) -> None:
    """ENGAGE the kill switch: no trader pod of the strategy sends an order that adds risk, positions are
    flattened (unless --no-flatten), the ramp freezes. (Seed 004's `exo kill off` = trading off = this.)"""
    set_kill(name, namespace, True, reason, not no_flatten, wait, output)


@kill_app.command("off")
def kill_off(
    name: str, reason: str = typer.Option(..., "--reason", help="why trading may resume (recorded; commented on the ticket)"),
    namespace: Optional[str] = NamespaceOpt, wait: float = WaitOpt, output: str = OutputOpt,
) -> None:
    """RELEASE the kill switch (with authorization): trading may resume; a ramp frozen by it stays paused
    until `kubectl quantramp resume`, which restarts its stage."""
    set_kill(name, namespace, False, reason, False, wait, output)


@kill_app.command("status")
def kill_status(name: str, namespace: Optional[str] = NamespaceOpt, output: str = OutputOpt) -> None:
    """Is the kill switch engaged: by whom, when, why, and who acknowledged it how fast."""
    def go() -> None:
        api, ns, _ = _kube()
        obj = _get(api, name, namespace or ns)
        st = (obj.get("status") or {}).get("killSwitch") or {}
        if output == "json":
            print(json.dumps({"engaged": bool(st.get("engaged")), **st}))
            return
        table = Table(title=f"{obj['metadata']['namespace']}/{name} kill switch", show_header=False)
        table.add_column("field", style="bold")
        table.add_column("value")
        table.add_row("state", "[bold red]ENGAGED[/]" if st.get("engaged") else "released" if st else "never engaged")
        for k in ("trigger", "by", "since", "reason", "flatten", "commandId", "sentAt", "latencySeconds"):
            if st.get(k) is not None:
                table.add_row(k, str(st[k]))
        for role, a in sorted((st.get("acks") or {}).items()):
            table.add_row(f"ack {role}", f"{a.get('ackedAt')} ({a.get('latencySeconds')} s)")
        console.print(table)
    _run(go)


@kill_app.command("history")
def kill_history(name: str, namespace: Optional[str] = NamespaceOpt, output: str = OutputOpt) -> None:
    """Every engagement and release of the kill switch (the last 20): who, when, why, latency."""
    def go() -> None:
        api, ns, _ = _kube()
        records = (_get(api, name, namespace or ns).get("status") or {}).get("killHistory", [])
        if output == "json":
            print(json.dumps(records, indent=2))
            return
        table = Table("time", "action", "trigger", "by", "latency s", "reason")
        for r in records:
            table.add_row(r.get("time", ""), r.get("action", ""), r.get("trigger", ""), r.get("by", ""),
                          "" if r.get("latencySeconds") is None else str(r["latencySeconds"]), r.get("reason", ""))
        console.print(table)
    _run(go)


# -- reports and drills (issue 9 item 6) ------------------------------------------------------------
err_console = Console(stderr=True)
DEFAULT_PROMETHEUS = "http://127.0.0.1:9090"


def _progress():
    """A transient rich progress display on stderr (stdout stays clean for ``-o json``)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err_console, transient=True)


def prometheus_fetcher(url: str, timeout: float = 30.0):
    """``fetch(queries, start, end, step_s) -> (series, errors)`` over Prometheus' ``query_range`` at ``url``:
    series {key: matrix result}, errors {key: one-line error}; shows a progress bar on stderr."""
    from prometheus_api_client import PrometheusConnect
    from urllib3.util.retry import Retry

    prom = PrometheusConnect(url=url, disable_ssl=True, retry=Retry(total=1, backoff_factor=0.2))

    def fetch(queries: dict[str, str], start: datetime, end: datetime, step_s: float):
        series: dict[str, Any] = {}
        errors: dict[str, str] = {}
        with _progress() as bar:
            task = bar.add_task(f"Prometheus {url}", total=len(queries))
            for key, q in queries.items():
                bar.update(task, description=f"query_range {key}")
                try:
                    series[key] = prom.custom_query_range(q, start_time=start, end_time=end, step=f"{step_s:g}", timeout=timeout)
                except Exception as exc:  # noqa: BLE001 - the row says "no data"; the report lists the error
                    errors[key] = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                bar.advance(task)
        return series, errors
    return fetch


def make_daily_report(obj: dict[str, Any], day: Any, fetch: Any, out_dir: Any, *, now: datetime | None = None,
                      step_s: float = 60.0) -> tuple[Any, Any, Any]:
    """Build and write one strategy's daily report: (report, markdown path, PNG path). ``fetch`` is
    :func:`prometheus_fetcher`'s (or a test's) ``fetch(queries, start, end, step_s)``. Raises
    :class:`PluginError` for a day that has not begun or an unwritable ``out_dir``."""
    from pathlib import Path

    from . import report as R

    now = now or datetime.now(timezone.utc)
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    try:
        start, end = R.day_window(day, now)
    except ValueError as exc:
        raise PluginError(f"{exc}: give --date YYYY-MM-DD of today or earlier") from exc
    # Prometheus answers at most 11,000 points per series: a whole day at a fine step is refused (400)
    step_s = max(step_s, math.ceil((end - start).total_seconds() / R.MAX_POINTS))
    series, errors = fetch(R.queries(ns, name), start, end, step_s)
    rep = R.build_daily(ns, name, day, start, end, series, obj, errors=errors, step_s=step_s, generated_at=now)
    md_name, png_name = R.file_names(name, day)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        png = R.draw_equity_png(rep, out / png_name)
        md = out / md_name
        md.write_text(R.render_markdown(rep, png_name))
    except OSError as exc:
        raise PluginError(f"cannot write the report in {out}: {exc}; give a writable --out DIR") from exc
    return rep, md, png


report_app = typer.Typer(help="Reports: the daily report of a strategy (markdown and an equity curve PNG).",
                         no_args_is_help=True)
app.add_typer(report_app, name="report")


@report_app.command("daily")
def report_daily(
    name: str,
    date: Optional[str] = typer.Option(None, "--date", help="UTC day YYYY-MM-DD (default: today, so far)"),
    out: str = typer.Option("reports/daily", "--out", help="directory for the .md and the .png"),
    prometheus: Optional[str] = typer.Option(None, "--prometheus", envvar="PROMETHEUS_URL",
                                             help=f"Prometheus URL (env PROMETHEUS_URL; default {DEFAULT_PROMETHEUS})"),
    step: float = typer.Option(60.0, "--step", min=1.0, help="query_range step, seconds"),
    namespace: Optional[str] = NamespaceOpt, output: str = OutputOpt,
) -> None:
    """The day's report of one strategy (seed 003 §1.1): P&L, fees, slippage, fills, fill ratio and drawdown per
    role and stage from Prometheus; critical alerts; the day's transitions and incidents from the status."""
    def go() -> None:
        from datetime import date as _date

        from . import report as R

        try:
            day = _date.fromisoformat(date) if date else datetime.now(timezone.utc).date()
        except ValueError:
            raise PluginError(f"--date {date!r} is not a date: use YYYY-MM-DD") from None
        url = prometheus or DEFAULT_PROMETHEUS
        api, ns, _ = _kube()
        obj = _get(api, name, namespace or ns)
        rep, md, png = make_daily_report(obj, day, prometheus_fetcher(url), out, step_s=step)
        failed_all = bool(rep.errors) and set(rep.errors) >= set(R.QUERIES)
        if output == "json":
            print(json.dumps({**rep.to_json(), "markdown": str(md), "png": str(png)}, indent=2))
        else:
            console.print(f"{name}: daily report for {day.isoformat()} written to {md} (equity curve {png})")
            for k, e in sorted(rep.errors.items()):
                if not failed_all:
                    err_console.print(f"warning: {k}: {e}")
        if failed_all:
            first = next(iter(rep.errors.values()))
            raise PluginError(f"Prometheus at {url} answered no query ({first}); the report {md} has no metrics: "
                              "check --prometheus or PROMETHEUS_URL")
    _run(go)


# -- replay of adverse trades -------------------------------------------------------------------------
def read_books(client: Any, ns: str, strategy: str, role: str, day: str | None = None,
               scope: str | None = None) -> tuple[str, Any, Any]:
    """(scope, day book, start book or None) of ``role`` from the trader's Redis state
    (:mod:`quantramp.trader.state`): the scope the operator runs for the role (or ``scope``), its
    newest trading date (or ``day``) and the newest book of an earlier date. ``client``: a redis-py
    client with ``decode_responses=True``. Raises :class:`PluginError` when there is no such book."""
    from quantramp.trader.state import Keys, parse_book

    from .adverse import Book

    scope = scope or client.get(Keys(ns, strategy, role).live_scope) or ""
    if not scope:
        raise PluginError(f"no book scope for the {role} of {ns}/{strategy} in Redis (no pod ran?): give --scope")
    keys = Keys(ns, strategy, role, stage=scope)
    day = day or client.get(keys.current)
    if not day:
        raise PluginError(f"the {role} of {ns}/{strategy} has no book in scope {scope}: nothing traded yet")
    prefix, suffix = keys.book(""), ":book"
    head = prefix[: -len(suffix)] if prefix.endswith(suffix) else prefix
    days = sorted({k[len(head): -len(suffix)] for k in client.scan_iter(match=keys.book("*"), count=500)
                   if k.startswith(head) and k.endswith(suffix)})

    def book(d: str) -> Any:
        fields = client.hgetall(keys.book(d))
        if not fields:
            return None
        try:
            snap, extra = parse_book(fields)
        except ValueError as exc:
            raise PluginError(f"the book {keys.book(d)} is unreadable: {exc}") from exc
        return Book(d, snap, extra)

    day_book = book(day)
    if day_book is None:
        have = ", ".join(days[-5:]) or "none"
        raise PluginError(f"no book of trading date {day} for the {role} in scope {scope} (recent: {have}): check --date")
    earlier = [d for d in days if d < day]
    return scope, day_book, book(earlier[-1]) if earlier else None


def replay_strategy(obj: dict[str, Any], roles: list[str], client: Any, load_model, *, last_n: int,
                    threshold: float | None = None, day: str | None = None, model_uri: str | None = None,
                    bars: Any = None, progress: Any = None) -> list[dict[str, Any]]:
    """Replay each of ``roles`` (see :mod:`.adverse`): one dict per role with ``role``, ``scope``, ``tradedModel``,
    ``currentModel`` and :func:`.adverse.replay_role`'s figures. ``load_model(uri)`` returns a model (the
    trader's :func:`~quantramp.trader.model.load_model`, or a test's); ``bars``: the market data (default
    the strategy's own, :func:`strategy_bars`: one symbol's bars, or symbol -> bars for a book of several
    symbols). Raises :class:`PluginError`."""
    from quantramp.trader.server import build_engine

    from . import adverse as A

    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    spec = obj.get("spec") or {}
    current_uri = model_uri or f"models:/{(spec.get('model') or {}).get('name')}@champion"
    models: dict[str, Any] = {}

    def model(uri: str) -> Any:
        if uri not in models:
            if progress:
                progress(f"loading model {uri}")
            try:
                models[uri] = load_model(uri)
            except Exception as exc:  # noqa: BLE001 - ModelLoadError and MLflow's own
                raise PluginError(f"cannot load {uri}: {str(exc).splitlines()[0][:300]} (set MLFLOW_TRACKING_URI or "
                                  "--tracking-uri)") from exc
        return models[uri]

    out = []
    for role in roles:
        if progress:
            progress(f"reading the {role}'s books from Redis")
        scope, day_book, start_book = read_books(client, ns, name, role, day)
        traded_uri = str(day_book.extra.get("model_uri") or "")
        if not traded_uri:
            raise PluginError(f"the {role}'s book of {day_book.day} does not name its model")
        try:
            settings = A.role_settings(name, ns, obj, role, float((start_book or day_book).extra.get("capital_usd")),
                                       traded_uri)
        except (ValueError, TypeError) as exc:
            raise PluginError(f"cannot rebuild the {role}'s settings: {str(exc).splitlines()[0]}") from exc
        if bars is None:
            bars = strategy_bars(settings, progress)

        def engine_for(m: Any, capital: float, settings: Any = settings) -> Any:
            # the pod's own construction (trader.server.run): seeds, fees, one engine or a portfolio of the symbols
            return build_engine(settings, m)

        traded, current = model(traded_uri), model(current_uri)
        if progress:
            progress(f"replaying the {role}'s trading date {day_book.day}")
        try:
            res = A.replay_role(bars=bars, engine_for=engine_for, traded_model=traded, current_model=current,
                                day_book=day_book, start_book=start_book, last_n=last_n, threshold_usd=threshold,
                                bar_seconds=settings.bar_seconds)
        except ValueError as exc:  # a book of other symbols than the spec's (Portfolio.restore)
            raise PluginError(f"cannot replay the {role}'s book of {day_book.day}: {exc}") from exc
        out.append({"role": role, "scope": scope, "tradedModel": traded_uri, "currentModel": current_uri, **res})
    return out


def strategy_bars(settings: Any, progress: Callable[[str], None] | None = None) -> Any:
    """The bars the role's pods trade, read as they read them (``spec.marketData``: the bundled sample, the file or
    the PostgreSQL table; a database password comes from ``PGPASSWORD`` in the caller's environment, as libpq
    reads it; each symbol in its exchange's sessions, ``spec.calendars``), checked for the strategy's bar length:
    one symbol's :class:`~quantramp.trader.marketdata.Bars`, or symbol -> bars for several. Raises
    :class:`PluginError` saying which source failed."""
    from quantramp.trader.barsource import BarSourceConfigError, check_spacing
    from quantramp.trader.marketdata import MarketDataError

    try:
        source = settings.bars.source(settings.calendars)
    except BarSourceConfigError as exc:  # live IB bars: no history to replay here
        raise PluginError(f"cannot replay this strategy's bars: {exc}") from exc
    symbols = settings.symbols or (settings.symbol,)
    try:
        if progress:
            progress(f"reading the bars of {', '.join(symbols)} from {source.describe()}")
        out = {x: check_spacing(source.history(x), settings.bar_seconds, source.describe(), source.calendar_of(x))
               for x in symbols}
        return out if len(symbols) > 1 else out[symbols[0]]
    except MarketDataError as exc:
        raise PluginError(f"cannot read the strategy's bars: {exc} (a database password: set PGPASSWORD)") from exc


def render_replay(res: dict[str, Any]) -> Table:
    """A rich table of one role's worst round trips and what the current model does at each (pure)."""
    v = res["verification"]
    title = (f"{res['role']} ({res['scope']}) trading date {res['day']}: {res['tripsTotal']} round trips; "
             f"{res['tradedModel']} -> now {res['currentModel']}; replay {v['text']}")
    several = any("symbol" in row["trip"] for row in res["rows"])
    table = Table(*(["symbol"] if several else []), "entry (decided)", "side", "qty", "entry", "exit", "P&L USD", "fees",
                  "P(up) then", "P(up) now", "now: order", "now: verdict", "now: P&L USD", title=title)
    for row in res["rows"]:
        t, n = row["trip"], row["now"]

        def f(x: Any, fmt: str) -> str:
            return "-" if x is None else format(x, fmt)
        verdict = n["verdict"] + (f" ({', '.join(n['reasons'])})" if n["reasons"] else "")
        table.add_row(*([t.get("symbol", "")] if several else []),
                      f"{(t['entry_ts'] or '')[11:19]} ({(t['decided_at'] or '-')[11:19]})",
                      "long" if t["side"] > 0 else "short", str(t["qty"]), f(t["entry_price"], ".2f"),
                      f(t["exit_price"], ".2f") + (" open" if t["open"] else ""), f(t["pnl_usd"], "+.2f"), f(t["fees_usd"], ".2f"),
                      f(n["original_p_up"], ".3f"), f(n["p_up"], ".3f"), f(n["order_qty"], "+d"), verdict, f(n["pnl_usd"], "+.2f"))
    return table


@app.command()
def replay(
    name: str,
    last_n: int = typer.Option(10, "--last-n", min=1, help="how many of the worst round trips"),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="only round trips with P&L at or below this, USD (e.g. -50)"),
    role: Optional[str] = typer.Option(None, "--role", help="champion or challenger (default: every running role)"),
    date: Optional[str] = typer.Option(None, "--date", help="trading date YYYY-MM-DD (default: the role's newest)"),
    model_uri: Optional[str] = typer.Option(None, "--model-uri", help="the model to judge them with (default models:/NAME@champion)"),
    redis_url: Optional[str] = typer.Option(None, "--redis-url", envvar="REDIS_URL", help="the traders' Redis (env REDIS_URL)"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow (env MLFLOW_TRACKING_URI)"),
    namespace: Optional[str] = NamespaceOpt, output: str = OutputOpt,
) -> None:
    """Replay the worst recent round trips of a strategy's trader pods and show what the current model and
    governor would do at each (seed 003 "Replay Adverse Trades"): the role's trading date re-run from its
    durable book in Redis on the strategy's own bars (every symbol of a several-symbol book, each in its
    exchange's sessions), verified against the day's book (see quantramp.operator.adverse)."""
    def go() -> None:
        if role is not None and role not in ("champion", "challenger"):
            raise PluginError(f"--role {role!r}: use champion or challenger")
        if not redis_url:
            raise PluginError("the trades are rebuilt from the traders' Redis books: give --redis-url or set REDIS_URL")
        if not tracking_uri:
            raise PluginError("the models come from MLflow: give --tracking-uri or set MLFLOW_TRACKING_URI")
        import redis

        from quantramp.trader.model import load_model

        api, ns, _ = _kube()
        obj = _get(api, name, namespace or ns)
        alloc = (obj.get("status") or {}).get("allocation") or {}
        roles = [role] if role else [r for r in ("champion", "challenger") if int((alloc.get(r) or {}).get("replicas") or 0) > 0]
        if not roles:
            raise PluginError(f"no trader role of {name} is running: give --role champion|challenger")
        client = redis.Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=10, decode_responses=True)
        try:
            client.ping()
        except redis.RedisError as exc:
            raise PluginError(f"cannot reach Redis at {redis_url}: {exc}; check --redis-url or REDIS_URL") from exc
        with err_console.status("replaying") as status:
            results = replay_strategy(obj, roles, client, lambda uri: load_model(uri, tracking_uri), last_n=last_n,
                                      threshold=threshold, day=date, model_uri=model_uri, progress=status.update)
        if output == "json":
            print(json.dumps(results, indent=2))
            return
        for res in results:
            console.print(render_replay(res))
            pnl = res["pnlUsd"]
            console.print(f"  day P&L replayed: {pnl['original']:+.2f} USD as traded, {pnl['now']:+.2f} USD with the current "
                          f"model from the same start ({res['startedFrom']})")
    _run(go)


# -- the rollback drill ---------------------------------------------------------------------------------
drill_app = typer.Typer(help="Rollback drills (seed 004): rollback [--dry-run], status.", no_args_is_help=True)
app.add_typer(drill_app, name="drill")
BADGE_STYLE = {"green": "bold green", "yellow": "bold yellow", "red": "bold red"}


def _countdown(seconds: float) -> None:
    """Step C's wait with a rich progress bar on stderr (Ctrl-C interrupts; the drill then restores)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("step C: kill switch engaged"), BarColumn(), TimeRemainingColumn(), console=err_console,
                  transient=True) as bar:
        task = bar.add_task("wait", total=seconds)
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(0.2, left))
            bar.update(task, completed=seconds - max(0.0, end - time.monotonic()))


def _print_step(s: Any) -> None:
    style = {"PASS": "green", "FAIL": "bold red", "SKIPPED": "dim"}[s.outcome]
    secs = "" if s.seconds is None else f" ({s.seconds:.2f} s)"
    err_console.print(f"[{style}]{s.key} {s.title}: {s.outcome}[/]{secs} {s.detail}", highlight=False)


@drill_app.command("rollback")
def drill_rollback(
    name: str,
    dry_run: bool = typer.Option(False, "--dry-run", help="backup and report only; say what the live steps would do (CI)"),
    wait: float = typer.Option(120.0, "--wait", min=0.0, help="seconds the kill switch stays engaged (step C)"),
    out: str = typer.Option(".", "--out", help="directory for the backup JSON and the drill report"),
    no_flatten: bool = typer.Option(False, "--no-flatten", help="engage without closing the open positions"),
    ack_wait: float = typer.Option(30.0, "--ack-wait", min=1.0, help="seconds to wait for each broadcast and its acks"),
    namespace: Optional[str] = NamespaceOpt, output: str = OutputOpt,
) -> None:
    """The seed 004 rollback drill: A backup spec.killSwitch, B engage the kill switch (reason ROLLBACK_DRILL,
    trigger Drill), C wait, D release (ROLLBACK_DRILL complete), E report. A passing live drill records
    quantramp.io/last-drill. Exit 1 unless the drill passes."""
    def go() -> None:
        from . import drill as D

        api, ns, user = _kube()
        ns = namespace or ns
        strategies = Strategies(api)

        def kill(engage: bool, reason: str, flatten: bool) -> dict[str, Any]:
            return apply_kill(strategies, name, ns, user, engage, reason, flatten, ack_wait, trigger=D.DRILL_TRIGGER) or {}
        run = D.run_drill(strategies, name, ns, by=user, dry_run=dry_run, wait_s=wait, out_dir=out, flatten=not no_flatten,
                          kill=None if dry_run else kill, wait=_countdown, on_step=_print_step)
        if output == "json":
            print(json.dumps(run.to_json(), indent=2))
        else:
            console.print(f"{name}: {'dry-run ' if dry_run else ''}drill {'PASSED' if run.passed else 'FAILED'}; "
                          f"report {run.report_path or '-'}, backup {run.backup_path or '-'}"
                          + (f"; {D.LAST_DRILL_ANNOTATION}={run.last_drill_recorded}" if run.last_drill_recorded else ""))
            for w in run.warnings:
                err_console.print(f"warning: {w}", highlight=False)
        if run.needs_emergency_restore:
            raise PluginError(f"the kill switch is STILL ENGAGED after the drill: kubectl quantramp kill off {name} -n {ns} "
                              "--reason 'restore after failed drill'")
        if not run.passed:
            bad = next((s for s in run.steps if s.ok is False), None)
            raise PluginError(f"drill failed at step {bad.key if bad else '?'}: {bad.detail if bad else 'interrupted'} "
                              f"(report {run.report_path or 'not written'})")
    _run(go)


@drill_app.command("status")
def drill_status_cmd(name: str, namespace: Optional[str] = NamespaceOpt, output: str = OutputOpt) -> None:
    """Days since the strategy's last passing live drill and the seed 004 badge (green < 90, yellow 90-120, red > 120)."""
    def go() -> None:
        from . import drill as D

        api, ns, _ = _kube()
        obj = _get(api, name, namespace or ns)
        st = D.drill_status(obj, datetime.now(timezone.utc))
        if output == "json":
            print(json.dumps(st))
            return
        badge = f"[{BADGE_STYLE[st['badge']]}]{st['badge'].upper()}[/]"
        if st["lastDrill"] is None:
            console.print(f"{name}: {badge} never drilled: kubectl quantramp drill rollback {name} --dry-run, then live")
        else:
            console.print(f"{name}: {badge} last drill {st['lastDrill']} ({st['daysSinceDrill']} days ago); next due by "
                          f"{st['nextDueBy']}")
    _run(go)


@app.command()
def version() -> None:
    """Print the plugin version."""
    from importlib.metadata import version as v

    console.print(v("quantramp"))
