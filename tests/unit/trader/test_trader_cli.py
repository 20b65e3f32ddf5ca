"""CLI: train -> register -> load round trip on a throwaway local MLflow store; error exits."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from typer.testing import CliRunner

from quantramp.trader.cli import app
from quantramp.trader.features import FEATURE_NAMES

runner = CliRunner()


def test_help_lists_the_commands():
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0
    for cmd in ("run", "train", "backtest"):
        assert cmd in r.output


def _dead() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_backtest_and_train_exit_1_when_mlflow_is_down():
    r = runner.invoke(app, ["backtest", "--model-uri", "models:/x/1", "--capital-usd", "1000", "--tracking-uri", _dead()])
    assert r.exit_code == 1 and "unreachable" in r.output
    r = runner.invoke(app, ["train", "--model-name", "x", "--tracking-uri", _dead()])
    assert r.exit_code == 1 and "unreachable" in r.output


@pytest.mark.timeout(300)
def test_train_registers_a_tagged_skops_version_the_trader_can_load(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from quantramp.trader.model import load_model

    monkeypatch.chdir(tmp_path)  # local artifacts land in tmp_path/mlruns
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    r = runner.invoke(app, ["train", "--model-name", "aapl-t", "--alias", "champion", "--tracking-uri", uri])
    assert r.exit_code == 0, r.output
    version = r.stdout.strip().splitlines()[-1]
    assert version == "1"
    client = MlflowClient(uri)
    mv = client.get_model_version("aapl-t", version)
    assert mv.tags["quantramp.kind"] == "logistic"
    assert mv.tags["quantramp.shuffled_labels"] == "false"
    assert 0.0 <= float(mv.tags["quantramp.train_precision"]) <= 1.0
    assert str(client.get_model_version_by_alias("aapl-t", "champion").version) == version

    model = load_model("models:/aapl-t@champion", uri)
    assert model.info["metadata"]["serialization_format"] == "skops"
    assert model.info["metadata"]["features"] == list(FEATURE_NAMES)
    assert model.info["version"] == "1"
    p = model.p_up(np.zeros((3, len(FEATURE_NAMES))))
    assert p.shape == (3,) and ((0 < p) & (p < 1)).all()

    r = runner.invoke(app, ["backtest", "--model-uri", "models:/aapl-t/1", "--capital-usd", "1000", "--bars", "120",
                            "--tracking-uri", uri])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["bars"] == 120 and out["capital_usd"] == 1000.0
    for key in ("pnl_usd", "simulated_pnl_usd", "max_drawdown_ratio", "trades", "precision_ratio", "fill_ratio",
                "slippage_realized_bps", "slippage_modeled_bps", "pnl_vs_simulated"):
        assert key in out
