"""The TradingStrategy resource as pydantic models: the single source of the CRD schema.

``crds/`` is generated from these models by ``python -m quantramp.operator.crdgen``; a unit
test fails when the committed CRD is stale.  Field names are camelCase on the wire (aliases)
and snake_case in Python.

Units: capital in USD, capital shares in percent (0–100), ratios 0–1, slippage in bps,
durations as strings such as ``30s``, ``15m``, ``2h``, ``7d`` (see :func:`parse_duration`).
The default stage table and criteria thresholds are the seed runbook's (DESIGN.md,
"Default stages").
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

GROUP = "quantramp.io"
VERSION = "v1alpha1"
PLURAL = "tradingstrategies"
KIND = "TradingStrategy"

DURATION_RE = r"^[0-9]+([.][0-9]+)?(s|m|h|d)$"
_DURATION = re.compile(DURATION_RE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_MESSAGE = "{field} must be a non-negative duration: a number and a unit s, m, h or d, e.g. 30s, 15m or 7d"


def parse_duration(text: str) -> timedelta:
    """Parse a non-negative duration such as ``"45s"``, ``"1.5h"`` or ``"30d"``.

    Returns a :class:`datetime.timedelta`.  Raises ``ValueError`` on anything else
    (negative values, missing unit, empty string).
    """
    m = _DURATION.match(text.strip())
    if not m:
        raise ValueError(f"invalid duration {text!r}: use a number and a unit s, m, h or d, e.g. 30s or 7d")
    return timedelta(seconds=float(text.strip()[:-1]) * _UNIT_SECONDS[m.group(2)])


def _check_duration(value: str) -> str:
    parse_duration(value)
    return value


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ModelRef(_Model):
    """An MLflow registered model and the candidate version to ramp (the challenger)."""

    name: str = Field(min_length=1, description="MLflow registered model name.")
    version: str = Field(
        min_length=1, pattern=r"^[0-9]+$", description="Candidate model version (the challenger), e.g. \"2\"."
    )


class Stage(_Model):
    """One step of the ramp: the challenger's share of capital and the gates to leave it."""

    name: str = Field(
        min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Stage name, e.g. canary-1."
    )
    capital_percent: float = Field(
        ge=0, le=100, description="Challenger's share of the strategy capital in this stage, percent 0-100."
    )
    dwell: str = Field(
        default="0s",
        max_length=32,
        description="Minimum time in the stage before it may advance: a non-negative number with unit s, m, h or d.",
        json_schema_extra={"x-kubernetes-validations": [{"rule": f"self.matches('{DURATION_RE}')", "message": DURATION_MESSAGE.format(field="dwell")}]},
    )
    max_drawdown: float | None = Field(
        default=None, ge=0, le=1, description="Drawdown cap of the challenger in this stage, ratio 0-1 (0.02 = 2%)."
    )
    @field_validator("dwell")
    @classmethod
    def check_dwell(cls, value: str) -> str:
        return _check_duration(value)

    pnl_band: float | None = Field(
        default=None,
        ge=0,
        le=10,
        description="Allowed deviation of live P&L from simulated P&L, ratio (0.10 = +/-10%).",
    )


def default_stages() -> list[Stage]:
    """The seed runbook's stage table (DESIGN.md, "Default stages")."""
    return [
        Stage(name="shadow", capital_percent=0, dwell="30d"),
        Stage(name="canary-1", capital_percent=1, dwell="7d", max_drawdown=0.02, pnl_band=0.10),
        Stage(name="canary-2", capital_percent=5, dwell="14d", max_drawdown=0.03, pnl_band=0.10),
        Stage(name="production", capital_percent=100, dwell="0s", max_drawdown=0.10, pnl_band=0.15),
    ]


class Criteria(_Model):
    """Thresholds every stage must meet to advance (seed runbook)."""

    max_slippage_ratio: float = Field(
        default=1.5, gt=0, description="Realised slippage may be at most this multiple of modelled slippage."
    )
    min_fill_ratio: float = Field(default=0.95, ge=0, le=1, description="Minimum fill ratio, 0-1.")
    min_precision_ratio: float = Field(
        default=0.9, ge=0, description="Challenger precision must be at least this fraction of the champion's."
    )
    min_trades: int = Field(
        default=20, ge=0, description="Fewer challenger trades than this in the stage is InsufficientData (hold)."
    )
    pnl_floor_ratio: float = Field(
        default=0.005,
        ge=0,
        description=(
            "Denominator floor of the P&L deviation as a ratio of the challenger's capital, so a near-zero "
            "simulated P&L does not turn noise into a failure."
        ),
    )


