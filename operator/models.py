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
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator
from pydantic.alias_generators import to_camel

GROUP = "quantramp.io"
VERSION = "v1alpha1"
PLURAL = "tradingstrategies"
KIND = "TradingStrategy"

DURATION_RE = r"^[0-9]{1,6}([.][0-9]{1,3})?(s|m|h|d)$"
_DURATION = re.compile(DURATION_RE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
DURATION_MESSAGE = (
    "{field} must be a non-negative duration: up to 6 digits (3 decimals) and a unit s, m, h or d, e.g. 30s, 15m or 7d"
)
#: CEL: a duration that is not zero
NONZERO_RULE = "!self.matches('^0+([.]0+)?[smhd]$')"


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

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$",
        description="MLflow registered model name (letters, digits, '.', '_', '-'; it forms the URI models:/<name>/<version>).",
    )
    version: str = Field(
        min_length=1,
        max_length=9,
        pattern=r"^[1-9][0-9]*$",
        description="Candidate model version (the challenger), a registry version number from 1, e.g. \"2\".",
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
        default=None, gt=0, le=1, description="Drawdown cap of the challenger in this stage, ratio 0-1 (0.02 = 2%)."
    )
    @field_validator("dwell")
    @classmethod
    def check_dwell(cls, value: str) -> str:
        return _check_duration(value)

    pnl_band: float | None = Field(
        default=None,
        gt=0,
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
        default=1.5, gt=0, le=100, description="Realised slippage may be at most this multiple of modelled slippage."
    )
    min_fill_ratio: float = Field(default=0.95, ge=0, le=1, description="Minimum fill ratio, 0-1.")
    min_precision_ratio: float = Field(
        default=0.9, ge=0, le=10, description="Challenger precision must be at least this fraction of the champion's."
    )
    min_trades: int = Field(
        default=20, ge=0, le=1_000_000, description="Fewer challenger trades than this in the stage is InsufficientData (hold)."
    )
    baseline_precision: float | None = Field(
        default=None,
        gt=0,
        le=1,
        description=(
            "Directional precision (0-1) to compare the challenger with when the model has no champion yet "
            "(a first model). Unset: precisionRatio is Skipped for a first model."
        ),
    )
    pnl_floor_ratio: float = Field(
        default=0.005,
        gt=0,
        le=1,
        description=(
            "Denominator floor of the P&L deviation as a ratio of the challenger's capital, so a near-zero "
            "simulated P&L does not turn noise into a failure."
        ),
    )


#: a success/failure condition: CEL over ``result`` restricted to comparisons with numbers joined by && and ||,
#: so that every condition the API server accepts is one the operator can evaluate
CONDITION_RE = (
    r"^\s*result\s*(<=|>=|<|>|==|!=)\s*-?[0-9]+([.][0-9]+)?"
    r"(\s*(&&|[|][|])\s*result\s*(<=|>=|<|>|==|!=)\s*-?[0-9]+([.][0-9]+)?)*\s*$"
)
BUILTIN_CRITERIA = ("drawdown", "criticalAlerts", "pnlDeviation", "slippageRatio", "fillRatio", "precisionRatio")


def _condition(field: str) -> Any:
    return Field(
        default=None,
        max_length=256,
        description=f"{field}: a CEL expression over `result` (the query's value), comparisons with numbers joined by "
                    "&& and ||, e.g. `result >= 0.5 && result < 3`.",
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": f"self.matches(r'{CONDITION_RE}')",
            "message": f"{field} must compare `result` with numbers, joined by && or ||, e.g. result >= 0.5",
        }]},
    )


class MetricCriterion(_Model):
    """A user criterion (Argo Rollouts metric): a PromQL expression judged by success and failure conditions.

    The operator evaluates ``<aggregate> by (namespace, strategy, role, stage) (<query>)`` once per round
    for all strategies, and judges the value of the role under judgement in its stage: failure
    condition true -> Failed; else success condition true -> Successful; else Inconclusive (with
    only a success condition, false -> Failed; with only a failure condition, false -> Successful).
    No series -> InsufficientData; a non-finite value or a failed query -> Error.
    """

    name: str = Field(
        min_length=1, max_length=40, pattern=r"^[a-z][a-zA-Z0-9]*$", description="Criterion name (camelCase), unique.",
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "!(self in " + str(list(BUILTIN_CRITERIA)) + ")",
            "message": "this name belongs to a built-in criterion: choose another",
        }]},
    )
    query: str = Field(min_length=1, max_length=2048, description="PromQL over the trader's series (labels namespace, strategy, role, stage).")
    aggregate: Literal["max", "min", "sum", "avg"] = Field(default="max", description="How series of one (strategy, role, stage) combine.")
    success_condition: str | None = _condition("successCondition")
    failure_condition: str | None = _condition("failureCondition")
    kind: Literal["promotion", "safety"] = Field(
        default="promotion",
        description="promotion: InsufficientData below minTrades, fails beyond failureLimit; safety: judged every round, fails on the first failure.",
    )
    failure_limit: int | None = Field(default=None, ge=0, le=1000, description="Overrides analysis.failureLimit for this criterion.")
    inconclusive_limit: int | None = Field(default=None, ge=0, le=1000, description="Overrides analysis.inconclusiveLimit.")
    dry_run: bool = Field(default=False, description="Measure and record, never decide (Argo dryRun).")


SEQUENTIAL_CRITERIA = ("slippageRatio", "fillRatio", "pnlDeviation", "precisionRatio")


class InconclusiveOverride(_Model):
    """What one criterion does when it is still undecided at the maximum dwell."""

    criterion: Literal["slippageRatio", "fillRatio", "pnlDeviation", "precisionRatio"]
    on_inconclusive: Literal["pause", "pass", "rollback"]


class Judgement(_Model):
    """How the promotion criteria ``slippageRatio``, ``fillRatio``, ``pnlDeviation`` and ``precisionRatio`` are judged.

    ``fixedThreshold`` (default): the round's value against the threshold, counted as Argo does.
    ``anytimeValid``: a confidence sequence on the trader's per-observation statistic (per fill,
    per order, per P&L block, per call paired with the champion's model on the same bar (a first model,
    with no champion, has no precision stream); ``quantramp.operator.judgement``), checked every round with a stated
    error whatever the number of looks: a bad challenger passes a criterion with probability at
    most ``alphaPromote``; a good one is rolled back by any criterion in any stage with probability
    at most ``alphaRollback`` (split evenly over criteria x stages). Outcomes per criterion:
    InsufficientData (fewer than ``minSamples``), Continue, Successful (passed, final), Failed
    (rolls back at once, whatever failureLimit says), and at ``maxDwellFactor`` x the stage's dwell
    ``onInconclusive`` (pause for a human, pass, or rollback). Drawdown caps and critical alerts
    stay hard guards (review ``statistical-judgement.md`` §6a).
    """

    method: Literal["fixedThreshold", "anytimeValid"] = Field(default="fixedThreshold", description="fixedThreshold or anytimeValid.")
    criteria: list[Literal["slippageRatio", "fillRatio", "pnlDeviation", "precisionRatio"]] = Field(
        default_factory=lambda: list(SEQUENTIAL_CRITERIA), min_length=1, max_length=4,
        description="Criteria judged anytime-valid (the others keep fixed thresholds).",
        json_schema_extra={"x-kubernetes-validations": [{"rule": "self.all(c, self.exists_one(d, d == c))", "message": "criteria must be unique"}]},
    )
    alpha_promote: float = Field(default=0.05, gt=0, lt=0.5, description="Probability that a bad challenger passes one criterion (per criterion).")
    alpha_rollback: float = Field(default=0.05, gt=0, lt=0.5, description="Probability that a good challenger is rolled back by these criteria over the whole ramp.")
    min_samples: int = Field(default=30, ge=2, le=1_000_000, description="Observations before a criterion can pass or fail.")
    max_dwell_factor: float = Field(default=2.0, ge=1, le=10, description="A criterion still undecided at this multiple of the stage's dwell is Inconclusive.")
    on_inconclusive: Literal["pause", "pass", "rollback"] = Field(
        default="pause", description="What an Inconclusive criterion does at the maximum dwell: pause for a human, pass, or roll back.")
    overrides: list[InconclusiveOverride] = Field(default_factory=list, max_length=4, description="Per-criterion onInconclusive.")
    block_bars: int = Field(default=30, ge=1, le=100_000, description="Bars per P&L block of the pnlDeviation statistic (30 = half an hour of minute bars).")

    @field_validator("criteria")
    @classmethod
    def check_unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("criteria must be unique")
        return value

    def policy(self, criterion: str) -> str:
        """onInconclusive of ``criterion``."""
        return next((o.on_inconclusive for o in self.overrides if o.criterion == criterion), self.on_inconclusive)

    def sequential(self, criterion: str) -> bool:
        """Whether ``criterion`` is judged anytime-valid."""
        return self.method == "anytimeValid" and criterion in self.criteria


