"""The shipped alert rules (charts/quantramp/files/alerts.yaml): valid for promtool, every rule unit-tested
by promtool (tests/unit/config/alerts_test.yaml: quiet before its ``for:``, firing after it, never for the
healthy series), and every rule shaped for on-call: ``for:``, a severity, summary, description and a
runbook link to its own heading of docs/runbook.md.

promtool is the one built with Prometheus by hack/build-control-plane.sh (``$QR_BIN``, else
``~/.cache/quantramp/k8s-v1.34.4/bin``; ``make setup`` builds it), else one on PATH."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "charts" / "quantramp" / "files" / "alerts.yaml"
TESTS = Path(__file__).resolve().parent / "alerts_test.yaml"
RUNBOOK = REPO / "docs" / "runbook.md"
PLACEHOLDER = "__RUNBOOK_BASE__"
TEST_BASE = "https://runbook.test"
SEVERITIES = {"critical", "warning", "info"}
#: critical rules allowed to fire without waiting (each one says why in alerts.yaml)
IMMEDIATE = {"QuantrampHardLimitBreach"}  # a counter increase is an event, and its kill switch must engage at once


def find_promtool() -> str | None:
    """The promtool to use: ``$QR_BIN/promtool``, the build cache's, else one on PATH (None: none)."""
    candidates = []
    if os.environ.get("QR_BIN"):
        candidates.append(Path(os.environ["QR_BIN"]) / "promtool")
    cache = Path(os.environ.get("QR_CACHE", Path.home() / ".cache" / "quantramp"))
    candidates.append(cache / f"k8s-{os.environ.get('QR_K8S_VERSION', 'v1.34.4')}" / "bin" / "promtool")
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return shutil.which("promtool")


PROMTOOL = find_promtool()
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool: `make setup` builds it into ~/.cache/quantramp/k8s-v1.34.4/bin (or set QR_BIN)")


def rules() -> list[dict]:
    """Every rule of the shipped file, in file order."""
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def stage(tmp: Path, rules_text: str | None = None) -> Path:
    """Write the rules (``__RUNBOOK_BASE__`` replaced, as the chart and localstack do) and the
    promtool tests side by side in ``tmp``; returns the test file."""
    text = RULES.read_text() if rules_text is None else rules_text
    (tmp / "alerts.yaml").write_text(text.replace(PLACEHOLDER, TEST_BASE))
    shutil.copy(TESTS, tmp / "alerts_test.yaml")
    return tmp / "alerts_test.yaml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    """Run promtool; the result carries stdout and stderr as text."""
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


@needs_promtool
def test_promtool_checks_the_rules(tmp_path):
    stage(tmp_path)
    out = promtool("check", "rules", str(tmp_path / "alerts.yaml"))
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_promtool_unit_tests_pass(tmp_path):
    out = promtool("test", "rules", str(stage(tmp_path)))
    assert out.returncode == 0, out.stdout + out.stderr


@needs_promtool
def test_the_unit_tests_catch_a_rule_without_its_for(tmp_path):
    """Removing one ``for:`` makes the rule fire one sample after the breach: its quiet case fails."""
    text = RULES.read_text()
    broken = re.sub(r"(- alert: QuantrampDrawdownCritical\n(?:.*\n)*?)\s+for: 2m\n", r"\1\n", text, count=1)
    assert broken != text and "QuantrampDrawdownCritical" in broken
    out = promtool("test", "rules", str(stage(tmp_path, broken)))
    assert out.returncode != 0
    assert "QuantrampDrawdownCritical" in out.stdout + out.stderr


def test_every_rule_has_a_firing_and_a_quiet_promtool_case():
    cases: dict[str, dict[str, int]] = {}
    for t in yaml.safe_load(TESTS.read_text())["tests"]:
        for c in t["alert_rule_test"]:
            n = cases.setdefault(c["alertname"], {"firing": 0, "quiet": 0})
            n["firing" if c.get("exp_alerts") else "quiet"] += 1
    names = [r["alert"] for r in rules()]
    assert len(names) == len(set(names)), "duplicate alert names"
    missing = {n: cases.get(n, {"firing": 0, "quiet": 0}) for n in names
               if not cases.get(n, {}).get("firing") or not cases.get(n, {}).get("quiet")}
    assert not missing, f"rules without a firing and a quiet case in {TESTS.name}: {missing}"
    assert set(cases) <= set(names), f"cases for rules that do not exist: {sorted(set(cases) - set(names))}"


def _seconds(d: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+)(ms|s|m|h|d)", d))


def _slug(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_rule_has_for_severity_annotations_and_a_runbook_heading():
    anchors = {_slug(m) for m in re.findall(r"^#+ (.+)$", RUNBOOK.read_text(), flags=re.M)}
    for r in rules():
        name = r["alert"]
        assert "for" in r, f"{name}: no for: (one sample would fire it)"
        sev = r["labels"]["severity"]
        assert sev in SEVERITIES, (name, sev)
        if sev == "critical" and name not in IMMEDIATE:
            assert _seconds(r["for"]) >= 60, f"{name}: a critical alert waits at least 1m (4 scrapes at 15 s)"
        a = r["annotations"]
        assert {"summary", "description", "runbook_url"} <= set(a), name
        prefix = f"{PLACEHOLDER}/docs/runbook.md#"
        assert a["runbook_url"].startswith(prefix), name
        anchor = a["runbook_url"][len(prefix):]
        assert anchor == name.lower(), f"{name}: its runbook anchor is its own name"
        assert anchor in anchors, f"{name}: docs/runbook.md has no heading #{anchor}"


def test_only_the_kill_alerts_carry_auto_kill_switch():
    """The operator engages a strategy's kill switch on any firing alert labelled AUTO_KILL_SWITCH:
    the set is deliberate (README, operator/incident.py)."""
    kill = {r["alert"] for r in rules() if r["labels"].get("action") == "AUTO_KILL_SWITCH"}
    assert kill == {"QuantrampHardLimitBreach", "QuantrampDailyLossCritical"}


def test_localstack_loads_the_rules_with_resolved_runbook_links(localstack):
    mod = localstack
    assert mod.ALERT_RULES == RULES or os.environ.get("QR_ALERT_RULES")
    out = mod.render_alert_rules(RULES.read_text())
    assert PLACEHOLDER not in out
    assert f"{REPO.as_uri()}/docs/runbook.md#quantramphardlimitbreach" in out
    assert yaml.safe_load(out)["groups"] == yaml.safe_load(RULES.read_text().replace(PLACEHOLDER, REPO.as_uri()))["groups"]
