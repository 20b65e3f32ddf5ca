"""judgement.method: anytimeValid in the pure engine: the stream criteria are judged by their
confidence sequence (not by failureLimit counts), a defect rolls back at once naming the criterion and
the bound, a healthy challenger advances after the dwell, an undecided one applies onInconclusive at
the maximum dwell, and counter resets and scrape gaps lose nothing and pass nothing."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from quantramp.operator import engine
from quantramp.operator.engine import Evidence
from quantramp.trader.evidence import Sums

from test_engine import CHAMP, make_spec, role, started  # noqa: E402  (same tests dir)

STAGES = [
    {"name": "shadow", "capitalPercent": 0, "dwell": "300s"},
    {"name": "canary-1", "capitalPercent": 1, "dwell": "300s", "maxDrawdown": 0.02, "pnlBand": 0.1},
    {"name": "production", "capitalPercent": 100, "dwell": "0s", "maxDrawdown": 0.1, "pnlBand": 0.15},
]


def spec(**judgement):
    return make_spec(analysis={"judgement": {"method": "anytimeValid", "criteria": ["slippageRatio", "fillRatio"], **judgement},
                               "progressDeadline": "10m"}, stages=STAGES)


class Streams:
    """Per-round growing observation streams, as the trader's counters would report them."""

    def __init__(self, seed=1, slip=-0.5, slip_sd=1.0, fill_p=0.99):
        self.rng = np.random.default_rng(seed)
        self.slip, self.slip_sd, self.fill_p = slip, slip_sd, fill_p
        self.xs = {"slippageRatio": [], "fillRatio": []}

    def grow(self, k=20):
        self.xs["slippageRatio"] += list(self.rng.normal(self.slip, self.slip_sd, k))
        self.xs["fillRatio"] += list((self.rng.random(k) < self.fill_p) * 1.0 - 0.95)
        return {c: Sums.of(v) for c, v in self.xs.items()}


def ev(streams, **kw):
    return Evidence(subject=role(**kw), champion=CHAMP, critical_alerts=0, streams=streams)


def rounds(sp, st, src, n, seconds=11, k=20, gap=()):
    d = None
    now = st.last_analysis.time if st.last_analysis else st.stage_start_time
    for i in range(n):
        now += timedelta(seconds=seconds)
        streams = src.grow(k)
        d = engine.step(sp, st, ev({} if i in gap else streams), now)
        st = d.status
        if d.action not in ("hold", "none"):
            break
    return d, st


def test_a_clear_slippage_defect_rolls_back_at_once_naming_the_bound():
    sp = spec()
    _, st = started(sp)
    d, st = rounds(sp, st, Streams(slip=2.0), 10)
    assert d.action == "rollback" and st.phase == "RolledBack"
    hist = st.history[-1].reason
    assert "slippageRatio" in hist and "upper bound" in hist
    # long before the 300 s dwell: the sequence decided on the evidence
    assert st.stage == "shadow"


def test_a_failing_round_under_fixed_thresholds_is_not_enough_under_anytime_valid():
    # a fixed-threshold stage with failureLimit 0 rolls back on one round whose mean ratio is over
    # 1.5; the same evidence under anytimeValid with few observations only holds
    sp = spec()
    _, st = started(sp)
    src = Streams(slip=0.3, slip_sd=3.0)
    d, st = rounds(sp, st, src, 2, k=20)
    assert d.action == "hold" and st.phase == "Progressing"
    m = st.last_analysis.measurements["slippageRatio"]
    assert m.result in ("Continue", "InsufficientData", "Successful")


def test_a_healthy_challenger_passes_and_advances_after_the_dwell():
    sp = spec()
    _, st = started(sp)
    d, st = rounds(sp, st, Streams(), 40, seconds=11)
    assert st.stage == "canary-1", st.message
    # in canary-1 the sequence starts again from the new scope's counters
    seq = st.criteria.get("slippageRatio")
    assert seq is None or seq.sequential is None or seq.sequential.observations <= 40