class Analysis(_Model):
    """How often and how strictly each stage is judged (Argo Rollouts AnalysisRun semantics).

    Per criterion and per stage the operator counts measurements (count, successful, failed,
    inconclusive, error, consecutiveError), as Argo's ``MetricResult`` does. A criterion fails
    the stage when ``failed > failureLimit`` (all failures of the stage, not consecutive ones;
    safety criteria use 0 whatever is set); ``inconclusive > inconclusiveLimit`` pauses the ramp
    for a human (``kubectl quantramp promote``); ``consecutiveError > consecutiveErrorLimit``
    for longer than ``metricErrorBudget`` applies ``onMetricError``. After an Error the next
    measurement is taken ``errorRetry`` later, not a full interval.
    """

    interval: str = Field(
        default="1m",
        max_length=32,
        description="Time between analyses: a positive number with unit s, m, h or d.",
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": f"self.matches('{DURATION_RE}')", "message": DURATION_MESSAGE.format(field="interval")},
            {"rule": NONZERO_RULE, "message": "interval must be greater than zero"},
        ]},
    )

    @field_validator("interval", "error_retry", "metric_error_budget", "progress_deadline")
    @classmethod
    def check_interval(cls, value: str, info: ValidationInfo) -> str:
        _check_duration(value)
        if info.field_name in ("interval", "error_retry") and parse_duration(value).total_seconds() == 0:
            raise ValueError("must be greater than zero")
        return value

    failure_limit: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Failed measurements of a promotion criterion tolerated in a stage; one more rolls back (Argo failureLimit).",
    )
    inconclusive_limit: int = Field(
        default=0,
        ge=0,
        le=1000,
        description="Inconclusive measurements of a criterion tolerated in a stage; one more pauses the ramp for a human.",
    )
    consecutive_error_limit: int = Field(
        default=4,
        ge=0,
        le=1000,
        description="Consecutive measurement errors of a criterion tolerated (Argo's default 4); then onMetricError applies.",
    )
    error_retry: str = Field(
        default="10s",
        max_length=32,
        description="Delay before the next measurement after an Error (Argo retries after 10s).",
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": f"self.matches('{DURATION_RE}')", "message": DURATION_MESSAGE.format(field="errorRetry")},
            {"rule": NONZERO_RULE, "message": "errorRetry must be greater than zero"},
        ]},
    )
    on_metric_error: Literal["hold", "demote", "rollback"] = Field(
        default="demote",
        description=(
            "What to do when the evidence stays unavailable (errors beyond consecutiveErrorLimit and metricErrorBudget): "
            "hold (stay, condition Stalled), demote (back to the first stage, paper), rollback. Never advance while blind."
        ),
    )
    metric_error_budget: str = Field(
        default="5m",
        max_length=32,
        description="How long the evidence may be unavailable before onMetricError applies.",
        json_schema_extra={"x-kubernetes-validations": [{"rule": f"self.matches('{DURATION_RE}')", "message": DURATION_MESSAGE.format(field="metricErrorBudget")}]},
    )
    progress_deadline: str = Field(
        default="1d",
        max_length=32,
        description=(
            "Time a stage may take beyond its dwell to pass its criteria (no data, too few trades, a trader that never "
            "becomes ready all count against it); then onProgressDeadline applies."
        ),
        json_schema_extra={"x-kubernetes-validations": [{"rule": f"self.matches('{DURATION_RE}')", "message": DURATION_MESSAGE.format(field="progressDeadline")}]},
    )
    on_progress_deadline: Literal["pause", "demote", "rollback"] = Field(
        default="rollback", description="What to do when a stage overruns its progress deadline."
    )
    criteria: Criteria = Field(default_factory=Criteria)
    judgement: Judgement = Field(default_factory=Judgement)
    metrics: list[MetricCriterion] = Field(
        default_factory=list,
        max_length=10,
        description="User criteria judged beside the built-in ones.",
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": "self.all(m, self.exists_one(n, n.name == m.name))", "message": "metric names must be unique"},
            {"rule": "self.all(m, has(m.successCondition) || has(m.failureCondition))",
             "message": "a metric needs a successCondition or a failureCondition"},
        ]},
    )

    @field_validator("metrics")
    @classmethod
    def check_metrics(cls, metrics: list[MetricCriterion]) -> list[MetricCriterion]:
        names = [m.name for m in metrics]
        if len(set(names)) != len(names):
            raise ValueError("metric names must be unique")
        for m in metrics:
            if m.name in BUILTIN_CRITERIA:
                raise ValueError(f"{m.name} is a built-in criterion")
            if m.success_condition is None and m.failure_condition is None:
                raise ValueError(f"metric {m.name} needs a successCondition or a failureCondition")
            for c in (m.success_condition, m.failure_condition):
                if c is not None and not re.match(CONDITION_RE, c):
                    raise ValueError(f"metric {m.name}: condition {c!r} must compare result with numbers")
        return metrics


class RiskLimits(_Model):
    """Pre-trade limits, as percent of the capital allocated to a trader pod."""

    max_position_percent: float = Field(default=50, gt=0, le=100, description="Max position notional of each symbol, "
                                        "percent of the pod's capital.")
    max_order_percent: float = Field(default=50, gt=0, le=100, description="Max single order notional, percent.")
    max_daily_loss_percent: float = Field(
        default=2, gt=0, le=100, description="Daily loss hard stop, percent of allocated capital: with several symbols, "
                                             "the combined loss cap of all of them (seed: $30 for MSFT + AAPL)."
    )


#: env names the operator sets itself: a strategy may not override them (nor carry MLflow credentials inline:
#: they come from the platform's Secret, the chart's mlflow.traderSecretName; nor the market data database's password:
#: PGPASSWORD comes from spec.marketData.postgres.passwordSecretKeyRef)
RESERVED_ENV = ("MLFLOW_TRACKING_URI", "REDIS_URL", "POD_IP", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_TRACKING_TOKEN", "PGPASSWORD", "IB_HOST", "IB_PORT", "IB_APP", "IB_MODE", "IB_CLIENT_ID",
                "IB_ACCOUNT")


