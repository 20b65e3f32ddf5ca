"""``quantramp-trader``: run (the pod), train (register a model), backtest (offline engine), stress (certification)."""

from __future__ import annotations

import enum
import json
import os
import sys
from typing import Optional

import typer

app = typer.Typer(
    name="quantramp-trader",
    help="quantramp trader: run the trading pod, train and register models, backtest offline.",
    no_args_is_help=True,
    add_completion=False,
)


class Kind(str, enum.Enum):
    """Model kinds ``train`` can fit."""

    logistic = "logistic"
    forest = "forest"


@app.command()
def run() -> None:
    """Run the trader pod (configured by the QR_* environment, see the pod contract)."""
    from .server import main

    raise typer.Exit(main(os.environ))


#: the --bars-* options of train and backtest (one definition; the source itself: --bars-source)
BARS_URL_OPTION = typer.Option(None, "--bars-url", envvar="QR_BARS_URL",
                               help="file source: CSV (.csv, .csv.gz) or Parquet path or URL; may contain {symbol}")
BARS_DSN_OPTION = typer.Option(None, "--bars-dsn", envvar="QR_BARS_POSTGRES_DSN",
                               help="postgres source: libpq URI or conninfo WITHOUT password (the password: PGPASSWORD)")
BARS_TABLE_OPTION = typer.Option(None, "--bars-table", envvar="QR_BARS_TABLE",
                                 help="postgres source: table (default minute_bars)")
CALENDAR_OPTION = typer.Option(
    "XNYS", "--calendar",
    help="the symbol's exchange calendar (exchange_calendars name, e.g. XLON; the strategy's spec.calendars): its "
         "sessions stamp daily dates and close each day; prices are taken as USD")


def _bar_source(command: str, symbol: Optional[str], bars_source: str, bars_url: Optional[str],
                bars_dsn: Optional[str], bars_table: Optional[str], calendar: str = "XNYS"):
    """``(config, source, symbol)`` of the --bars-* options (QR_BARS_* as fallbacks) and --calendar; exits 2
    on a bad setting."""
    from .session import SUPPORTED_CALENDARS

    from .barsource import BarsConfig, BarSourceConfigError
    from .marketdata import SUPPORTED_SYMBOLS

    given = {"QR_BARS_SOURCE": bars_source, "QR_BARS_URL": bars_url, "QR_BARS_POSTGRES_DSN": bars_dsn,
             "QR_BARS_TABLE": bars_table}
    options = {"source": "--bars-source", "url": "--bars-url", "dsn": "--bars-dsn", "table": "--bars-table"}
    names = {k: f"{opt} (or {var})" for (k, opt), var in zip(options.items(), given)}
    try:
        config = BarsConfig.from_env({k: v for k, v in given.items() if v}, names=names)
        if not (symbol or "").strip() and config.kind != "sample":
            raise BarSourceConfigError(f"--symbol is required with --bars-source {config.kind}")
        calendar = calendar.strip().upper()
        if calendar not in SUPPORTED_CALENDARS:
            raise BarSourceConfigError(f"--calendar {calendar}: use one of {', '.join(SUPPORTED_CALENDARS)}")
        if calendar != "XNYS" and config.kind == "sample":
            raise BarSourceConfigError(f"--calendar {calendar}: the bundled sample is XNYS bars")
        sym = (symbol or "").strip().upper() or SUPPORTED_SYMBOLS[0]
        source = config.source({sym: calendar})
    except BarSourceConfigError as exc:
        typer.echo(f"quantramp-trader {command}: {exc}", err=True)
        raise typer.Exit(2)
    return config, source, sym


def _feature_spec(spec_file: Optional[str], features: Optional[str], vol_window: Optional[int],
                  volume_window: Optional[int]):
    """The :class:`~.features.FeatureSpec` of train's options (a JSON file, or names and windows over the
    defaults); exits 2 on a bad or contradictory spec."""
    from pydantic import ValidationError

    from .features import FeatureSpec

    try:
        if spec_file:
            if features or vol_window is not None or volume_window is not None:
                raise ValueError("--feature-spec cannot be combined with --features, --vol-window or --volume-window")
            with open(spec_file, encoding="utf-8") as fh:
                return FeatureSpec.from_json(fh.read())
        kw: dict = {}
        if features:
            kw["features"] = tuple(f.strip() for f in features.split(",") if f.strip())
        if vol_window is not None:
            kw["vol_window"] = vol_window
        if volume_window is not None:
            kw["volume_window"] = volume_window
        return FeatureSpec(**kw)
    except (OSError, ValueError, ValidationError) as exc:
        typer.echo(f"quantramp-trader train: bad feature spec: {exc}", err=True)
        raise typer.Exit(2)


