"""Per-observation evidence streams for the operator's anytime-valid judgement (issue 14).

Each runbook criterion is linearised into a statistic ``x`` per observation, whose mean the
operator tests with a confidence sequence (:mod:`quantramp.operator.judgement`). The trader
keeps, per criterion, the sufficient statistics of its stream (:class:`Sums`) and exports them
as monotone counters labelled ``criterion`` and ``scope`` (the book scope: one ramp and stage),
so the operator reads every strategy's evidence with one query per counter family.

Statistics (units in brackets; thresholds from the seed production ops runbook §4, passed by the
operator as environment variables):

- ``slippageRatio`` per live fill: ``x = realised_bps - k * modelled_bps`` [bps], k =
  ``QR_EVIDENCE_SLIPPAGE_RATIO`` (1.5). Smaller is better; the runbook's "realised <= 1.5x
  modelled" is ``E[x] <= 0``.
- ``fillRatio`` per order sent: ``x = |filled| / |ordered| - f`` [ratio], f =
  ``QR_EVIDENCE_FILL_RATIO`` (0.95): "fill ratio >= 95%" is ``E[x] >= 0``.
- ``precisionRatio`` per bar on which both the model and the reference (the champion's model, run
  on the same feature row: ``QR_REFERENCE_MODEL_URI``) made a directional call and the next close
  moved: ``x = 1[model right] - r * 1[reference right]`` [0/1], r = ``QR_EVIDENCE_PRECISION_RATIO``
  (0.9): "precision >= 90% of the champion's" on the calls both made, paired (the two models'
  hits are strongly correlated, so the difference is far less noisy than either: review F4).
- ``pnlDeviation`` per block of ``QR_EVIDENCE_BLOCK_BARS`` bars (30: half an hour of minute
  bars) in which either book moved: ``x = 1e4 * (dlive - dsim + b * |dsim|) / capital`` [bps of
  the pod's capital], b = ``QR_EVIDENCE_PNL_BAND`` (the stage's band, 0.10; unset: not
  measured): live P&L no worse than simulated by more than the band of the simulated move, the
  harmful side of the runbook's "+-10% of simulated" (review §6a), blockwise so that a P&L path
  near zero does not turn noise into a ratio.

Pure bookkeeping, no I/O; the state is a dataclass with ``to_dict``/``from_dict``, so the
engine's durable snapshot carries it through a restart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: the criteria measured as streams, by the operator's criterion names
CRITERIA = ("slippageRatio", "fillRatio", "pnlDeviation", "precisionRatio")
#: the counter families (field names of :class:`Sums`)
FAMILIES = ("n", "sum_pos", "sum_neg", "sum_sq", "lag_pos", "lag_neg")


@dataclass(frozen=True)
class Sums:
    """Sufficient statistics of a stream x_1..x_n, as monotone counters.

    ``sum_pos`` / ``sum_neg``: sums of max(x, 0) and max(-x, 0) (both >= 0); ``sum_sq``: sum x^2;
    ``lag_pos`` / ``lag_neg``: the positive and negative parts of sum_{i>=2} x_i x_{i-1}.
    """

    n: float = 0.0
    sum_pos: float = 0.0
    sum_neg: float = 0.0
    sum_sq: float = 0.0
    lag_pos: float = 0.0
    lag_neg: float = 0.0

    @property
    def total(self) -> float:
        """sum x."""
        return self.sum_pos - self.sum_neg

    @property
    def lag(self) -> float:
        """sum_{i>=2} x_i x_{i-1}."""
        return self.lag_pos - self.lag_neg

    def minus(self, other: "Sums") -> "Sums":
        """The increments since ``other`` (field by field)."""
        return Sums(*(getattr(self, f) - getattr(other, f) for f in FAMILIES))

    def plus(self, other: "Sums") -> "Sums":
        """Field-by-field sum."""
        return Sums(*(getattr(self, f) + getattr(other, f) for f in FAMILIES))

    def finite(self) -> bool:
        """Every field is a finite number."""
        return all(math.isfinite(getattr(self, f)) for f in FAMILIES)

    def add(self, x: float, prev: float | None) -> "Sums":
        """These sums with one more observation ``x`` (``prev``: the previous one, None for the first)."""
        lag = 0.0 if prev is None else x * prev
        return Sums(self.n + 1, self.sum_pos + max(x, 0.0), self.sum_neg + max(-x, 0.0), self.sum_sq + x * x,
                    self.lag_pos + max(lag, 0.0), self.lag_neg + max(-lag, 0.0))

    @staticmethod
    def of(xs) -> "Sums":
        """The sums of a sequence of observations."""
        s, prev = Sums(), None
        for x in xs:
            s, prev = s.add(float(x), prev), float(x)
        return s


@dataclass(frozen=True)
class EvidenceConfig:
    """The thresholds the statistics embed (see the module docstring); ``pnl_band`` None: no
    ``pnlDeviation`` stream (a stage without a P&L band, e.g. shadow)."""

    slippage_ratio: float = 1.5
    fill_ratio: float = 0.95
    pnl_band: float | None = None
    block_bars: int = 30
    precision_ratio: float = 0.9

    def __post_init__(self) -> None:
        if not (self.slippage_ratio > 0 and math.isfinite(self.slippage_ratio)):
            raise ValueError(f"QR_EVIDENCE_SLIPPAGE_RATIO must be a positive number, got {self.slippage_ratio!r}")
        if not 0 <= self.fill_ratio <= 1:
            raise ValueError(f"QR_EVIDENCE_FILL_RATIO must be within 0-1, got {self.fill_ratio!r}")
        if self.pnl_band is not None and not (0 < self.pnl_band <= 10):
            raise ValueError(f"QR_EVIDENCE_PNL_BAND must be within (0, 10], got {self.pnl_band!r}")
        if not 0 <= self.precision_ratio <= 10:
            raise ValueError(f"QR_EVIDENCE_PRECISION_RATIO must be within 0-10, got {self.precision_ratio!r}")
        if not (isinstance(self.block_bars, int) and self.block_bars >= 1):
            raise ValueError(f"QR_EVIDENCE_BLOCK_BARS must be a whole number >= 1, got {self.block_bars!r}")

    @staticmethod
    def from_env(env: dict[str, str]) -> "EvidenceConfig":
        """From ``QR_EVIDENCE_*`` (unset: the defaults). Raises ValueError naming the variable."""

        def num(name: str, default: float | None) -> float | None:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                return float(raw)
            except ValueError:
                raise ValueError(f"{name}={raw!r} is not a number") from None

        block = num("QR_EVIDENCE_BLOCK_BARS", 30)
        if block is None or block != int(block):
            raise ValueError(f"QR_EVIDENCE_BLOCK_BARS={block!r} must be a whole number")
        return EvidenceConfig(num("QR_EVIDENCE_SLIPPAGE_RATIO", 1.5), num("QR_EVIDENCE_FILL_RATIO", 0.95),  # type: ignore[arg-type]
                              num("QR_EVIDENCE_PNL_BAND", None), int(block),
                              num("QR_EVIDENCE_PRECISION_RATIO", 0.9))  # type: ignore[arg-type]


@dataclass
class EvidenceStreams:
    """The running sums of every criterion's stream, and the open P&L block.

    ``sums`` criterion -> :class:`Sums`; ``last`` criterion -> the previous observation (for the
    lag-1 products); ``block_bars``/``block_live``/``block_sim``: bars counted, live and simulated
    P&L (USD) at the open block's start.
    """

    sums: dict[str, Sums] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)
    block_start_bars: int = -1
    block_live: float = 0.0
    block_sim: float = 0.0

    def observe(self, criterion: str, x: float) -> None:
        """Add one observation (a non-finite one is dropped: it is no evidence)."""
        if not math.isfinite(x):
            return
        s = self.sums.get(criterion, Sums())
        self.sums[criterion] = s.add(x, self.last.get(criterion))
        self.last[criterion] = x

    def on_fill(self, cfg: EvidenceConfig, ordered: int, filled: int, realised_bps: float, modeled_bps: float) -> None:
        """One live order's outcome: a fill-ratio observation, and a slippage one if shares filled."""
        if ordered:
            self.observe("fillRatio", abs(filled) / abs(ordered) - cfg.fill_ratio)
        if filled:
            self.observe("slippageRatio", realised_bps - cfg.slippage_ratio * modeled_bps)

    def on_paired_call(self, cfg: EvidenceConfig, right: bool, reference_right: bool) -> None:
        """A bar both the model and the reference called: a paired precision observation."""
        self.observe("precisionRatio", float(right) - cfg.precision_ratio * float(reference_right))

    def on_bars(self, cfg: EvidenceConfig, bars: int, live, sim, capital: float) -> None:
        """After bar number ``bars``: close the P&L block if it is ``block_bars`` long (an observation
        if either book moved in it). ``live`` / ``sim``: the books, read (``pnl()``, USD) only where a
        block starts or ends, so the per-bar cost is a comparison."""
        if cfg.pnl_band is None or capital <= 0:
            return
        if self.block_start_bars >= 0 and bars - self.block_start_bars < cfg.block_bars:
            return
        lp, sp = live.pnl(), sim.pnl()
        if self.block_start_bars >= 0:
            dl, ds = lp - self.block_live, sp - self.block_sim
            if dl or ds:
                self.observe("pnlDeviation", 1e4 * (dl - ds + cfg.pnl_band * abs(ds)) / capital)
        self.block_start_bars, self.block_live, self.block_sim = bars, lp, sp

    def to_dict(self) -> dict:
        return {"sums": {k: [getattr(v, f) for f in FAMILIES] for k, v in self.sums.items()}, "last": dict(self.last),
                "block": [self.block_start_bars, self.block_live, self.block_sim]}

    @classmethod
    def from_dict(cls, d: dict) -> "EvidenceStreams":
        b = d.get("block", [-1, 0.0, 0.0])
        return cls({k: Sums(*v) for k, v in d.get("sums", {}).items()}, dict(d.get("last", {})), int(b[0]), b[1], b[2])