def test_status_shows_the_bounds_and_the_decision():
    sp = spec()
    _, st = started(sp)
    _, st = rounds(sp, st, Streams(), 5)
    seq = st.criteria["slippageRatio"].sequential
    assert seq.observations == 100 and seq.decision in ("PASS", "CONTINUE")
    assert seq.lower is not None and seq.upper is not None and seq.lower < seq.mean < seq.upper
    assert 0 < seq.p_value <= 1 and seq.t_star >= 30
    assert seq.alpha_rollback == pytest.approx(0.05 / 4, rel=1e-3)  # 2 criteria x 2 gated stages (all but production)


def test_undecided_at_the_maximum_dwell_pauses_or_passes_as_configured():
    # mean exactly on the boundary with large noise: no decision in 600 s (2 x 300 s dwell)
    for policy, phase in (("pause", "Paused"), ("pass", "Progressing")):
        sp = spec(onInconclusive=policy, criteria=["slippageRatio"], minSamples=30)
        _, st = started(sp)
        d, st = rounds(sp, st, Streams(slip=0.0, slip_sd=50.0), 60, seconds=11, k=2)
        if policy == "pause":
            assert st.phase == "Paused" and st.stage == "shadow" and "inconclusive" in st.message.lower(), st.message
            assert st.criteria["slippageRatio"].sequential.decision == "INCONCLUSIVE"
            assert st.last_analysis.time - st.stage_start_time >= timedelta(seconds=600)
        else:
            assert d.action == "advance" and st.stage == "canary-1", st.message


def test_scrape_gaps_keep_the_evidence_and_resets_are_carried():
    sp = spec()
    _, st = started(sp)
    src = Streams()
    d, st = rounds(sp, st, src, 3, gap=(1,))
    assert st.criteria["slippageRatio"].sequential.observations == 60  # the missing round judged the sums seen so far
    # the pod restarted without its state: its counters start again; nothing is lost
    src.xs = {c: v[:0] for c, v in src.xs.items()}
    d, st = rounds(sp, st, src, 1)
    assert st.criteria["slippageRatio"].sequential.observations == 80


@pytest.mark.parametrize("policy", ["pause", "pass"])
def test_no_evidence_never_passes(policy):
    """Not even with onInconclusive pass: a challenger that never traded (0 observations) is paused for a human at
    the maximum dwell, never waved through."""
    sp = spec(onInconclusive=policy)
    _, st = started(sp)
    now = st.stage_start_time
    for _ in range(70):
        now += timedelta(seconds=11)
        st = engine.step(sp, st, ev({}), now).status
    assert st.stage == "shadow" and st.phase == "Paused", st.message  # at the maximum dwell: paused
    assert st.criteria["slippageRatio"].sequential.decision in ("INSUFFICIENT_DATA", "INCONCLUSIVE")
    if policy == "pass":
        m = st.last_analysis.measurements["slippageRatio"]
        assert m.result == "Inconclusive" and "too little evidence to pass by onInconclusive" in m.message, m


def test_plugin_status_shows_each_sequence_and_a_waved_criterion_is_said():
    from rich.console import Console

    from quantramp.operator.plugin import render_status

    sp = spec(onInconclusive="pass", criteria=["slippageRatio"])
    _, st = started(sp)
    d, st = rounds(sp, st, Streams(slip=0.0, slip_sd=50.0), 60, seconds=11, k=2)
    assert d.action == "advance" and "undecided at the maximum dwell, passed by onInconclusive" in st.history[-1].reason
    _, st = rounds(sp, st, Streams(), 2)
    obj = {"metadata": {"namespace": "ns", "name": "s"}, "spec": sp.model_dump(by_alias=True, mode="json"),
           "status": st.model_dump(by_alias=True, mode="json", exclude_none=True)}
    console = Console(width=250, record=True)
    console.print(render_status(obj))
    text = console.export_text()
    assert "slippageRatio" in text and "bounds [" in text and "alpha rollback" in text