@app.command()
def train(
    model_name: str = typer.Option(..., "--model-name", help="registered model name in MLflow"),
    kind: Kind = typer.Option(Kind.logistic, "--kind", help="logistic (sensible) or forest (overfits)"),
    shuffle_labels: bool = typer.Option(False, "--shuffle-labels", help="train on permuted labels (a bad model)"),
    seed: int = typer.Option(0, "--seed", help="random seed for the forest and the label shuffle"),
    alias: Optional[str] = typer.Option(None, "--alias", help="set this alias (e.g. champion) on the new version"),
    tracking_uri: Optional[str] = typer.Option(
        None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI", help="MLflow tracking server"
    ),
    symbol: Optional[str] = typer.Option(
        None, "--symbol", help="the symbol to train on (required with a file or postgres source; default: AAPL)"
    ),
    bars_source: str = typer.Option(
        "sample", "--bars-source", envvar="QR_BARS_SOURCE",
        help="sample (the bundled AAPL hourly bars before the minute replay) | file | postgres",
    ),
    bars_url: Optional[str] = BARS_URL_OPTION,
    bars_dsn: Optional[str] = BARS_DSN_OPTION,
    bars_table: Optional[str] = BARS_TABLE_OPTION,
    bar_seconds: int = typer.Option(
        60, "--bar-seconds", min=1, max=86_400,
        help="length of the bars of a file or postgres source (60 minute bars, 86400 daily bars: one per XNYS "
             "session), checked against their spacing; train on the bar length the strategy trades",
    ),
    features: Optional[str] = typer.Option(
        None, "--features", help="comma-separated built-in features in column order (ret_K, range, close_loc, volume_z)"
    ),
    vol_window: Optional[int] = typer.Option(None, "--vol-window", help="one-bar returns in sigma (default 30)"),
    volume_window: Optional[int] = typer.Option(
        None, "--volume-window", help="bars in the volume z-score (default 30)"
    ),
    feature_spec: Optional[str] = typer.Option(
        None, "--feature-spec", help="a FeatureSpec JSON file (instead of --features/--vol-window/--volume-window)"
    ),
    calendar: str = CALENDAR_OPTION,
) -> None:
    """Train on bars (default: real AAPL hourly bars; or --bars-source file|postgres --symbol ...), with
    the default features or a feature spec, log with mlflow.sklearn (skops) with the spec, register;
    print the version last."""
    from mlflow.exceptions import MlflowException

    from .marketdata import MarketDataError
    from .model import ModelLoadError
    from .train import bars_training_data, sample_training_bars, train_and_register

    spec = _feature_spec(feature_spec, features, vol_window, volume_window)
    config, source, sym = _bar_source("train", symbol, bars_source, bars_url, bars_dsn, bars_table, calendar)
    try:
        if config.kind == "sample":
            if sym != "AAPL":
                raise MarketDataError(f"the bundled sample has AAPL only, not {sym}")
            data = sample_training_bars(spec)
        else:
            data = bars_training_data(source, sym, bar_seconds, spec, source.calendar_of(sym))
    except (MarketDataError, ValueError) as exc:
        typer.echo(f"quantramp-trader train: {exc}", err=True)
        raise typer.Exit(1)
    try:
        version = train_and_register(
            model_name, kind=kind.value, shuffle_labels=shuffle_labels, seed=seed, alias=alias,
            tracking_uri=tracking_uri, data=data,
        )
    except (ModelLoadError, MlflowException) as exc:
        typer.echo(f"quantramp-trader train: {exc}", err=True)
        raise typer.Exit(1)
    sys.stdout.flush()
    typer.echo(version)


