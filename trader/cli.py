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
) -> None:
    """Train on real AAPL hourly bars, log with mlflow.sklearn (skops), register; print the version last."""
    from mlflow.exceptions import MlflowException

    from .model import ModelLoadError
    from .train import train_and_register

    try:
        version = train_and_register(
            model_name, kind=kind.value, shuffle_labels=shuffle_labels, seed=seed, alias=alias,
            tracking_uri=tracking_uri,
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
    bars: Optional[int] = typer.Option(None, "--bars", min=1, help="bars to replay (default: the 6 days, 2340)"),
    paper: bool = typer.Option(False, "--paper", help="paper (shadow) fills"),
    entry_threshold: Optional[float] = typer.Option(None, "--entry-threshold", min=0.0, max=0.499),
    seed: int = typer.Option(0, "--seed", help="seed of the broker's random slippage"),
    tracking_uri: Optional[str] = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI"),
) -> None:
    """Run the same engine offline on the minute replay and print a JSON summary."""
    from .backtest import run_backtest
    from .engine import EngineConfig
    from .model import ModelLoadError, load_model

    try:
        model = load_model(model_uri, tracking_uri)
    except ModelLoadError as exc:
        typer.echo(f"quantramp-trader backtest: {exc}", err=True)
        raise typer.Exit(1)
    kw = {} if entry_threshold is None else {"entry_threshold": entry_threshold}
    cfg = EngineConfig.for_capital(capital_usd, paper=paper, **kw)
    out = run_backtest(model, cfg, n_bars=bars, seed=seed)
    out["model_uri"] = model_uri
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
