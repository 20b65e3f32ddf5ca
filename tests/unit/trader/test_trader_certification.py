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


def test_running_every_symbol_on_new_york_s_calendar_fails_the_certification_at_london_s_close():
    """The per-symbol calendar is a control too: with every symbol on XNYS, the London scenario's long is
    still held at 16:26 London (11:26 New York), and the auditor, reading London's sessions itself, says so."""
    r = certify_with("""
from quantramp.trader import session as S
S.calendar = lambda name="XNYS": S.XNYS
""")
    assert r["certified"] is False, r
    assert "end_of_day_flatten" in r["failed_checks"], r
    assert r["caught_by"].get("end_of_day_flatten") == "into_close_london", r
    assert not r["errors"], r


def test_the_auditor_reads_early_closes_and_daily_decision_times_from_the_exchange():
    """On New York's 13:00 early close a position at 12:57 is held into the close (the old fixed 16:00 missed
    it); a daily bar's decision is timed at its session's close (the throttle counts market time)."""
    from datetime import datetime, timezone

    from quantramp.trader.certification import AuditLimits, Auditor

    aud = Auditor(AuditLimits.seed_runbook())
    t = datetime(2026, 11, 27, 17, 50, tzinfo=timezone.utc)  # 12:50 New York, the day after Thanksgiving
    aud.bar(t.replace(minute=49), 10.0, 0, 0.0, 0.0, 0)  # (the collar's previous close)
    aud.bar(t, 10.0, 0, 0.0, 0.0, 5)
    aud.bar(t.replace(minute=51), 10.0, 5, 10.0, 0.0, 0)
    assert aud.count() == {}
    aud.bar(t.replace(minute=57), 10.0, 0, 0.0, 0.0, 0)
    assert aud.count() == {"end_of_day_flatten": 1}, aud.violations
    daily = Auditor(AuditLimits.seed_runbook(max_orders_per_window=1), bar_seconds=86_400)
    daily.bar(datetime(2026, 11, 27, 14, 30, tzinfo=timezone.utc), 10.0, 0, 0.0, 0.0, 0)
    daily.bar(datetime(2026, 11, 30, 14, 30, tzinfo=timezone.utc), 10.0, 0, 0.0, 0.0, 1)
    assert daily._accepted == [datetime(2026, 11, 30, 21, 0, tzinfo=timezone.utc)]
