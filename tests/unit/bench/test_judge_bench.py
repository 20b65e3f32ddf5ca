"""Smoke run of the decision-quality benchmark ``bench/judge.py`` (issue 14 part 4): 400 ramps per
cell on a fixed seed. The P5 targets are asserted on the Wilson upper bound at N = 400 (so each
target is widened by this run's own interval width); each baseline has one assertion that shows
the benchmark can fail a policy. Targets that the current judge defaults miss are strict xfails
with the measured reason, so they turn into failures when they start passing (and get promoted
to plain assertions)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[3] / "bench" / "judge.py"
RAMPS = 400


def _load():
    spec = importlib.util.spec_from_file_location("bench_judge", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_judge"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bench():
    mod = _load()
    out = mod.run(RAMPS, seed=20261128)
    return mod, out, {t["target"]: t for t in mod.targets(out)}


def _cell(out, scenario, policy):
    return out["cells"][scenario][policy]


# targets the default judge misses (measured; see the benchmark's report): the speed of the
# slippage rollback (Bonferroni alpha_rollback over 4 criteria x 3 stages and the AR margin make
# the sequence slower than the review's 5%-per-side illustration), and false rollbacks of GOOD
# challengers by the 2% drawdown guard over a stage that P5 extends to 2x the dwell
KNOWN_MISSES = (
    "S3 slippage 2x: median time to rollback",
    "S3 slippage 2x: p90 time to rollback",
    "S3 slippage 2x AR.5: median time to rollback",
    "S3 slippage 2x AR.5: p90 time to rollback",
    "S3 slippage 3x AR.5: median time to rollback",
    "S0 identical: false rollback <= 6%",
    "S0 identical AR.5: false rollback <= 6%",
    "S1 better +1 SR: false rollback <= 6%",
    "S1 better +1 SR AR.5: false rollback <= 6%",
    "S3 slippage 1.25x: false rollback <= 6%",
    "S3 slippage 1.25x AR.5: false rollback <= 6%",
    "S9 vol x3 mid-stage: false rollback <= 6%",
    "S9 vol x3 mid-stage AR.5: false rollback <= 6%",
    # rare tail losses (2% of 30-minute blocks): only the drawdown guard sees them; no mean test
    # resolves 0.26 events a day within a ramp
    "S6b tail 2% of blocks x -15sd: false promotion",
    "S6b tail 2% of blocks x -15sd AR.5: false promotion",
)


def _known_miss(name: str) -> bool:
    return any(name.startswith(k) for k in KNOWN_MISSES)


def test_p5_targets_that_hold(bench):
    _, _, tg = bench
    assert len(tg) >= 35  # every scored scenario has at least one target
    bad = {k: v["value"] for k, v in tg.items() if not _known_miss(k) and not v["met"]}
    assert not bad, bad
    # the false-promotion targets all hold, except rare tail losses (S6b, a stated miss)
    assert all(v["met"] for k, v in tg.items() if ("false promotion" in k or "zero promotions" in k) and not k.startswith("S6b"))


@pytest.mark.xfail(strict=True, reason="measured miss of the default judge: slow slippage rollback; "
                   "drawdown-guard false rollbacks of GOOD challengers over the extended stage")
def test_p5_targets_known_misses(bench):
    _, _, tg = bench
    missed = [k for k, v in tg.items() if _known_miss(k)]
    assert missed and all(tg[k]["met"] for k in missed)


def test_p5_never_promotes_without_evidence(bench):
    _, out, _ = bench
    for s in ("S8 no evidence", "S8 faults + 2x slippage", "S8 faults + 2x slippage AR.5"):
        assert _cell(out, s, "P5")["promote"][0] == 0.0


def test_baselines_can_fail(bench):
    _, out, _ = bench
    # Argo- and Flagger-style windowed thresholds roll back healthy challengers
    for pol in ("P1-L0", "P1-L3", "P2"):
        assert _cell(out, "S0 identical", pol)["rollback"][1] > 0.5, pol
    # the runbook's end-of-dwell check always takes the full dwell for a 2x slippage defect
    assert _cell(out, "S3 slippage 2x", "P0")["t_rollback_h"][0] >= 32.5
    # and promotes rare tail risk whenever no tail loss happened to hit the drawdown cap
    assert _cell(out, "S6b tail 2% of blocks x -15sd", "P0")["promote"][1] > 0.06
    # Kayenta's rank test is blind to the fidelity gap and to autocorrelation
    assert _cell(out, "S7 fidelity gap -20%", "P3")["promote"][1] > 0.06
    assert _cell(out, "S3 slippage 2x AR.5", "P3")["promote"][1] > 0.06


def test_cells_are_complete_and_consistent(bench):
    mod, out, _ = bench
    for name, row in out["cells"].items():
        assert set(row) == set(mod.POLICIES)
        for c in row.values():
            total = c["promote"][0] + c["rollback"][0] + c["inconclusive"][0] + c["rejected"]
            assert total == pytest.approx(1.0, abs=1e-3), name
            assert c["n"] == RAMPS
