"""The champion's live allocation: capital and capital-scaled limits that change without a restart.

During a ramp the champion trades ``100 - stage %`` of the strategy capital, so its capital
changes at every stage transition. Carried in the pod's environment, each change would
restart the production trader (review B11: a gap with no champion, a mid-day restart). Instead
the operator writes the champion's allocation to Redis (the trader's own durable store) at
every convergence, and the champion's trader reads it before its first bar and re-reads it on
every bar, applying a change in place (capital, limits, equity peaks rebased by the change in
USD, as on a restart). The record is JSON at :func:`key`; the trader refuses to trade while
it has none or cannot read it (a dead dependency is not guessed around).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass


def key(namespace: str, strategy: str, role: str) -> str:
    """Redis key of a role's allocation: ``quantramp:{ns}:{strategy}:{role}:allocation``."""
    return f"quantramp:{namespace}:{strategy}:{role}:allocation"


@dataclass(frozen=True)
class Allocation:
    """What the operator allocates to one trader, USD: its capital and the limits scaled from it
    (the strategy's ``risk`` percentages of that capital)."""

    capital_usd: float
    max_position_usd: float
    max_order_usd: float
    max_daily_loss_usd: float

    def __post_init__(self) -> None:
        for name in ("capital_usd", "max_position_usd", "max_order_usd", "max_daily_loss_usd"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"allocation {name}={v!r} must be a positive finite number of USD")

    def to_json(self) -> str:
        """The record as stored (compact JSON, keys sorted)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, raw: str | bytes) -> "Allocation":
        """Parse a stored record; raises ``ValueError`` with the reason on anything malformed."""
        try:
            data = json.loads(raw)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"allocation is not JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError("allocation must be a JSON object")
        try:
            return cls(**data)
        except TypeError as exc:
            raise ValueError(f"allocation fields: {exc}") from None
