"""Admission gate: may a model version start a ramp, on its training evidence?

Pure (no I/O): :func:`check` judges the metrics of the MLflow run that produced the version
(:meth:`quantramp.operator.registry.Registry.version_run_metrics`), which
``quantramp-trader train`` logs from a purged, embargoed walk-forward
(:func:`quantramp.trader.train.walk_forward_report`):

- ``wf_sharpe``: annualised out-of-sample Sharpe ratio of the strategy, net of costs;
- ``dsr``: Deflated Sharpe Ratio (Bailey & López de Prado 2014), a probability: that the
  true Sharpe beats the expected best of ``trials`` skill-less trials;
- ``pbo``: Probability of Backtest Overfitting by CSCV (Bailey, Borwein, López de Prado &
  Zhu 2017) over the declared trial grid;
- ``trials``: N of the DSR (reported, not gated).

Thresholds are the seed runbook's §5.2 "Validate" step: walk-forward Sharpe > 1.0, "Deflated
Sharpe positive", PBO < 0.3. "Deflated Sharpe positive" is read in the probability form of the
DSR as DSR >= 0.95: the observed Sharpe exceeds the expected maximum of N null trials with 95%
confidence (a DSR above 0.5 would only say the point estimate does). The live ramp cannot
answer "is the edge real" in its few weeks (reviews/statistical-judgement.md §3), so this is
asked before it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: the run metrics the gate reads
WF_SHARPE, DSR, PBO, TRIALS = "wf_sharpe", "dsr", "pbo", "trials"
GATED = (WF_SHARPE, DSR, PBO)
HOW_TO_PRODUCE = (
    "train and register it with `quantramp-trader train --model-name NAME --kind KIND`, "
    "which logs the walk-forward metrics wf_sharpe, dsr, pbo and trials to the version's run"
)


@dataclass(frozen=True)
class Gate:
    """Thresholds of the admission gate.

    min_walk_forward_sharpe: the annualised walk-forward Sharpe must be above it (strictly).
    min_deflated_sharpe: the DSR, a probability, must be at least this (0.95: the Sharpe beats
    the best of N null trials at 95%; seed runbook's "Deflated Sharpe positive").
    max_pbo: the PBO must be below it (strictly). required: when False the gate only
    advises: the verdict is admitted, with the failures still listed in its reasons.
    """

    min_walk_forward_sharpe: float = 1.0
    min_deflated_sharpe: float = 0.95
    max_pbo: float = 0.3
    required: bool = True

    def __post_init__(self) -> None:
        if not math.isfinite(self.min_walk_forward_sharpe):
            raise ValueError(
                f"min_walk_forward_sharpe must be a finite annualised Sharpe, got {self.min_walk_forward_sharpe!r}"
            )
        if not 0.0 <= self.min_deflated_sharpe <= 1.0:
            raise ValueError(
                f"min_deflated_sharpe is a probability in [0, 1] (e.g. 0.95), got {self.min_deflated_sharpe!r}"
            )
        if not 0.0 < self.max_pbo <= 1.0:
            raise ValueError(f"max_pbo is a probability in (0, 1] (e.g. 0.3), got {self.max_pbo!r}")


@dataclass(frozen=True)
class Verdict:
    """admitted: the version may ramp. reasons: one sentence per failed or missing figure, with
    its value and threshold (empty when everything passed). figures: the metrics read
    (wf_sharpe, dsr, pbo, trials; those present, as floats)."""

    admitted: bool
    reasons: list[str] = field(default_factory=list)
    figures: dict[str, float] = field(default_factory=dict)


def _number(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def check(metrics: dict[str, float] | None, gate: Gate = Gate()) -> Verdict:
    """Judge a version's run metrics against ``gate``.

    Missing evidence (``None``, ``{}`` or none of wf_sharpe / dsr / pbo) is not admitted, and
    the reason says how to produce it; so is a missing, non-numeric, NaN or infinite figure.
    """
    metrics = metrics or {}
    figures = {k: v for k in (*GATED, TRIALS) if k in metrics and (v := _number(metrics[k])) is not None}
    reasons: list[str] = []
    if not any(k in metrics for k in GATED):
        reasons.append(f"the version has no walk-forward evidence (no {', '.join(GATED)} metrics on its run): "
                       + HOW_TO_PRODUCE)
        return Verdict(admitted=not gate.required, reasons=reasons, figures=figures)

    trials = figures.get(TRIALS)
    of_n = f" of {trials:.0f}" if trials is not None and math.isfinite(trials) else ""
    for key in GATED:
        if key not in metrics:
            reasons.append(f"{key} is missing from the version's run: " + HOW_TO_PRODUCE)
            continue
        value = figures.get(key)
        if value is None or not math.isfinite(value):
            reasons.append(f"{key} is {metrics[key]!r}, not a finite number: the walk-forward evidence is unusable")
            continue
        if key == WF_SHARPE and not value > gate.min_walk_forward_sharpe:
            reasons.append(
                f"walk-forward Sharpe (annualised, out of sample, net of costs) {value:.3f} "
                f"is not above {gate.min_walk_forward_sharpe:g}"
            )
        elif key == DSR and not value >= gate.min_deflated_sharpe:
            reasons.append(
                f"Deflated Sharpe {value:.3f} is below {gate.min_deflated_sharpe:g} (the probability that the "
                f"Sharpe beats the best{of_n} trials without skill)"
            )
        elif key == PBO and not value < gate.max_pbo:
            reasons.append(f"probability of backtest overfitting {value:.3f} is not below {gate.max_pbo:g}")
    return Verdict(admitted=not reasons or not gate.required, reasons=reasons, figures=figures)