class Analysis(_Model):
    """How often and how strictly each stage is judged (Argo Rollouts AnalysisRun semantics)."""

    interval: str = Field(
        default="1m",
        max_length=32,
        description="Time between analyses: a positive number with unit s, m, h or d.",
        json_schema_extra={"x-kubernetes-validations": [{"rule": f"self.matches('{DURATION_RE}')", "message": DURATION_MESSAGE.format(field="interval")}]},
    )

    @field_validator("interval")
    @classmethod
    def check_interval(cls, value: str) -> str:
        return _check_duration(value)
    failure_limit: int = Field(
        default=0, ge=0, description="Consecutive failed analyses tolerated; one more rolls back (Argo failureLimit)."
    )
    criteria: Criteria = Field(default_factory=Criteria)


class RiskLimits(_Model):
    """Pre-trade limits, as percent of the capital allocated to a trader pod."""

    max_position_percent: float = Field(default=50, gt=0, le=100, description="Max position notional, percent.")
    max_order_percent: float = Field(default=50, gt=0, le=100, description="Max single order notional, percent.")
    max_daily_loss_percent: float = Field(
        default=2, gt=0, le=100, description="Daily loss hard stop, percent of allocated capital."
    )


class TraderSpec(_Model):
    """How to run a trader pod."""

    image: str = Field(default="quantramp:dev", min_length=1, description="Container image (the Dockerfile's).")
    command: list[str] = Field(default_factory=lambda: ["quantramp-trader", "run"], min_length=1)
    bar_interval_seconds: float = Field(
        default=60.0, gt=0, description="Wall seconds per 1-minute bar of the replay; 60 is real time."
    )
    entry_threshold: float | None = Field(
        default=None, ge=0, le=0.5, description="Probability edge over 0.5 needed to take a position."
    )
    env: list[dict[str, Any]] = Field(default_factory=list, description="Extra container env (name/value).")


STAGES_RULES = [
    {
        "rule": "self.map(s, s.capitalPercent).isSorted() && "
        "self.all(s, self.exists_one(t, t.capitalPercent == s.capitalPercent))",
        "message": "stages must have strictly increasing capitalPercent, e.g. 0, 1, 5, 100",
    },
    {
        "rule": "self.all(s, self.exists_one(t, t.name == s.name))",
        "message": "stage names must be unique",
    },
]


class TradingStrategySpec(_Model):
    """``spec`` of a TradingStrategy."""

    model: ModelRef
    symbols: list[str] = Field(default_factory=lambda: ["AAPL"], min_length=1)
    capital_usd: float = Field(gt=0, description="Capital of the strategy in USD.")
    stages: list[Stage] = Field(
        default_factory=default_stages,
        min_length=2,
        max_length=10,
        json_schema_extra={"x-kubernetes-validations": STAGES_RULES},
    )

    @field_validator("stages")
    @classmethod
    def check_stages(cls, stages: list[Stage]) -> list[Stage]:
        caps = [s.capital_percent for s in stages]
        if any(b <= a for a, b in zip(caps, caps[1:])):
            raise ValueError(STAGES_RULES[0]["message"])
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(STAGES_RULES[1]["message"])
        return stages
    analysis: Analysis = Field(default_factory=Analysis)
    risk: RiskLimits = Field(default_factory=RiskLimits)
    trader: TraderSpec = Field(default_factory=TraderSpec)


Phase = Literal["Pending", "Progressing", "Promoted", "RolledBack", "Failed"]


class Measurement(_Model):
    """One criterion of one analysis: value measured, threshold, result."""

    value: float | None = None
    threshold: float | None = None
    result: Literal["Successful", "Failed", "Inconclusive", "Error"]
    message: str = ""


class AnalysisResult(_Model):
    """The most recent analysis of the current stage."""

    time: datetime
    verdict: Literal["Successful", "Failed", "Inconclusive", "Error"]
    measurements: dict[str, Measurement] = Field(default_factory=dict)
    message: str = ""


class Condition(_Model):
    """A Kubernetes status condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None


class TradingStrategyStatus(_Model):
    """``status`` of a TradingStrategy, written only by the operator."""

    phase: Phase = "Pending"
    stage: str | None = None
    stage_index: int | None = None
    capital_percent: float | None = None
    champion_version: str | None = None
    challenger_version: str | None = None
    stage_start_time: datetime | None = None
    last_analysis: AnalysisResult | None = None
    consecutive_failures: int = 0
    message: str = ""
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
    pending_effects: list[dict[str, Any]] = Field(
        default_factory=list,
        description=(
            "Effects of the last transition not yet confirmed done (outbox). The operator runs them, "
            "idempotently, before it decides anything else."
        ),
    )
