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
    # walk-forward admission evidence: version tags and run metrics; N = the 16 declared trials
    assert mv.tags["quantramp.admission.trials"] == "16"
    metrics = client.get_run(mv.run_id).data.metrics
    assert {"wf_sharpe", "wf_sharpe_per_period", "psr", "dsr", "pbo", "trials", "wf_observations", "wf_skew",
            "wf_kurtosis"} <= set(metrics)
    assert float(mv.tags["quantramp.admission.dsr"]) == pytest.approx(metrics["dsr"], abs=1e-4)
    assert float(mv.tags["quantramp.admission.wf_sharpe"]) == pytest.approx(metrics["wf_sharpe"], abs=1e-4)
    assert float(mv.tags["quantramp.admission.pbo"]) == pytest.approx(metrics["pbo"], abs=1e-4)

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


@pytest.mark.timeout(300)
def test_a_second_training_run_counts_the_first_as_a_trial(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    for _ in range(2):
        r = runner.invoke(app, ["train", "--model-name", "aapl-n", "--tracking-uri", uri])
        assert r.exit_code == 0, r.output
    client = MlflowClient(uri)
    first, second = (client.get_model_version("aapl-n", v) for v in ("1", "2"))
    assert first.tags["quantramp.admission.trials"] == "16"
    assert second.tags["quantramp.admission.trials"] == "17"
    m1, m2 = (client.get_run(v.run_id).data.metrics for v in (first, second))
    assert m2["wf_sharpe"] == pytest.approx(m1["wf_sharpe"], rel=1e-9)  # same data, same model
    assert m2["dsr"] < m1["dsr"]  # one more trial: a higher bar