@app.command()
def backtest(
    model_uri: str = typer.Option(..., "--model-uri", help="models:/NAME/VERSION or models:/NAME@ALIAS"),
    capital_usd: float = typer.Option(..., "--capital-usd", min=0.01, help="allocated capital, USD"),
    bars: Optional[int] = typer.Option(None, "--bars", min=1, help="bars to replay (default: one pass over the history)"),
    paper: bool = typer.Option(False, "--paper", help="paper (shadow) fills"),
    entry_threshold: Optional[float] = typer.Option(None, "--entry-threshold", min=0.0, max=0.499),
    seed: int = typer.Option(0, "--seed", help="seed of the broker's random slippage"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI"),
    symbol: Optional[str] = typer.Option(
        None, "--symbol", help="the symbol to backtest (required with a file or postgres source; default: the sample's)"
    ),
    bars_source: str = typer.Option(
        "sample", "--bars-source", envvar="QR_BARS_SOURCE", help="sample (bundled minute bars) | file | postgres"
    ),
    bars_url: Optional[str] = BARS_URL_OPTION,
    bars_dsn: Optional[str] = BARS_DSN_OPTION,
    bars_table: Optional[str] = BARS_TABLE_OPTION,
    bar_seconds: int = typer.Option(
        60, "--bar-seconds", envvar="QR_BAR_SECONDS", min=1, max=86_400,
        help="length of one bar, seconds: 60 minute bars, 300 five-minute bars, 86400 daily bars (one per XNYS "
             "session; a file of dates). The bars must have this spacing; the bundled minute sample is resampled to it",
    ),
    calendar: str = CALENDAR_OPTION,
) -> None:
    """Run the same engine offline on a bar history (the bundled minute sample or your own bars:
    --bars-source file|postgres; any --bar-seconds, daily included) and print a JSON summary."""
    from .backtest import run_backtest
    from .barsource import check_spacing
    from .engine import DEFAULT_BAR_SECONDS, EngineConfig
    from .marketdata import MarketDataError, resample
    from .model import ModelLoadError, load_model

    config, source, symbol = _bar_source("backtest", symbol, bars_source, bars_url, bars_dsn, bars_table, calendar)
    cal = source.calendar_of(symbol)
    try:
        history = source.history(symbol)
        if config.kind == "sample" and bar_seconds != DEFAULT_BAR_SECONDS:
            history = resample(history, bar_seconds)  # the sample is minute bars
        history = check_spacing(history, bar_seconds, source.describe(), cal)
    except MarketDataError as exc:
        typer.echo(f"quantramp-trader backtest: {exc}", err=True)
        raise typer.Exit(1)
    try:
        model = load_model(model_uri, tracking_uri)
    except ModelLoadError as exc:
        typer.echo(f"quantramp-trader backtest: {exc}", err=True)
        raise typer.Exit(1)
    kw = {} if entry_threshold is None else {"entry_threshold": entry_threshold}
    cfg = EngineConfig.for_capital(capital_usd, paper=paper, symbol=symbol, bar_seconds=bar_seconds, calendar=cal, **kw)
    try:
        out = run_backtest(model, cfg, n_bars=bars, seed=seed, bars=history)
    except ValueError as exc:  # e.g. more daily bars asked than the history has (daily series are not looped)
        typer.echo(f"quantramp-trader backtest: {exc}", err=True)
        raise typer.Exit(2)
    out["model_uri"] = model_uri
    out["symbol"] = symbol
    out["bars_source"] = source.describe()
    out["calendar"] = cal
    typer.echo(json.dumps(out, indent=2, sort_keys=True))


@app.command()
def stress(
    certify: bool = typer.Option(False, "--certify", help="exit non-zero unless every scenario passes"),
    output: Optional[str] = typer.Option(None, "--output", "-o", help="write the JSON report to this file"),
    quick: bool = typer.Option(False, "--quick", help="smaller decision flood (5,000) for tests"),
    redis_url: Optional[str] = typer.Option(
        None, "--redis-url", help="Redis to use (default: a private redis-server on a free port, stopped after)"
    ),
    scenario: Optional[list[str]] = typer.Option(None, "--scenario", help="run only this scenario (repeatable)"),
    workers: int = typer.Option(1, "--workers", min=1, max=8, help="processes for the decision flood"),
    seed: int = typer.Option(0, "--seed", help="seed of the model fit, the brokers and the faults"),
) -> None:
    """Stress certification on the real AAPL minute bars: flash crash, earnings gap, decision flood,
    broker failure, portfolio integrity, hard kill, Redis outage; JSON report and a short table."""
    import logging

    from .stress import certify as run_certification
    from .stress import print_table

    logging.basicConfig(level=logging.CRITICAL)  # the outage and kill scenarios log expected errors
    try:
        report = run_certification(quick=quick, redis_url=redis_url, seed=seed, workers=workers, only=scenario)
    except ValueError as exc:
        typer.echo(f"quantramp-trader stress: {exc}", err=True)
        raise typer.Exit(2)
    if output:
        with open(output, "w") as fh:
            json.dump(report, fh, indent=2, sort_keys=False)
            fh.write("\n")
    print_table(report)
    if output:
        typer.echo(f"report: {output}")
    if certify and not report["certified"]:
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
