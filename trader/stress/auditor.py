"""The scenarios' adapter to the independent auditor (:mod:`quantramp.trader.certification.auditor`).
"""

from __future__ import annotations

from ..certification.auditor import AuditLimits
from ..certification.auditor import Auditor as _Audit
from ..engine import Engine, StepResult
from ..marketdata import Bar


# -- independent audit of the engine's orders -----------------------------------------------------
class Auditor:
    """Adapter of the independent :class:`~.certification.auditor.Auditor` to these scenarios:
    call :meth:`step` after each ``engine.on_bar(bar)``. It gets the bar, the fill and the order
    the engine produced, and its own limits (the seed runbook's, scaled to the certified
    capital: :func:`audit_limits`); it never reads the governor or the engine's books.
    ``violations``: one text per violation, prefixed with the control's name."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.audit = _Audit(audit_limits(engine.config.capital_usd), bar_seconds=engine.config.bar_seconds)
        self.accepted = 0

    @property
    def violations(self) -> list[str]:
        return [f"{c}: {t}" for c, ts in self.audit.violations.items() for t in ts]

    def step(self, bar: Bar, res: StepResult) -> None:
        if res.bar_refused:
            return  # a bar the pod refused is not marked (the scenarios' bad bars)
        f = res.fill
        self.accepted += bool(res.order_qty)
        self.audit.bar(bar.ts, bar.close, f.filled_qty if f else 0, f.price if f else 0.0,
                       f.commission_usd if f else 0.0, res.order_qty)

def audit_limits(capital_usd: float) -> AuditLimits:
    """The auditor's limits: the seed runbook's figures scaled linearly to ``capital_usd``."""
    return AuditLimits.seed_runbook(capital_usd)
