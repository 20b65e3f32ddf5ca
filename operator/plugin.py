"""``kubectl quantramp``: the kubectl plugin (console script ``kubectl-quantramp``).

Read: ``status NAME [--watch]``, ``history NAME``, ``kill status NAME``, ``kill history NAME``. Act:
``promote NAME [--full]``, ``abort NAME --reason``, ``retry NAME``, ``pause NAME``, ``resume NAME``,
``clear NAME --reason``, ``kill on|off NAME --reason`` (the kill switch is ``spec.killSwitch``, written
with the kubeconfig user as ``by``; the operator broadcasts it and records the acknowledgements).

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
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Optional

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
            raise PluginError(f"cannot send {action}: {exc.status} {exc.reason}") from exc
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


def set_kill(name: str, namespace: Optional[str], engage: bool, reason: str, flatten: bool, wait: float, output: str) -> None:
    """Write ``spec.killSwitch`` and wait up to ``wait`` seconds until the operator has broadcast it and the
    trader pods have acknowledged (``status.killSwitch``)."""
    def go() -> None:
        if not reason.strip():
            raise PluginError("--reason is required (it is recorded in the kill history and the ticket)")
        api, ns, user = _kube()
        ns = namespace or ns
        before = _get(api, name, ns)
        ks = {"engaged": engage, "reason": reason.strip(), "by": user, "trigger": "Manual", "flatten": flatten and engage}
        old = (before.get("spec") or {}).get("killSwitch") or {}
        if all(old.get(k) == v for k, v in ks.items()):
            raise PluginError(f"the kill switch already says this ({'on' if engage else 'off'}, same reason): give a new --reason")
        from kubernetes.client import ApiException

        try:
            api.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {"spec": {"killSwitch": ks}})
        except ApiException as exc:
            raise PluginError(f"kill {'on' if engage else 'off'} refused: {_api_message(exc)}") from exc
        deadline = time.monotonic() + wait
        while wait > 0:
            full = _get(api, name, ns).get("status") or {}
            st = full.get("killSwitch") or {}
            broadcast = next((e for e in full.get("effects", []) if e.get("id") == st.get("commandId")), {})
            if st.get("engaged") is engage and st.get("reason") == ks["reason"] and broadcast.get("state") in ("Done", "Failed"):
                if output == "json":
                    print(json.dumps(st))
                else:
                    acks = ", ".join(f"{r} {a.get('latencySeconds')} s" for r, a in sorted((st.get("acks") or {}).items()))
                    console.print(f"{name}: kill switch {'ENGAGED' if engage else 'released'} by {user}; "
                                  f"acknowledged by {acks or 'no running pod'}"
                                  + (f"; broadcast to last ack {st['latencySeconds']} s" if st.get("latencySeconds") is not None else ""))
                return
            if time.monotonic() > deadline:
                raise PluginError(f"kill {'on' if engage else 'off'} written to the spec, but the operator has not broadcast it "
                                  f"within {wait:g} s; is it running? (kubectl quantramp kill status {name})")
            time.sleep(0.25)
        console.print(f"{name}: kill {'on' if engage else 'off'} written (not waiting)")
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


@app.command()
def version() -> None:
    """Print the plugin version."""
    from importlib.metadata import version as v

    console.print(v("quantramp"))
