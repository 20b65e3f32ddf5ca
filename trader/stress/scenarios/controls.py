"""Stress scenario ``controls`` (see :mod:`quantramp.trader.stress`).
"""

from __future__ import annotations

from ...certification import ALL_CONTROLS, run_controls
from ..base import Context, ScenarioResult


# -- the certification ----------------------------------------------------------------------------------
def scenario_controls(ctx: Context, res: ScenarioResult) -> None:
    """Every pre-trade control exercised at the seed's limits (:mod:`.certification`); one check
    per control, named after it: the violations the independent auditor found."""
    r = run_controls()
    total = {c: 0 for c in ALL_CONTROLS}
    for e in r["scenarios"]:
        for c, n in e["violations"].items():
            total[c] = total.get(c, 0) + n
        res.measurements[e["name"]] = {"control": e["control"], "violations": e["violations"],
                                       "error": e.get("error"), **e.get("measurements", {})}
    res.measurements["caught_by"] = r["caught_by"]
    for c, n in total.items():
        res.check(c, n, "==", 0)