class EnvVar(_Model):
    """An extra environment variable of the trader container (a plain value)."""

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Variable name. Names starting with QR_ and MLFLOW_TRACKING_URI, REDIS_URL, POD_IP, the MLflow "
                    "credentials (MLFLOW_TRACKING_USERNAME, _PASSWORD, _TOKEN) and PGPASSWORD are the operator's.",
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": "!self.startsWith('QR_') && !(self in " + str(list(RESERVED_ENV)) + ")",
            "message": "env names starting with QR_ and MLFLOW_TRACKING_URI, REDIS_URL, POD_IP are set by the operator "
                       "(capital, risk limits, model); set them through spec.capitalUsd, spec.risk and spec.trader instead. "
                       "MLflow credentials are set by the operator too, from the platform's Secret: never in a TradingStrategy; "
                       "PGPASSWORD comes from the Secret named in spec.marketData.postgres.passwordSecretKeyRef; "
                       "IB_* come from spec.broker.ib",
        }]},
    )
    value: str = Field(default="", max_length=4096)

    @field_validator("name")
    @classmethod
    def check_name(cls, value: str) -> str:
        if value.startswith("QR_") or value in RESERVED_ENV:
            raise ValueError(f"env name {value} is set by the operator")
        return value


class TraderSpec(_Model):
    """How to run a trader pod."""

    image: str | None = Field(
        default=None, min_length=1, max_length=512, pattern=r"^[^\s]+$",
        description="Container image; unset: the platform's default trader image (the Helm chart's trader.image).",
    )
    command: list[str] = Field(
        default_factory=lambda: ["quantramp-trader", "run"], min_length=1, max_length=32,
        json_schema_extra={"items": {"type": "string", "minLength": 1, "maxLength": 1024}},
    )
    bar_interval_seconds: float = Field(
        default=60.0, gt=0, le=3600, description="Wall seconds per 1-minute bar of the replay; 60 is real time."
    )
    entry_threshold: float | None = Field(
        default=None, ge=0, le=0.49,
        description="Probability edge over 0.5 needed to take a position, 0 to 0.49 (the trader needs it below 0.5).",
    )
    env: list[EnvVar] = Field(
        default_factory=list,
        max_length=64,
        description="Extra container env (name/value).",
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": "self.all(e, self.exists_one(f, f.name == e.name))", "message": "env names must be unique"}
        ]},
    )


class KillSwitch(_Model):
    """The strategy's kill switch (seed 004 "Kill-Switch Operations"): while ``engaged`` no trader pod of the
    strategy sends an order that adds risk, the ramp is frozen (no advance, no promotion; a rollback or an
    abort, which restore the last known good version, still go), and with ``flatten`` the pods close their
    positions. Set by ``kubectl quantramp kill on|off NAME --reason`` or by the operator itself on an
    automatic trigger (an ``AUTO_KILL_SWITCH`` alert, a stop-loss, a critical rollback).

    Note the seed's wording is inverted: its ``exo kill off`` (trading off) is ``kill on`` here.
    """

    engaged: bool = Field(default=False, description="True halts the strategy (kill switch engaged).")
    reason: str = Field(default="", max_length=500, description="Why it was engaged or released (required for both).")
    by: str = Field(default="", max_length=200, description="Who engaged or released it (the plugin writes the kubeconfig user).")
    trigger: Literal["Manual", "Alert", "DailyStopLoss", "MonthlyStopLoss", "Rollback", "Drill"] = Field(
        default="Manual", description="What engaged it: Manual, or an automatic trigger of the operator.")
    flatten: bool = Field(default=True, description="Also close the pods' positions (risk-reducing orders always go out).")


KILL_SWITCH_RULES = [
    {"rule": "!self.engaged || size(self.reason) > 0",
     "message": "engaging the kill switch needs a reason: kubectl quantramp kill on NAME --reason '...'"},
    {"rule": "!(oldSelf.engaged && !self.engaged) || (size(self.reason) > 0 && self.reason != oldSelf.reason)",
     "message": "releasing the kill switch needs a reason of its own: kubectl quantramp kill off NAME --reason '...'"},
]


class StopLoss(_Model):
    """Strategy-level stop-losses (seed 004 "Daily Stop-Loss (-0.8%)" and "Monthly Stop-Loss (-3%)"): the
    operator sums the live trader pods' P&L (champion, and the challenger in live stages; paper fills do
    not count) and engages the kill switch when the trading day's P&L falls to ``-dailyPercent`` % of
    ``capitalUsd`` or below, or the month's (the last 21 trading days recorded in ``status.pnlDays`` plus
    today) to ``-monthlyPercent`` % or below, the latter only once ``monthlyMinHistoryDays`` days are
    recorded (seed: ``min_history_days: 10``)."""

    enabled: bool = Field(default=True, description="Judge the stop-losses (false: only alerts and humans kill).")
    daily_percent: float = Field(default=0.8, gt=0, le=100, description="Daily stop-loss, percent of capitalUsd (seed 004: 0.8).")
    monthly_percent: float = Field(default=3.0, gt=0, le=100, description="Monthly stop-loss, percent of capitalUsd (seed 004: 3).")
    monthly_min_history_days: int = Field(
        default=10, ge=0, le=366, description="Trading days of recorded P&L before the monthly stop-loss applies (seed 004: 10).")


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
    {
        "rule": "self[size(self) - 1].capitalPercent == 100.0",
        "message": "the last stage must have capitalPercent 100: entering it promotes the candidate to all of the capital",
    },
]


#: symbols of the bundled sample (marketData.source sample); the other sources may name any well-formed symbol
SUPPORTED_SYMBOLS = ("AAPL",)
#: a symbol: an exchange ticker in capitals, e.g. AAPL or BRK.B (one '.', then a class or venue suffix)
SYMBOL_RE = r"^[A-Z][A-Z0-9]{0,9}([.][A-Z0-9]{1,8})?$"
SYMBOL_MAX_LENGTH = 10
#: how many symbols one strategy may trade: one trader pod per role runs them all, one engine per symbol under
#: one governor (quantramp.trader.portfolio); the seed manual's multi-symbol day trades two
MAX_SYMBOLS = 8
SYMBOL_MESSAGE = (
    "a symbol is an exchange ticker in capitals: a letter, then letters or digits, at most one '.' "
    f"(e.g. AAPL, BRK.B), {SYMBOL_MAX_LENGTH} characters at most"
)
SYMBOLS_UNIQUE_MESSAGE = "symbols must be unique: name each symbol once"
SYMBOLS_MAX_MESSAGE = (
    f"a strategy trades at most {MAX_SYMBOLS} symbols (one trader pod runs them all): split the symbols over "
    "several TradingStrategies"
)
SYMBOLS_RULES = [
    {"rule": f"size(self) <= {MAX_SYMBOLS}", "message": SYMBOLS_MAX_MESSAGE},
    {"rule": "self.all(s, self.exists_one(t, t == s))", "message": SYMBOLS_UNIQUE_MESSAGE},
]
SAMPLE_SYMBOLS_MESSAGE = "the bundled sample has AAPL only: set spec.marketData to your own bars for other symbols"
#: the exchange calendars a symbol may trade on (exchange_calendars names, ISO 10383 MICs): the trader's
#: quantramp.trader.session.SUPPORTED_CALENDARS (a unit test keeps the two equal); XNYS is every symbol's default
CALENDARS = (
    "XNYS", "XTSE", "XMEX", "XLON", "XDUB", "XETR", "XPAR", "XAMS", "XBRU", "XLIS", "XMIL", "XMAD", "XSWX", "XWBO",
    "XSTO", "XCSE", "XHEL", "XOSL", "XJSE", "XASX", "XNZE",
)
DEFAULT_CALENDAR = "XNYS"
CALENDARS_SYMBOLS_MESSAGE = "calendars names a symbol spec.symbols does not trade: list it in symbols, or remove it from calendars"
CALENDARS_XNYS_ONLY_MESSAGE = (
    "symbols on an exchange other than XNYS (spec.calendars) need your own bars (marketData.source file or postgres) and "
    "the simulated broker: the bundled sample and Interactive Brokers (SMART-routed US stocks) are XNYS only"
)


