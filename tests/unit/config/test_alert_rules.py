"""The Prometheus alert rules parse and fire at the runbook's levels (promtool, from Debian's prometheus)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

RULES = Path(__file__).resolve().parents[3] / "charts" / "quantramp" / "files" / "alerts.yaml"
PROMTOOL = shutil.which("promtool")
pytestmark = pytest.mark.skipif(PROMTOOL is None, reason="promtool comes with Debian's prometheus package")


def test_rules_are_valid():
    out = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_rules_fire_at_runbook_levels(tmp_path):
    s = 'strategy="s", role="challenger", stage="canary-1", namespace="ns"'
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f"quantramp_capital_usd{{{s}}}", "values": "1000x5"},
                    # -0.4% of capital in the trailing hour: warning, not critical
                    {"series": f"quantramp_hour_pnl_usd{{{s}}}", "values": "-4x5"},
                    {"series": f"quantramp_day_pnl_usd{{{s}}}", "values": "-25x5"},
                    {"series": f"quantramp_drawdown_ratio{{{s}}}", "values": "0.08x5"},
                ],
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": "QuantrampHourlyLossWarning",
                     "exp_alerts": [_exp("warning", s, "hourly P&L below -0.3% of capital")]},
                    {"eval_time": "2m", "alertname": "QuantrampHourlyLossCritical", "exp_alerts": []},
                    {"eval_time": "2m", "alertname": "QuantrampDailyLossCritical",
                     "exp_alerts": [_exp("critical", s, "daily P&L below -2% of capital", action="AUTO_KILL_SWITCH")]},
                    {"eval_time": "2m", "alertname": "QuantrampDrawdownWarning",
                     "exp_alerts": [_exp("warning", s, "drawdown above 7%")]},
                    {"eval_time": "2m", "alertname": "QuantrampDrawdownCritical", "exp_alerts": []},
                ],
            }
        ],
    }
    f = tmp_path / "tests.yaml"
    f.write_text(yaml.safe_dump(tests))
    out = subprocess.run([PROMTOOL, "test", "rules", str(f)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def _labels(selector: str) -> dict[str, str]:
    return {k.strip(): v.strip().strip('"') for k, v in (p.split("=") for p in selector.split(","))}


def _exp(severity: str, selector: str, summary: str, **extra: str) -> dict:
    return {
        "exp_labels": {"severity": severity, **_labels(selector), **extra},
        "exp_annotations": {"summary": f"s/challenger: {summary}"},
    }


def test_a_hard_limit_breach_fires_an_auto_kill_switch_alert_and_a_quiet_counter_does_not(tmp_path):
    s = 'strategy="s", role="champion", stage="production", namespace="ns"'
    quiet = 'strategy="q", role="champion", stage="production", namespace="ns"'
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [{
            "interval": "1m",
            "input_series": [
                {"series": f"quantramp_hard_limit_breaches_total{{{s}}}", "values": "0 0 1 1 1 1 1 1 1 1 1"},
                {"series": f"quantramp_hard_limit_breaches_total{{{quiet}}}", "values": "0x10"},
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "QuantrampHardLimitBreach", "exp_alerts": []},
                {"eval_time": "3m", "alertname": "QuantrampHardLimitBreach", "exp_alerts": [{
                    "exp_labels": {"severity": "critical", "action": "AUTO_KILL_SWITCH", **_labels(s)},
                    "exp_annotations": {"summary": "s/champion: a fill broke a hard risk limit"}}]},
                {"eval_time": "10m", "alertname": "QuantrampHardLimitBreach", "exp_alerts": []},  # 5 quiet minutes
            ],
        }],
    }
    f = tmp_path / "tests.yaml"
    f.write_text(yaml.safe_dump(tests))
    out = subprocess.run([PROMTOOL, "test", "rules", str(f)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
