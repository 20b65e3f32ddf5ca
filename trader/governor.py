"""Pre-trade risk governor: pure checks on a target position, fail-closed.

The engine asks for a target position (signed whole shares); the governor
returns the order that may be sent (signed shares, possibly clipped or zero)
and the reason code of every limit that acted. No I/O, no clock.

Checks, in order:

1. inputs must be finite and the price positive, else deny everything
   (``invalid_price`` / ``invalid_input``) — fail closed;
2. after the daily-loss cap is hit (day P&L <= -max_daily_loss_usd) only
   risk-reducing orders pass (toward flat, never through it): ``daily_loss_limit``;
3. |target| * price <= max_position_usd: ``max_position``;
4. |order| * price <= max_order_usd: ``max_order``.

A request whose resulting order is zero shares while the target differed from
the position is *denied*; one that was reduced is *clipped*.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


class Reason(str, Enum):
    """Reason codes of governor actions (stable strings for logs and metrics)."""

    INVALID_PRICE = "invalid_price"
    INVALID_INPUT = "invalid_input"
    DAILY_LOSS_LIMIT = "daily_loss_limit"
    MAX_POSITION = "max_position"
    MAX_ORDER = "max_order"


@dataclass(frozen=True)
class RiskLimits:
    """Limits in USD (all > 0): order notional, position notional, daily loss."""

    max_order_usd: float
    max_position_usd: float
    max_daily_loss_usd: float

    def __post_init__(self) -> None:
        for name in ("max_order_usd", "max_position_usd", "max_daily_loss_usd"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a positive finite number of USD, got {v!r}")


@dataclass(frozen=True)
class Verdict:
    """Governor outcome.

    order_qty: signed shares that may be sent (0 = nothing). reasons: codes of
    the limits that acted, in check order. denied: the request was refused
    entirely (a non-zero order was wanted, none may be sent).
    """

    order_qty: int
    reasons: tuple[Reason, ...]
    denied: bool

    @property
    def clipped(self) -> bool:
        """True if a limit reduced the order but some of it may be sent."""
        return bool(self.reasons) and not self.denied


def _toward_zero(x: float) -> int:
    return int(math.floor(x)) if x >= 0 else int(math.ceil(x))


def check(
    target_qty: int,
    position_qty: int,
    price: float,
    day_pnl_usd: float,
    limits: RiskLimits,
) -> Verdict:
    """Decide the order for moving from ``position_qty`` to ``target_qty`` shares at ``price`` USD.

    ``day_pnl_usd`` is today's P&L (USD, negative = loss). Returns a
    :class:`Verdict`; order_qty is a signed whole number of shares.
    """
    wanted = target_qty - position_qty
    if not (isinstance(price, (int, float)) and math.isfinite(price) and price > 0):
        return Verdict(0, (Reason.INVALID_PRICE,), True)
    if not all(
        isinstance(v, (int, float)) and math.isfinite(v) for v in (target_qty, position_qty, day_pnl_usd)
    ):
        return Verdict(0, (Reason.INVALID_INPUT,), True)
    if wanted == 0:
        return Verdict(0, (), False)

    reasons: list[Reason] = []
    target = int(target_qty)
    pos = int(position_qty)

    if day_pnl_usd <= -limits.max_daily_loss_usd:
        # reduce-only: stay on the current side, no larger than now
        if pos == 0 or target * pos < 0:
            reduced = 0
        else:
            reduced = max(min(abs(target), abs(pos)), 0) * (1 if pos > 0 else -1)
        if reduced != target:
            reasons.append(Reason.DAILY_LOSS_LIMIT)
            target = reduced

    max_pos = _toward_zero(limits.max_position_usd / price)
    if abs(target) > max_pos:
        # clip new risk at the cap; a same-side position already above the cap
        # (the price moved) may be kept or reduced but not grown
        allowed = max_pos
        if pos * target > 0:
            allowed = max(max_pos, min(abs(target), abs(pos)))
        if allowed != abs(target):
            reasons.append(Reason.MAX_POSITION)
            target = allowed * (1 if target > 0 else -1)

    order = target - pos
    max_ord = _toward_zero(limits.max_order_usd / price)
    if abs(order) > max_ord:
        reasons.append(Reason.MAX_ORDER)
        order = max_ord * (1 if order > 0 else -1)

    denied = order == 0
    return Verdict(order, tuple(reasons), denied)
