"""The certification can fail (issue 12, review D15): for every control, switch it off in a fresh
process (monkeypatch) and ``stress.certify`` fails, with a failed check named after the control.

The table printed by ``test_mutation_table`` (run with -s) is the mutation table: control ->
the scenario that caught it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from quantramp.trader.certification import ALL_CONTROLS, run_controls

#: code that switches one control off (run before the certification, in a fresh interpreter)
_GOV = """
import math
from quantramp.trader import governor as G
_init = G.Governor.__init__
def _off(self, *a, **k):
    _init(self, *a, **k)
    {body}
G.Governor.__init__ = _off
"""
MUTATIONS = {
    "max_order": _GOV.format(body="self._max_order = math.inf"),
    "max_position": _GOV.format(body="self._max_pos = math.inf"),
    "max_daily_turnover": _GOV.format(body="self._max_turnover = math.inf"),
    "price_collar": _GOV.format(body="self._collar = math.inf"),
    "order_throttle": _GOV.format(body="self._window_ns = 0"),
    "daily_loss_limit": _GOV.format(body="self._max_loss = math.inf"),
    "drawdown_ladder": _GOV.format(body="self._dd_soft = self._dd_reduce = self._dd_halt = math.inf"),
    "stale_price": _GOV.format(body="self._age_ns = 1 << 62") + """
from quantramp.trader import barcheck as B
_check = B.BarCheck.check
def _no_order(self, ts_ns, *a):
    self.last_ts_ns = -(1 << 62)
    return _check(self, ts_ns, *a)
B.BarCheck.check = _no_order
""",
    "risk_reducing_exemption": _GOV.format(body="self._exempt_reducing = False"),
    "kill_allows_reducing": """
from quantramp.trader import engine as E
E.Engine.working_reduces_risk = property(lambda self: False)
""",
    "wall_clock_flatten": """
from quantramp.trader import server as S
async def _no_tick(self):
    return None
S.Runtime.tick = _no_tick
""",
    "end_of_day_flatten": """
from quantramp.trader import session as S
S.SessionClock.phase = lambda self, ts: 1
""",
    "bar_validation": """
from quantramp.trader import barcheck as B
_check = B.BarCheck.check
def _no_reference(self, *a):
    self.closes = []
    return _check(self, *a)
B.BarCheck.check = _no_reference
""",
}

_RUN = """
import json
from quantramp.trader import stress
r = stress.certify(quick=True, only=["controls"], model=object())  # the controls use scripted models
s = r["scenarios"][0]
print(json.dumps({"certified": r["certified"], "caught_by": s["measurements"]["caught_by"],
                  "failed_checks": [c["name"] for c in s["checks"] if not c["passed"]],
                  "errors": [v.get("error") for v in s["measurements"].values() if isinstance(v, dict) and v.get("error")]
                            + ([s["error"]] if s["error"] else [])}))
"""


def certify_with(patch: str) -> dict:
    code = textwrap.dedent(patch) + _RUN
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_every_control_has_a_mutation():
    assert set(MUTATIONS) == set(ALL_CONTROLS)


def test_the_pod_as_built_certifies():
    r = run_controls()
    assert r["certified"], [(e["name"], e["violations"], e.get("error")) for e in r["scenarios"] if not e["passed"]]
    assert {e["control"] for e in r["scenarios"]} == set(ALL_CONTROLS)


@pytest.mark.parametrize("control", sorted(MUTATIONS))
def test_switching_a_control_off_fails_the_certification_and_names_it(control):
    r = certify_with(MUTATIONS[control])
    assert r["certified"] is False, r
    assert control in r["failed_checks"] and control in r["caught_by"], r  # the report names the control
    assert not r["errors"], r
