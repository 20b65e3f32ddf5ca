"""``kubectl quantramp``: the kubectl plugin (console script ``kubectl-quantramp``).

First command: ``kubectl quantramp status NAME [-n NS] [--watch]`` shows the phase, stage,
versions, conditions and the last analysis's measurements of one TradingStrategy.
"""

from __future__ import annotations

import time
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from .models import GROUP, PLURAL, VERSION

app = typer.Typer(help="Operate quantramp TradingStrategies.", no_args_is_help=True)
console = Console()


def _get(name: str, namespace: str) -> dict[str, Any]:
    from kubernetes import client, config

    config.load_kube_config()
    return client.CustomObjectsApi().get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)


def render_status(obj: dict[str, Any]) -> Table:
    """A rich table of one TradingStrategy's status (pure; used by ``status``)."""
    st = obj.get("status") or {}
    spec = obj.get("spec") or {}
    table = Table(title=f"{obj['metadata']['namespace']}/{obj['metadata']['name']}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    table.add_row("phase", str(st.get("phase", "Pending")))
    table.add_row("stage", f"{st.get('stage')} ({st.get('capitalPercent')}% of {spec.get('capitalUsd')} USD)")
    table.add_row("model", f"{spec.get('model', {}).get('name')}: champion v{st.get('championVersion')}, "
                  f"challenger v{st.get('challengerVersion')}")
    table.add_row("stage since", str(st.get("stageStartTime")))
    table.add_row("message", str(st.get("message", "")))
    for c in st.get("conditions", []):
        table.add_row(f"condition {c['type']}", f"{c['status']} {c['reason']}: {c.get('message', '')}")
    last = st.get("lastAnalysis") or {}
    if last:
        table.add_row("last analysis", f"{last.get('time')} {last.get('verdict')}: {last.get('message', '')}")
        for key, m in sorted((last.get("measurements") or {}).items()):
            table.add_row(f"  {key}", f"{m.get('result')}: {m.get('value')} (threshold {m.get('threshold')}) "
                          f"{m.get('message', '')}")
    return table


@app.command()
def status(
    name: str,
    namespace: str = typer.Option("default", "--namespace", "-n"),
    watch: bool = typer.Option(False, "--watch", "-w", help="refresh every 2 s until interrupted"),
) -> None:
    """Show one TradingStrategy's ramp."""
    while True:
        obj = _get(name, namespace)
        if watch:
            console.clear()
        console.print(render_status(obj))
        if not watch:
            return
        time.sleep(2)


@app.command()
def version() -> None:
    """Print the plugin version."""
    from importlib.metadata import version as v

    console.print(v("quantramp"))
