"""Stress certification end to end against a real redis-server: ``quantramp-trader stress --certify``
writes a report that certifies; the Redis scenarios FAIL when their invariant is broken."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from quantramp.trader import engine as engine_mod
from quantramp.trader import server
from quantramp.trader import stress
from quantramp.trader.cli import app
from quantramp.trader.marketdata import load_minute_bars

SCENARIOS = {"controls", "flash_crash", "earnings_gap", "decision_flood", "broker_failure", "portfolio_integrity", "hard_kill", "redis_outage"}


def _assert_report_shape(report: dict) -> None:
    assert set(report) >= {"certified", "wall_seconds", "model", "model_check", "config", "thresholds", "scenarios", "data"}
    assert {s["name"] for s in report["scenarios"]} == SCENARIOS
    for s in report["scenarios"]:
        assert set(s) >= {"name", "description", "passed", "seconds", "measurements", "checks", "error"}
        assert s["checks"], s["name"]
        for c in s["checks"]:
            assert set(c) == {"name", "value", "op", "threshold", "passed"}
        assert s["passed"] == all(c["passed"] for c in s["checks"]) and s["error"] is None
    t = report["thresholds"]
    # at least as strict as the seed runbook
    assert t["decision_p99_ms"] <= 15 and t["decision_mean_ms"] <= 5 and t["decision_max_ms"] <= 10
    assert t["error_rate"] <= 0.001 and t["hard_limit_breaches"] == 0
    assert report["data"]["bars"] == 2340


@pytest.mark.timeout(300)
def test_cli_certifies_against_the_fixture_redis(redis_server, tmp_path):
    out = tmp_path / "report.json"
    r = CliRunner().invoke(
        app, ["stress", "--certify", "--quick", "--output", str(out), "--redis-url", redis_server.url]
    )
    report = json.loads(out.read_text())
    failed = {s["name"]: [c for c in s["checks"] if not c["passed"]] or s["error"] for s in report["scenarios"] if not s["passed"]}
    assert r.exit_code == 0, (r.output, failed)
    _assert_report_shape(report)
    assert report["certified"] is True and report["config"]["redis"] == "given"
    assert "CERTIFIED" in r.output and "redis_outage" in r.output
    # at the seed's limits (scaled linearly to the certified capital), not the capital defaults
    lim = report["config"]["limits"]
    k = report["config"]["capital_usd"] / 1_000.0
    assert (lim["max_order_usd"], lim["max_position_usd"], lim["max_daily_turnover_usd"], lim["max_daily_loss_usd"]) == (
        50.0 * k, 500.0 * k, 2_000.0 * k, 100.0 * k)
    by = {s["name"]: s["measurements"] for s in report["scenarios"]}
    assert by["decision_flood"]["decisions"] == stress.QUICK_FLOOD_DECISIONS
    assert by["hard_kill"]["risk_adding_orders_after_ack"] == 0
    assert by["redis_outage"]["ready_true_during_outage"] == 0
    assert by["portfolio_integrity"]["restored_state_diff_fields"] == []


@pytest.mark.timeout(300)
def test_console_script_starts_its_own_redis_and_exits_1_when_not_certified(tmp_path):
    """The installed entry point, with no --redis-url (its own redis-server), in a subprocess."""
    exe = Path(sys.executable).with_name("quantramp-trader")
    out = tmp_path / "r.json"
    p = subprocess.run(
        [str(exe), "stress", "--certify", "--quick", "--output", str(out), "--scenario", "hard_kill",
         "--scenario", "earnings_gap"],
        capture_output=True, text=True, timeout=240,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    report = json.loads(out.read_text())
    assert report["certified"] is True and report["config"]["redis"] == "own redis-server"
    # not certified -> exit code 1 (a broken end-of-day flatten, in a child process via -c)
    code = (
        "import sys; from quantramp.trader import session as s; s.SessionClock.phase = lambda self, ts: 1;"
        "from quantramp.trader.cli import app; sys.argv = ['quantramp-trader', 'stress', '--certify', '--quick',"
        f"'--output', {str(tmp_path / 'bad.json')!r}, '--scenario', 'earnings_gap']; app()"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert p.returncode == 1, p.stdout + p.stderr
    assert json.loads((tmp_path / "bad.json").read_text())["certified"] is False
    assert "NOT CERTIFIED" in p.stdout


# -- the Redis scenarios fail when their invariant is broken --------------------------------------------
@pytest.fixture(scope="module")
def model():
    return stress.build_model()[0]


@pytest.fixture()
def ctx(model, redis_server, tmp_path):
    return stress.Context(
        bars=load_minute_bars("AAPL"), model=model, quick=True, redis_url=redis_server.url, tmpdir=tmp_path
    )


def _failed(res):
    assert res.error is None, res.measurements.get("traceback")
    return {c.name for c in res.checks if not c.passed}


def _ignore_block(monkeypatch, reason):
    """Make the runtime let orders out despite the block ``reason`` (kill, redis_down)."""
    real = server.Runtime.block_reason

    def ignoring(self):
        why = real(self)
        return None if why == reason else why

    monkeypatch.setattr(server.Runtime, "block_reason", ignoring)


@pytest.mark.timeout(120)
def test_hard_kill_fails_when_the_latch_does_not_block_orders(ctx, monkeypatch):
    _ignore_block(monkeypatch, "kill")
    res = stress.run_scenario("hard_kill", ctx)
    assert "risk_adding_orders_after_ack" in _failed(res)


@pytest.mark.timeout(120)
def test_redis_outage_fails_when_orders_go_out_without_redis(ctx, monkeypatch):
    _ignore_block(monkeypatch, "redis_down")
    res = stress.run_scenario("redis_outage", ctx)
    assert "risk_adding_orders_during_outage" in _failed(res)


@pytest.mark.timeout(120)
def test_redis_outage_fails_when_readiness_ignores_redis(ctx, monkeypatch):
    real = server.Runtime._update_ready

    def always_ready(self):
        real(self)
        if self.loaded and self.processed:
            self.http.ready = True

    monkeypatch.setattr(server.Runtime, "_update_ready", always_ready)
    res = stress.run_scenario("redis_outage", ctx)
    assert "ready_true_during_outage" in _failed(res)


@pytest.mark.timeout(120)
def test_portfolio_integrity_fails_when_the_book_drops_fees(ctx, monkeypatch):
    def no_fees(self, fill):
        self.position += fill.filled_qty
        self.cash -= fill.filled_qty * fill.price  # commission not booked

    monkeypatch.setattr(engine_mod.Book, "apply", no_fees)
    res = stress.run_scenario("portfolio_integrity", ctx)
    assert "fills_vs_engine_vs_broker_max_abs_diff" in _failed(res)


@pytest.mark.timeout(120)
def test_portfolio_integrity_fails_when_the_restored_state_differs(ctx, monkeypatch):
    real = engine_mod.Engine.restore

    def lossy(self, snap):
        real(self, snap)
        self.governor_state.peak_equity_usd += 1.0  # a restart that forgets the exact peak (the one peak, D11)

    monkeypatch.setattr(engine_mod.Engine, "restore", lossy)
    res = stress.run_scenario("portfolio_integrity", ctx)
    assert _failed(res) & {"restored_state_diff_fields", "continuation_diff_fields"}