def _check_symbol(value: str) -> str:
    if not re.search(SYMBOL_RE, value) or len(value) > SYMBOL_MAX_LENGTH:
        raise ValueError(SYMBOL_MESSAGE)
    return value


#: one symbol (an item of spec.symbols)
Symbol = Annotated[str, AfterValidator(_check_symbol), Field(description="An exchange ticker, e.g. AAPL or BRK.B.", json_schema_extra={
    "maxLength": SYMBOL_MAX_LENGTH,  # checked by _check_symbol (one message for every malformed symbol)
    "x-kubernetes-validations": [{"rule": f"self.matches('{SYMBOL_RE}')", "message": SYMBOL_MESSAGE}]})]
#: the smallest capital a live stage may give a trader pod, USD
MIN_POD_CAPITAL_USD = 100.0
#: the longest strategy name: "<name>-challenger" must fit a 63-character label value
MAX_NAME_LENGTH = 63 - len("-challenger")

SPEC_RULES = [
    {
        # per symbol: a pod splits its capital equally over its symbols (trader/portfolio.py)
        "rule": "self.stages.all(s, s.capitalPercent == 0.0 || self.capitalUsd * s.capitalPercent / 100.0 >= "
                f"{MIN_POD_CAPITAL_USD} * double(has(self.symbols) ? size(self.symbols) : 1))",
        "message": f"every live stage must give the challenger at least {MIN_POD_CAPITAL_USD:g} USD per symbol "
                   "(capitalUsd x capitalPercent / 100 / the number of symbols): raise capitalUsd or the stage's "
                   "capitalPercent",
    },
    {
        # the bundled sample's symbols only when the bars are the sample's (absent marketData: the sample)
        "rule": "(has(self.marketData) && self.marketData.source != 'sample') || "
                "self.symbols.all(s, s in " + str(list(SUPPORTED_SYMBOLS)) + ")",
        "message": SAMPLE_SYMBOLS_MESSAGE,
    },
    {
        # live IB bars come over the strategy's IB connection (spec.broker.ib)
        "rule": "!has(self.marketData) || self.marketData.source != 'ib' || "
                "(has(self.broker) && has(self.broker.ib))",
        "message": "marketData.source ib reads the bars over the strategy's IB connection: set spec.broker "
                   "{type: ib, ib: {host: ...}}",
    },
    {
        "rule": "!has(self.calendars) || self.calendars.all(k, has(self.symbols) ? k in self.symbols : k == 'AAPL')",
        "message": CALENDARS_SYMBOLS_MESSAGE,
    },
    {
        # a non-XNYS symbol: neither the (XNYS) sample, nor IB's SMART US contracts, nor IB's bars
        "rule": "!has(self.calendars) || self.calendars.all(k, self.calendars[k] == 'XNYS') || "
                "((has(self.marketData) && self.marketData.source in ['file', 'postgres']) && "
                "(!has(self.broker) || self.broker.type == 'sim'))",
        "message": CALENDARS_XNYS_ONLY_MESSAGE,
    },
]


class Admission(_Model):
    """The admission gate: may the candidate start a ramp, on its training evidence?

    The operator reads the metrics ``quantramp-trader train`` logged to the version's MLflow run (a
    purged, embargoed walk-forward: ``wf_sharpe``, ``dsr``, ``pbo``, ``trials``) and checks them
    against the seed runbook's §5.2 "Validate" step: walk-forward Sharpe > 1.0, Deflated Sharpe
    "positive" (read as DSR >= 0.95, a probability), PBO < 0.3 (``quantramp.operator.admission``).
    A live ramp of a few weeks cannot show trading edge (reviews/statistical-judgement.md §3), so it
    is asked for before the ramp. ``enforce``: a version that fails waits in Pending, saying why;
    ``warn``: it ramps, and condition Admitted=False says why; ``off``: not checked.
    """

    mode: Literal["enforce", "warn", "off"] = Field(default="enforce", description="enforce, warn or off.")
    min_walk_forward_sharpe: float = Field(default=1.0, ge=-10, le=100, description="Annualised walk-forward Sharpe must be above this.")
    min_deflated_sharpe: float = Field(default=0.95, ge=0, le=1, description="Deflated Sharpe Ratio (a probability) must be at least this.")
    max_pbo: float = Field(default=0.3, gt=0, le=1, description="Probability of backtest overfitting must be below this.")


#: where the trader pods read their bars (env QR_BARS_SOURCE of the trader, quantramp.trader.barsource)
BARS_SOURCES = ("sample", "file", "postgres", "ib")
#: the bar lengths a strategy may trade, seconds (QR_BAR_SECONDS): whole divisors of the 6.5 h session, and daily
BAR_SECONDS = (60, 300, 900, 1800, 3600, 86400)
#: a libpq connection URI
DSN_RE = r"^postgres(ql)?://"
#: a password in a URI's userinfo (user:password@host)
URI_PASSWORD_RE = r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/@?#]*:[^/@?#]*@"
#: a password among a libpq URI's query parameters (?password=..., &sslpassword=...)
DSN_QUERY_PASSWORD_RE = r"[?&](ssl)?password="
#: a table of the market data database: a lower-case SQL identifier, optionally schema-qualified
TABLE_RE = r"^[a-z_][a-z0-9_]{0,62}([.][a-z_][a-z0-9_]{0,62})?$"
#: the only placeholder a file url may hold
URL_PLACEHOLDER_RE = r"^([^{}]|[{]symbol[}])*$"
#: a Secret name (DNS subdomain) and a Secret key
SECRET_NAME_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SECRET_KEY_RE = r"^[-._a-zA-Z0-9]+$"
#: the operator's per-strategy Redis Secrets (quantramp.operator.redisacl.secret_name): never a DSN's password
REDIS_SECRET_SUFFIX = "-trader-redis"

DSN_EXAMPLE = "postgresql://quantramp@db.trading:5432/market"
DSN_URI_MESSAGE = f"dsn must be a libpq URI starting postgresql:// (or postgres://), e.g. {DSN_EXAMPLE}"
DSN_PASSWORD_MESSAGE = ("dsn must not carry a password (user:password@ or ?password=): put the password in a Secret "
                        "and name it in passwordSecretKeyRef")
TABLE_MESSAGE = ("table must be a lower-case SQL identifier (letters, digits, _), optionally schema-qualified, "
                 "e.g. minute_bars or market.minute_bars")
URL_PASSWORD_MESSAGE = ("url must not carry a password (user:password@): a TradingStrategy is readable by whoever "
                        "can read the namespace's strategies")
