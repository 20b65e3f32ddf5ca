"""end_of_day_flatten on another exchange: a London symbol (``QR_CALENDARS=CSPX=XLON``) always long
from 15:30 London to its 16:30 close on 2026-12-01. The pod must be flat from 16:25 London (11:25 New
York, hours before New York's 15:55); the auditor holds it to London's sessions (exchange_calendars
XLON), so a pod that ran every symbol on New York's calendar fails here."""

from ..pod import AuditLimits, Auditor, Outcome, Script, pod_engine, run, session, wiggle

CONTROL = "end_of_day_flatten"
DESCRIPTION = "a long held into the close of a London symbol"
#: a London symbol from the pod's own settings (a file source: the bundled sample is New York's AAPL)
LONDON_ENV = {"QR_SYMBOLS": "CSPX", "QR_CALENDARS": "CSPX=XLON", "QR_BARS_SOURCE": "file",
              "QR_BARS_URL": "/bars/{symbol}.csv"}


def run_scenario() -> Outcome:
    eng = pod_engine(Script(lambda i: 0.9), **LONDON_ENV)
    aud = Auditor(AuditLimits.seed_runbook(), calendar="XLON")
    run(eng, session("2026-12-01", wiggle(60), start="15:30", tz="Europe/London"), aud)
    return Outcome(aud.count(), {"position_at_close_qty": eng.live.position, "calendar": eng.calendar.name})
