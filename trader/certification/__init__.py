"""Controls certification: every pre-trade control of the pod exercised by a scenario whose
check fails when the control is switched off (``tests/unit/trader/test_trader_certification.py``
switches each one off in a fresh process and asserts the certification fails naming it).

Scenarios (one module each under :mod:`.scenarios`) run the pod's own code at the seed
runbook's limits ($1,000 pod; see :mod:`.pod`); an independent :class:`~.auditor.Auditor`
re-derives every verdict from the orders and fills alone. :func:`run_controls` returns the
report: ``certified``, and per scenario the control it exercises, the violations per control
and a few measurements; ``caught_by`` maps each violated control to the first scenario that
caught it (the mutation table).
"""

from __future__ import annotations

import time
import traceback
from typing import Any, Iterable

from .auditor import CONTROLS, AuditLimits, Auditor
from .scenarios import MODULES

#: every control a scenario exercises (auditor controls, the bar check, the reduce-only exemption, the
#: runtime's kill that lets risk-reducing orders through, the wall-clock end-of-day flatten)
ALL_CONTROLS = tuple(CONTROLS) + ("bar_validation", "risk_reducing_exemption", "kill_allows_reducing",
                                  "wall_clock_flatten")


def scenario_names() -> list[str]:
    """Names of the control scenarios (module names), in run order."""
    return [m.__name__.rsplit(".", 1)[1] for m in MODULES]


def run_controls(only: Iterable[str] | None = None) -> dict[str, Any]:
    """Run the control scenarios (all, or the ``only`` names) and return the report (JSON-able)."""
    want = set(only) if only else None
    out, caught = [], {}
    for m in MODULES:
        name = m.__name__.rsplit(".", 1)[1]
        if want is not None and name not in want:
            continue
        t0 = time.perf_counter()
        entry: dict[str, Any] = {"name": name, "control": m.CONTROL, "description": m.DESCRIPTION}
        try:
            o = m.run_scenario()
            entry["violations"] = o.violations
            entry["measurements"] = o.measurements
            entry["passed"] = not o.violations
        except Exception as exc:  # noqa: BLE001 - a scenario that cannot run does not certify
            entry["violations"] = {m.CONTROL: 1}
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc(limit=6)
            entry["passed"] = False
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        for c in entry["violations"]:
            caught.setdefault(c, name)
        out.append(entry)
    return {
        "certified": bool(out) and all(e["passed"] for e in out),
        "scenarios": out,
        "caught_by": caught,
        "limits": AuditLimits.seed_runbook().__dict__,
    }


__all__ = ["ALL_CONTROLS", "AuditLimits", "Auditor", "run_controls", "scenario_names"]