URL_PLACEHOLDER_MESSAGE = "url may hold one placeholder, {symbol}, and no other braces, e.g. /data/bars/{symbol}.parquet"
SECRET_NAME_MESSAGE = "name must be a Secret name (lower-case DNS subdomain), e.g. market-db"
SECRET_KEY_MESSAGE = "key must be a Secret key (letters, digits, '-', '_', '.'), e.g. password"
REDIS_SECRET_MESSAGE = (f"passwordSecretKeyRef may not name a strategy's Redis Secret (<strategy>{REDIS_SECRET_SUFFIX}, "
                        "the operator's): create a Secret with the database password")
MARKET_DATA_RULES = [
    {"rule": "self.source != 'file' || has(self.url)",
     "message": "marketData.source file needs marketData.url: the path or URL of your CSV or Parquet bars, "
                "e.g. /data/bars/{symbol}.parquet or https://data.example.com/bars/{symbol}.csv"},
    {"rule": "self.source != 'postgres' || (has(self.postgres) && has(self.postgres.dsn))",
     "message": f"marketData.source postgres needs marketData.postgres.dsn, e.g. {DSN_EXAMPLE}"},
    {"rule": "!has(self.url) || self.source == 'file'",
     "message": "marketData.url is read only with source file: set source: file, or remove url"},
    {"rule": "!has(self.postgres) || self.source == 'postgres'",
     "message": "marketData.postgres is read only with source postgres: set source: postgres, or remove postgres"},
    {"rule": "self.source != 'sample' || !has(self.barSeconds) || self.barSeconds == 60",
     "message": "the bundled sample has minute bars only: barSeconds 60 (or use your own bars: source file or postgres)"},
    {"rule": "self.source != 'sample' || !has(self.follow) || !self.follow",
     "message": "marketData.follow needs bars that grow: source file or postgres (ib bars are always live), "
                "not the bundled sample"},
]


def _rules(*pairs: tuple[str, str]) -> dict[str, Any]:
    """``json_schema_extra`` with CEL ``self.matches`` rules: (regex, message) pairs; a regex starting with ``!``
    must not match. The regexes hold no quote or backslash (CEL string literals)."""
    out = []
    for regex, message in pairs:
        negate = regex.startswith("!")
        out.append({"rule": f"{'!' if negate else ''}self.matches('{regex.lstrip('!')}')", "message": message})
    return {"x-kubernetes-validations": out}


def _matching(*pairs: tuple[str, str], min_length: int, max_length: int) -> Any:
    """``str`` of ``min_length`` to ``max_length`` characters held to (regex, message) pairs as :func:`_rules` writes
    them, twice from the one list: the CEL rules for the API server and the same checks (``re.search``, as CEL's
    unanchored ``matches``) for the operator, so the two never disagree. Raises ValueError with the first failing
    pair's message. (The lengths sit here, not on the field, so that ``_matching(...) | None`` keeps pydantic's
    string-length message.)"""

    def check(value: str) -> str:
        for regex, message in pairs:
            if bool(re.search(regex.lstrip("!"), value)) == regex.startswith("!"):
                raise ValueError(message)
        return value

    return Annotated[str, Field(min_length=min_length, max_length=max_length, json_schema_extra=_rules(*pairs)),
                     AfterValidator(check)]


class SecretKeySelector(_Model):
    """A key of a Secret in the strategy's namespace (as a core ``SecretKeySelector``). The kubelet reads it into
    the trader container (``valueFrom.secretKeyRef``); the operator never reads it."""

    name: _matching((SECRET_NAME_RE, SECRET_NAME_MESSAGE), min_length=1, max_length=253) = Field(  # type: ignore[valid-type]
        description="Secret name, in the strategy's namespace, e.g. market-db.")
    key: _matching((SECRET_KEY_RE, SECRET_KEY_MESSAGE), min_length=1, max_length=253) = Field(  # type: ignore[valid-type]
        description="Key in the Secret, e.g. password.")


