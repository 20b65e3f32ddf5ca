"""The evidence contract between the trader pod, the operator and the alert rules: metric names,
labels and units, in one place (no heavy imports: the operator reads it too).

- the trader exports these series (:mod:`.metrics`), each with the labels :data:`BASE_LABELS`;
  Prometheus adds ``namespace`` when it scrapes the pod (the PodMonitor, or the dev pod
  runner's file_sd targets);
- the operator queries them grouped by :data:`EVIDENCE_LABELS` (:mod:`quantramp.operator.evidence`);
- the alert rules (``charts/quantramp/files/alerts.yaml``) use only these names (and the operator's own
  series, :mod:`quantramp.operator.metrics`) and carry
  ``severity`` (``info`` | ``warning`` | ``critical``) and the series' labels; critical alerts of the role
  under judgement fail its stage.

A test (tests/unit/config/test_contract.py) fails when the alert rules or the operator's
queries name a series that is not here (or, for the rules, not among the operator's series).

Units: ``_usd`` US dollars, ``_ratio`` 0-1, ``_bps`` basis points, ``_seconds``, ``_total`` counters.
"""

from __future__ import annotations

#: labels on every trader series: the strategy, the role (champion | challenger) and the ramp stage
BASE_LABELS = ("strategy", "role", "stage")
#: labels the operator groups its evidence by (namespace is added by the scrape)
EVIDENCE_LABELS = ("namespace",) + BASE_LABELS
ROLES = ("champion", "challenger")

# -- evidence of one pod since it started (one stage) -------------------------------------------
PNL = "quantramp_pnl_usd"  #: live (or paper) P&L net of fees, USD
SIMULATED_PNL = "quantramp_simulated_pnl_usd"  #: what the backtest fills would have made on the same bars, USD
DRAWDOWN = "quantramp_drawdown_ratio"  #: current drawdown from the equity peak, 0-1
MAX_DRAWDOWN = "quantramp_max_drawdown_ratio"  #: the largest drawdown since the pod started, 0-1
DAY_PNL = "quantramp_day_pnl_usd"  #: P&L of the current trading day, USD
HOUR_PNL = "quantramp_hour_pnl_usd"  #: P&L of the trailing market hour, USD
TRADING_DATE = "quantramp_trading_date"  #: the trading day (market time) of the last bar, as the number YYYYMMDD
FEES = "quantramp_fees_usd"  #: commissions and fees paid, USD
FEE_RATIO = "quantramp_fee_gross_pnl_ratio"  #: fees / |gross P&L|
SLIPPAGE_REALIZED = "quantramp_slippage_realized_bps"  #: mean realised slippage per fill, bps
SLIPPAGE_MODELED = "quantramp_slippage_modeled_bps"  #: mean modelled slippage per fill, bps
FILL_RATIO = "quantramp_fill_ratio"  #: filled / sent quantity, 0-1
PRECISION = "quantramp_model_precision_ratio"  #: directional precision of the model's calls, 0-1
TRADES = "quantramp_trades_total"  #: filled orders
BARS = "quantramp_bars_total"  #: bars processed
CAPITAL = "quantramp_capital_usd"  #: capital allocated to the pod, USD
POSITION_NOTIONAL = "quantramp_position_notional_usd"  #: |position| x price, USD (label symbol)
#: a several-symbol role (trader/portfolio.py): the series above are the role's (summed over its symbols,
#: what the operator judges); these two break it down by the label ``symbol``
SYMBOL_PNL = "quantramp_symbol_pnl_usd"  #: live P&L of one symbol net of fees, USD (label symbol)
SYMBOL_TRADES = "quantramp_symbol_trades_total"  #: filled orders of one symbol (label symbol)
ORDERS = "quantramp_orders_total"  #: orders by status (label status)
DECISION_LATENCY = "quantramp_decision_latency_seconds"  #: bar-to-decision wall time

# -- per-observation evidence streams (trader/evidence.py; the operator's anytime-valid judgement) ------
# counters labelled additionally ``criterion`` and ``scope`` (the book scope: one ramp and stage)
EVIDENCE_OBSERVATIONS = "quantramp_evidence_observations_total"  #: observations of the criterion's statistic
EVIDENCE_SUM_POSITIVE = "quantramp_evidence_sum_positive_total"  #: sum of max(x, 0)
EVIDENCE_SUM_NEGATIVE = "quantramp_evidence_sum_negative_total"  #: sum of max(-x, 0)
EVIDENCE_SUM_SQUARES = "quantramp_evidence_sum_squares_total"  #: sum of x^2
EVIDENCE_LAG1_POSITIVE = "quantramp_evidence_lag1_product_positive_total"  #: positive part of sum x_i x_(i-1)
EVIDENCE_LAG1_NEGATIVE = "quantramp_evidence_lag1_product_negative_total"  #: negative part of sum x_i x_(i-1)
#: Sums field -> counter family
EVIDENCE_FAMILIES = {
    "n": EVIDENCE_OBSERVATIONS, "sum_pos": EVIDENCE_SUM_POSITIVE, "sum_neg": EVIDENCE_SUM_NEGATIVE,
    "sum_sq": EVIDENCE_SUM_SQUARES, "lag_pos": EVIDENCE_LAG1_POSITIVE, "lag_neg": EVIDENCE_LAG1_NEGATIVE,
}
EVIDENCE_STREAM_LABELS = ("criterion", "scope")

# -- pod runtime ---------------------------------------------------------------------------------
KILL_LATCH = "quantramp_kill_latch"
REDIS_UP = "quantramp_redis_up"
PAUSED = "quantramp_paused"
KILL_ACK = "quantramp_kill_ack_seconds"
FEED_LATENCY = "quantramp_feed_latency_seconds"
ORDERS_BLOCKED = "quantramp_orders_blocked_total"

# -- pre-trade governor --------------------------------------------------------------------------
GOVERNOR_DENIALS = "quantramp_governor_denials_total"
GOVERNOR_HALTS = "quantramp_governor_halts_total"  #: entries into HALTED, label reason (the cause)
HARD_LIMIT_BREACHES = "quantramp_hard_limit_breaches_total"
TRADING_STATE = "quantramp_trading_state"
DAILY_TURNOVER = "quantramp_daily_turnover_usd"
BARS_REFUSED = "quantramp_bars_refused_total"  #: bars refused by the bar check, label reason

#: every series name of the contract
NAMES = frozenset(v for k, v in dict(globals()).items() if k.isupper() and isinstance(v, str) and v.startswith("quantramp_"))