class PostgresBars(_Model):
    """Minute bars in a PostgreSQL table (``minute_bars``, TimescaleDB-compatible schema: one row per symbol and
    minute, open/high/low/close/volume). The trader connects with libpq (env ``QR_BARS_POSTGRES_DSN``,
    ``QR_BARS_TABLE``, and ``PGPASSWORD`` from the Secret), e.g.::

        postgres:
          dsn: postgresql://quantramp@db.trading:5432/market
          table: minute_bars
          passwordSecretKeyRef: {name: market-db, key: password}
    """

    dsn: str | None = Field(
        default=None, min_length=1, max_length=1024,
        description=f"libpq connection URI without a password, e.g. {DSN_EXAMPLE} (the trader pod's env "
                    "QR_BARS_POSTGRES_DSN); the password comes from passwordSecretKeyRef.",
        json_schema_extra={"x-kubernetes-validations": [
            {"rule": f"self.matches('{DSN_RE}')", "message": DSN_URI_MESSAGE},
            {"rule": f"!self.matches('{URI_PASSWORD_RE}') && !self.matches('{DSN_QUERY_PASSWORD_RE}')",
             "message": DSN_PASSWORD_MESSAGE},
        ]},
    )
    table: _matching((TABLE_RE, TABLE_MESSAGE), min_length=1, max_length=127) = Field(  # type: ignore[valid-type]
        default="minute_bars",
        description="Table of the bars: a lower-case SQL identifier, optionally schema-qualified, e.g. minute_bars or "
                    "market.minute_bars (env QR_BARS_TABLE).",
    )
    password_secret_key_ref: SecretKeySelector | None = Field(
        default=None,
        description="The database password: a key of a Secret in the strategy's namespace, e.g. {name: market-db, "
                    "key: password}, given to the trader pods as PGPASSWORD (valueFrom.secretKeyRef, never a plain value). "
                    "Unset: no password (e.g. trust or certificate authentication).",
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": f"!self.name.endsWith('{REDIS_SECRET_SUFFIX}')", "message": REDIS_SECRET_MESSAGE}]},
    )

    @field_validator("dsn")
    @classmethod
    def check_dsn(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.search(DSN_RE, value):
            raise ValueError(DSN_URI_MESSAGE)
        if re.search(URI_PASSWORD_RE, value) or re.search(DSN_QUERY_PASSWORD_RE, value):
            raise ValueError(DSN_PASSWORD_MESSAGE)
        return value

    @field_validator("password_secret_key_ref")
    @classmethod
    def check_secret(cls, value: SecretKeySelector | None) -> SecretKeySelector | None:
        if value is not None and value.name.endswith(REDIS_SECRET_SUFFIX):
            raise ValueError(REDIS_SECRET_MESSAGE)
        return value


class MarketData(_Model):
    """Where the trader pods read their minute bars (OHLCV). ``sample`` (default): the real AAPL 1-minute bars
    bundled with the trader, replayed in a loop (AAPL only). ``file``: CSV or Parquet bars at ``url``.
    ``postgres``: a table of a PostgreSQL (TimescaleDB) database, ``postgres``. The trader refuses to start
    when its source has no bars for the strategy's symbol. Examples::

        marketData: {source: file, url: "/data/bars/{symbol}.parquet"}

        marketData:
          source: postgres
          postgres:
            dsn: postgresql://quantramp@db.trading:5432/market
            passwordSecretKeyRef: {name: market-db, key: password}
    """

    source: Literal["sample", "file", "postgres", "ib"] = Field(
        default="sample",
        description="sample (the bundled AAPL bars), file (url), postgres (postgres.dsn) or ib (live Interactive "
                    "Brokers bars over spec.broker.ib's connection, always followed); the trader pod's env "
                    "QR_BARS_SOURCE.",
    )
    follow: bool = Field(
        default=False,
        description="file or postgres: trade the bars as they are added (live: the pods warm up on the bars there, "
                    "then poll for new ones and trade each once; a bar later than the max price age after its "
                    "close is never traded) instead of replaying them in a loop (env QR_BARS_FOLLOW).",
    )
    url: _matching((URL_PLACEHOLDER_RE, URL_PLACEHOLDER_MESSAGE),  # type: ignore[valid-type]
                   ("!" + URI_PASSWORD_RE, URL_PASSWORD_MESSAGE), min_length=1, max_length=2048) | None = Field(
        default=None,
        description="source file: path or URL of CSV or Parquet OHLCV bars; {symbol} stands for the symbol, e.g. "
                    "/data/bars/{symbol}.parquet or https://data.example.com/bars/{symbol}.csv (env QR_BARS_URL).",
    )
    postgres: PostgresBars | None = Field(default=None, description="source postgres: the database and table of the bars.")
    bar_seconds: Literal[BAR_SECONDS] = Field(  # type: ignore[valid-type]
        default=60,
        description="Length of one bar in seconds: 60 (minute bars, the default), 300, 900, 1800, 3600, or 86400 (daily "
                    "bars, one per exchange session, each stamped at its session's open). The trader refuses bars of "
                    "another length. The bundled sample has minute bars only (env QR_BAR_SECONDS).",
    )

    @model_validator(mode="after")
    def check_source(self) -> "MarketData":
        broken = [
            self.source == "file" and self.url is None,
            self.source == "postgres" and (self.postgres is None or self.postgres.dsn is None),
            self.url is not None and self.source != "file",
            self.postgres is not None and self.source != "postgres",
            self.source == "sample" and self.bar_seconds != 60,
            self.source == "sample" and self.follow,
        ]
        messages = [r["message"] for r, bad in zip(MARKET_DATA_RULES, broken) if bad]
        if messages:
            raise ValueError("; ".join(messages))
        return self


#: a TWS / IB Gateway host: a DNS name or an IPv4 address
IB_HOST_RE = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
IB_HOST_MESSAGE = "host must be a DNS name or an IPv4 address, e.g. ib-gateway.trading.svc or 10.0.0.12"
BROKER_RULES = [
    {"rule": "self.type != 'ib' || has(self.ib)",
     "message": "broker.type ib needs broker.ib: at least the TWS or IB Gateway host, e.g. {host: ib-gateway.trading.svc}"},
    {"rule": "!has(self.ib) || self.type == 'ib'",
     "message": "broker.ib is read only with type ib: set type: ib, or remove ib"},
    # (two fields of distinct schema types: CEL compares them field by field)
    {"rule": "!has(self.ib) || self.ib.championAccountSecretKeyRef.name != self.ib.challengerAccountSecretKeyRef.name || "
             "self.ib.championAccountSecretKeyRef.key != self.ib.challengerAccountSecretKeyRef.key",
     "message": "the champion and the challenger trade different IB accounts (each adopts its account's positions): "
                "name two Secret keys in championAccountSecretKeyRef and challengerAccountSecretKeyRef"},
]


class IBConnection(_Model):
    """Where the trader pods reach Interactive Brokers (TWS or IB Gateway managing both roles' accounts, its API
    socket) and which account each role trades. The pods connect with ``ib_async`` (env ``IB_HOST``, ``IB_PORT``,
    ``IB_APP``, ``IB_MODE``, ``IB_CLIENT_ID`` and ``IB_ACCOUNT`` from the Secret), e.g.::

        broker:
          type: ib
          ib:
            host: ib-gateway.trading.svc
            app: gateway
            clientId: 10
            championAccountSecretKeyRef: {name: ib-accounts, key: champion}
            challengerAccountSecretKeyRef: {name: ib-accounts, key: challenger}
    """

    host: _matching((IB_HOST_RE, IB_HOST_MESSAGE), min_length=1, max_length=253) = Field(  # type: ignore[valid-type]
        description="TWS or IB Gateway host, e.g. ib-gateway.trading.svc (env IB_HOST).")
    port: int | None = Field(
        default=None, ge=1, le=65535,
        description="API port; unset: the application's default for app and mode (TWS paper 7497, live 7496; "
                    "IB Gateway paper 4002, live 4001) (env IB_PORT).")
    app: Literal["tws", "gateway"] = Field(default="tws", description="tws (Trader Workstation) or gateway (IB Gateway).")
    mode: Literal["paper", "live"] = Field(
        default="paper",
        description="paper (a paper-trading account) or live (real money). With live, the paper stages (shadow, 0 % "
                    "capital) keep the simulated broker: only stages with capital reach the live account.")
    client_id: int = Field(
        default=1, ge=0, le=2_000_000_000,
        description="API client id of the champion's pod; the challenger's is clientId + 1. Orders belong to their "
                    "client: each pod reconciles and cancels only its own (env IB_CLIENT_ID).")
    champion_account_secret_key_ref: SecretKeySelector = Field(
        description="The champion's IB account code (e.g. DU1234567), as a key of a Secret in the strategy's "
                    "namespace, given to its pod as IB_ACCOUNT (valueFrom.secretKeyRef). Each role trades its own "
                    "account: a pod adopts IB's positions of its account at start-up.",
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": f"!self.name.endsWith('{REDIS_SECRET_SUFFIX}')", "message": REDIS_SECRET_MESSAGE}]},
    )
    challenger_account_secret_key_ref: SecretKeySelector = Field(
        description="The challenger's IB account code, as championAccountSecretKeyRef (another account: the two "
                    "books never mix).",
        json_schema_extra={"x-kubernetes-validations": [{
            "rule": f"!self.name.endsWith('{REDIS_SECRET_SUFFIX}')", "message": REDIS_SECRET_MESSAGE}]},
    )

    @field_validator("champion_account_secret_key_ref", "challenger_account_secret_key_ref")
    @classmethod
    def check_secret(cls, value: SecretKeySelector) -> SecretKeySelector:
        if value.name.endswith(REDIS_SECRET_SUFFIX):
            raise ValueError(REDIS_SECRET_MESSAGE)
        return value


class Broker(_Model):
    """Where the trader pods send their orders. ``sim`` (default): the simulated broker (fills modelled from
    the bars: slippage, partial fills, IBKR fees). ``ib``: Interactive Brokers through TWS or IB Gateway
    (``ib``): orders sent at their decision, fills and commissions from IB's reports, IB's positions adopted
    at start-up, working orders cancelled on a kill or a Redis outage (trader env ``QR_BROKER``)."""

    type: Literal["sim", "ib"] = Field(default="sim", description="sim (simulated) or ib (Interactive Brokers).")
    ib: IBConnection | None = Field(default=None, description="type ib: the TWS or IB Gateway to connect to.")

    @model_validator(mode="after")
    def check_type(self) -> "Broker":
        broken = [self.type == "ib" and self.ib is None, self.ib is not None and self.type != "ib",
                  self.ib is not None and self.ib.champion_account_secret_key_ref == self.ib.challenger_account_secret_key_ref]
        messages = [r["message"] for r, bad in zip(BROKER_RULES, broken) if bad]
        if messages:
            raise ValueError("; ".join(messages))
        return self


class TradingStrategySpec(_Model):
    """``spec`` of a TradingStrategy."""

    model: ModelRef
    symbols: list[Symbol] = Field(
        default_factory=lambda: ["AAPL"],
        min_length=1,
        description=f"Symbols traded, exchange tickers such as AAPL or BRK.B, 1 to {MAX_SYMBOLS}. Each role's one "
                    "trader pod trades them all under one pre-trade governor: the capital of a stage is split equally "
                    "over the symbols, risk.maxPositionUsd caps each symbol, and risk.maxDailyLossUsd is the combined "
                    "loss cap across them (seed: MSFT and AAPL at $10 each, $30 combined). The bundled sample "
                    "(marketData.source sample) has AAPL only; with your own bars (file, postgres) any symbol they "
                    "hold, at the same bar length (marketData.barSeconds).",
        json_schema_extra={"maxItems": MAX_SYMBOLS, "x-kubernetes-list-type": "set",
                           "x-kubernetes-validations": SYMBOLS_RULES},
    )
    calendars: dict[str, Literal[CALENDARS]] = Field(  # type: ignore[valid-type]
        default_factory=dict,
        description="The exchange calendar of each symbol not traded on the New York Stock Exchange: symbol -> "
                    "exchange_calendars name (ISO 10383 MIC), e.g. {CSPX: XLON}; every other symbol trades XNYS "
                    "sessions. A symbol's sessions, holidays, early closes and time zone drive its end-of-day flatten "
                    "(5 minutes before its close), its trading date and its daily bars (stamped at its session's open). "
                    "Prices are USD: quantramp converts no currency, so trade a USD line (e.g. CSPX on XLON) or convert "
                    "the bars first. Needs your own bars (file, postgres) and the simulated broker (env QR_CALENDARS).",
        json_schema_extra={"maxProperties": MAX_SYMBOLS},
    )
    market_data: MarketData = Field(
        default_factory=MarketData,
        description="Where the trader pods read their bars: the bundled AAPL sample (default), a file or a PostgreSQL "
                    "table, e.g. {source: file, url: /data/bars/{symbol}.parquet}.",
        json_schema_extra={"x-kubernetes-validations": MARKET_DATA_RULES},
    )
    broker: Broker = Field(
        default_factory=Broker,
        description="Where the trader pods send their orders: the simulated broker (default) or Interactive Brokers "
                    "(type ib, with ib: the gateway and each role's account).",
        json_schema_extra={"x-kubernetes-validations": BROKER_RULES},
    )
    capital_usd: float = Field(gt=0, le=1e12, description="Capital of the strategy in USD.")
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
        if stages[-1].capital_percent != 100:
            raise ValueError(STAGES_RULES[2]["message"])
        return stages
    analysis: Analysis = Field(default_factory=Analysis)
    risk: RiskLimits = Field(default_factory=RiskLimits)
    trader: TraderSpec = Field(default_factory=TraderSpec)
    kill_switch: KillSwitch = Field(
        default_factory=KillSwitch, json_schema_extra={"x-kubernetes-validations": KILL_SWITCH_RULES})
    stop_loss: StopLoss = Field(default_factory=StopLoss)
    admission: Admission = Field(default_factory=Admission)

    @model_validator(mode="after")
    def check_pod_capital(self) -> "TradingStrategySpec":
        n = max(1, len(self.symbols))
        if any(s.capital_percent > 0 and self.capital_usd * s.capital_percent / 100 < MIN_POD_CAPITAL_USD * n
               for s in self.stages):
            raise ValueError(SPEC_RULES[0]["message"])
        return self

    @field_validator("symbols")
    @classmethod
    def check_symbols(cls, symbols: list[str]) -> list[str]:
        if len(symbols) > MAX_SYMBOLS:
            raise ValueError(SYMBOLS_MAX_MESSAGE)
        if len(set(symbols)) != len(symbols):
            raise ValueError(SYMBOLS_UNIQUE_MESSAGE)
        return symbols

    @model_validator(mode="after")
    def check_ib_bars(self) -> "TradingStrategySpec":
        if self.market_data.source == "ib" and self.broker.ib is None:
            raise ValueError(SPEC_RULES[2]["message"])
        return self

    @model_validator(mode="after")
    def check_calendars(self) -> "TradingStrategySpec":
        if any(k not in self.symbols for k in self.calendars):
            raise ValueError(CALENDARS_SYMBOLS_MESSAGE)
        foreign = any(c != DEFAULT_CALENDAR for c in self.calendars.values())
        if foreign and (self.market_data.source not in ("file", "postgres") or self.broker.type != "sim"):
            raise ValueError(CALENDARS_XNYS_ONLY_MESSAGE)
        return self

    @model_validator(mode="after")
    def check_sample_symbols(self) -> "TradingStrategySpec":
        if self.market_data.source == "sample" and any(s not in SUPPORTED_SYMBOLS for s in self.symbols):
            raise ValueError(SAMPLE_SYMBOLS_MESSAGE)
        return self


Phase = Literal["Pending", "Progressing", "Paused", "Promoted", "RolledBack", "Aborted", "Failed"]
MeasurementResult = Literal["Successful", "Failed", "Inconclusive", "Error", "InsufficientData", "Continue", "Skipped"]


class Measurement(_Model):
    """One criterion of one analysis round: value measured, threshold, result.

    ``InsufficientData``: too small a sample to judge (holds, never fails, never promotes);
    ``Continue``: an anytime-valid criterion not decided yet (holds);
    ``Skipped``: the criterion does not apply (e.g. no P&L band in shadow, no champion).
    """

    value: float | None = None
    threshold: float | None = None
    result: MeasurementResult
    message: str = ""
    time: datetime | None = None


class AnalysisResult(_Model):
    """The most recent analysis round of the current stage; ``verdict`` is the worst criterion's."""

    time: datetime
    verdict: MeasurementResult
    measurements: dict[str, Measurement] = Field(default_factory=dict)
    message: str = ""


class SequentialStatus(_Model):
    """An anytime-valid criterion's sequence in the current stage (units of its statistic: bps per
    fill for slippageRatio (smaller is better), ratio per order for fillRatio, bps of capital per
    block for pnlDeviation).

    ``counter`` keeps the trader's counters as [seen, carry] x six families
    (:class:`~quantramp.operator.judgement.Counter`), so a pod restart that resets them loses nothing.
    """

    observations: int = Field(default=0, description="Observations in the stage.")
    mean: float | None = None
    lower: float | None = Field(default=None, description="Lower confidence bound (alphaPromote), pass-side units.")
    upper: float | None = Field(default=None, description="Upper confidence bound (rollback share of alphaRollback), pass-side units.")
    sigma: float | None = Field(default=None, description="Long-run standard deviation used (autocorrelation corrected).")
    rho1: float | None = Field(default=None, description="Lag-1 autocorrelation of the statistic.")
    p_value: float = Field(default=1.0, description="Always-valid p-value against a bad challenger (running minimum).")
    decision: str = "INSUFFICIENT_DATA"
    decided_at: datetime | None = None
    t_star: float | None = Field(default=None, description="Observations at which the sequence is tightest (fixed once).")
    alpha_rollback: float | None = Field(default=None, description="This criterion's share of the ramp's rollback error in this stage.")
    counter: list[list[float]] = Field(default_factory=list)


class CriterionStatus(_Model):
    """Argo's per-metric counters for one criterion in the current stage, and its last measurements."""

    count: int = 0
    successful: int = 0
    failed: int = 0
    inconclusive: int = 0
    error: int = 0
    consecutive_error: int = 0
    insufficient_data: int = 0
    measurements: list[Measurement] = Field(default_factory=list, description="The last 10 measurements, oldest first.")
    sequential: SequentialStatus | None = Field(default=None, description="The anytime-valid sequence (judgement.method anytimeValid).")


class Condition(_Model):
    """A Kubernetes status condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None


class Ramp(_Model):
    """What a ramp judges, pinned when it starts: a later spec edit is a new ramp, never a reinterpretation."""

    id: str = Field(description="Ramp id, r<number>; effects and history records carry it.")
    number: int = Field(ge=1)
    model: str
    candidate_version: str
    champion_version: str | None = Field(default=None, description="The MLflow champion alias when the ramp started.")
    stages: list[Stage]
    stages_hash: str
    started_at: datetime


class RoleAllocation(_Model):
    """What one trader Deployment runs, as decided by the engine (not re-derived at apply time)."""

    version: str | None = None
    capital_percent: float = 0.0
    paper: bool = False
    replicas: int = 0
    stage: str = ""


class Allocation(_Model):
    """The decided capital split; the Deployments converge to it (capital in USD from spec.capitalUsd)."""

    champion: RoleAllocation = Field(default_factory=RoleAllocation)
    challenger: RoleAllocation = Field(default_factory=RoleAllocation)


class Pause(_Model):
    """Why the ramp waits for a human (``kubectl quantramp promote`` or ``resume``)."""

    reason: str
    message: str = ""
    since: datetime


class ReducedSizing(_Model):
    """The champion trades at most ``percent`` % of the strategy capital until a human clears it
    (``kubectl quantramp clear``): set by an automated rollback (seed 003 §3.1 step 5 and §2.1,
    "resume with reduced position sizes (10% normal)")."""

    percent: float
    since: datetime
    reason: str = ""


class KillAck(_Model):
    """One trader role's acknowledgement of the last kill or release (from its Redis ack record)."""

    acked_at: datetime
    latency_seconds: float | None = Field(default=None, description="Broadcast to this acknowledgement, seconds.")


class KillState(_Model):
    """The kill switch as the operator applied it: what was broadcast, and who acknowledged it."""

    engaged: bool
    reason: str = ""
    by: str = ""
    trigger: str = "Manual"
    flatten: bool = True
    since: datetime
    command_id: str = Field(description="Id of the kill (or release) message on the strategy's Redis kill channel.")
    sent_at: datetime | None = Field(default=None, description="When it was broadcast (None: not yet).")
    acks: dict[str, KillAck] = Field(default_factory=dict, description="Role -> acknowledgement of this command.")
    latency_seconds: float | None = Field(default=None, description="Broadcast to the last acknowledgement, seconds.")
    observed: str = Field(default="", description="Fingerprint of the spec.killSwitch last taken (a new one is a human's request).")
    trigger_key: str = Field(default="", description="The automatic trigger that engaged it, e.g. DailyStopLoss:2026-07-29.")
    released_triggers: list[str] = Field(
        default_factory=list, description="Automatic triggers a human released: they do not engage again (the last 20).")
    incident: str = Field(default="", description="Transition id of the engagement (its JIRA ticket's key).")


class KillRecord(_Model):
    """One engagement or release of the kill switch (status.killHistory keeps the last 20)."""

    time: datetime
    action: Literal["Engaged", "Released"]
    by: str = ""
    reason: str = ""
    trigger: str = "Manual"
    command_id: str = ""
    latency_seconds: float | None = None


class PnlDay(_Model):
    """The strategy's live P&L of one finished trading day (USD), for the monthly stop-loss."""

    date: str
    pnl_usd: float
    at: datetime | None = Field(default=None, description="When this figure was taken.")


class HistoryRecord(_Model):
    """One transition of the ramp (status.history keeps the last 50)."""

    seq: int
    time: datetime
    event: str
    from_phase: str = ""
    to_phase: str = ""
    stage: str = ""
    by: str = "operator"
    reason: str = ""


class EffectRecord(_Model):
    """An effect of a transition in the outbox: a value (what was decided), run at most once to completion.

    ``must`` effects (alias moves) are retried until done and superseded only by a later effect on the
    same target; best-effort ones (tags, events) give up after a few attempts and say so.
    """

    id: str = Field(description="Idempotency key: <ramp id>.<transition seq>.<index>.")
    kind: Literal["StopRole", "BroadcastKill", "SetAlias", "RemoveAlias", "TagVersion", "RecordEvent", "Notify", "OpenTicket",
                  "CommentTicket"]
    must: bool = True
    model: str = ""
    alias: str = ""
    version: str = ""
    tags: dict[str, str] = Field(default_factory=dict)
    type: str = ""
    reason: str = ""
    message: str = ""
    role: str = Field(default="", description="StopRole: the trader role retired (its pods flatten before they exit).")
    stage: str = Field(default="", description="StopRole: the stage label of the retired pods' book.")
    engaged: bool | None = Field(default=None, description="BroadcastKill: kill (true) or release (false).")
    flatten: bool = False
    ticket: str = Field(default="", description="OpenTicket/CommentTicket: the dedup label; OpenTicket done: the issue key.")
    state: Literal["Pending", "Done", "Failed", "Superseded"] = "Pending"
    attempts: int = 0
    last_error: str = ""
    result: str = Field(default="", description="What a finished effect found or did (e.g. the acknowledgements, the ticket key).")


class TradingStrategyStatus(_Model):
    """``status`` of a TradingStrategy, written only by the operator (optimistic concurrency on resourceVersion)."""

    phase: Phase = "Pending"
    stage: str | None = None
    stage_index: int | None = None
    capital_percent: float | None = None
    champion_version: str | None = None
    challenger_version: str | None = None
    stage_start_time: datetime | None = None
    ramp: Ramp | None = None
    seq: int = Field(default=0, description="Transition sequence number; increases with every transition.")
    allocation: Allocation = Field(default_factory=Allocation)
    criteria: dict[str, CriterionStatus] = Field(default_factory=dict, description="Per-criterion counters of the current stage.")
    last_analysis: AnalysisResult | None = None
    error_since: datetime | None = Field(default=None, description="Start of the current run of measurement errors.")
    pause: Pause | None = None
    reduced_sizing: ReducedSizing | None = None
    kill_switch: KillState | None = None
    kill_history: list[KillRecord] = Field(default_factory=list)
    pnl_day: PnlDay | None = Field(default=None, description="Today's live P&L so far (the day in market time).")
    pnl_days: list[PnlDay] = Field(default_factory=list, description="Finished trading days' live P&L, the last 31.")
    incident: str = Field(default="", description="Transition id of the latest rollback or kill (its JIRA ticket).")
    tickets: dict[str, str] = Field(default_factory=dict, description="Transition id -> JIRA issue key of the recent tickets (last 10).")
    handled_action: str | None = Field(default=None, description="Id of the last manual action taken.")
    history: list[HistoryRecord] = Field(default_factory=list)
    effects: list[EffectRecord] = Field(default_factory=list, description="Outbox of the recent transitions' effects.")
    applied_hash: str | None = Field(default=None, description="Hash of the Deployments last applied.")
    message: str = ""
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None
