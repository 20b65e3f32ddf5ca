"""Unit tests of the pure canary engine (quantramp.operator.engine)."""

from datetime import datetime, timedelta, timezone

import pytest

from quantramp.operator import engine
from quantramp.operator.engine import Evidence, RoleEvidence
from quantramp.operator.models import TradingStrategySpec

T0 = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)


def make_spec(**overrides):
    raw = {
        "model": {"name": "m", "version": "2"},
        "capitalUsd": 100_000,
        "stages": [
            {"name": "shadow", "capitalPercent": 0, "dwell": "30s"},
            {"name": "canary-1", "capitalPercent": 1, "dwell": "30s", "maxDrawdown": 0.02, "pnlBand": 0.1},
            {"name": "canary-2", "capitalPercent": 5, "dwell": "30s", "maxDrawdown": 0.03, "pnlBand": 0.1},
            {"name": "production", "capitalPercent": 100, "dwell": "0s", "maxDrawdown": 0.1, "pnlBand": 0.15},
        ],
        "analysis": {"interval": "10s", "criteria": {"minTrades": 5}},
    }
    raw.update(overrides)
    return TradingStrategySpec.model_validate(raw)


def good(**kw):
    base = dict(
        pnl_usd=100.0,
        simulated_pnl_usd=102.0,
        drawdown_ratio=0.005,
        slippage_realized_bps=1.1,
        slippage_modeled_bps=1.0,
        fill_ratio=0.99,
        precision_ratio=0.54,
        trades=30,
        capital_usd=1000.0,
    )
    base.update(kw)
    return RoleEvidence(**base)


CHAMP = RoleEvidence(precision_ratio=0.53, trades=40, capital_usd=99_000)


def evidence(**kw):
    return Evidence(challenger=good(**kw), champion=CHAMP)


def started(spec=None, champion="1"):
    spec = spec or make_spec()
    return spec, engine.start(spec, champion, T0, 1)


def test_start_pins_versions_and_enters_first_stage():
    spec, d = started()
    assert d.action == "start"
    s = d.status
    assert (s.phase, s.stage, s.stage_index, s.capital_percent) == ("Progressing", "shadow", 0, 0)
    assert (s.champion_version, s.challenger_version) == ("1", "2")
    assert engine.SetAlias("m", "challenger", "2") in d.effects
    assert engine.ApplyWorkloads() in d.effects


def test_no_analysis_before_interval():
    spec, d = started()
    out = engine.decide(spec, d.status, evidence(), T0 + timedelta(seconds=9))
    assert out.action == "none" and out.status == d.status


def test_holds_during_dwell_even_when_passing():
    spec, d = started()
    out = engine.decide(spec, d.status, evidence(), T0 + timedelta(seconds=10))
    assert out.action == "hold"
    assert out.status.last_analysis.verdict == "Successful"
    assert "dwelling" in out.status.message


def test_advances_after_dwell_when_all_pass():
    spec, d = started()
    out = engine.decide(spec, d.status, evidence(), T0 + timedelta(seconds=31))
    assert out.action == "advance"
    assert (out.status.stage, out.status.capital_percent) == ("canary-1", 1)
    assert out.status.stage_start_time == T0 + timedelta(seconds=31)
    assert engine.ApplyWorkloads() in out.effects


def test_insufficient_data_holds_and_never_promotes():
    spec, d = started()
    status = d.status
    for k in range(1, 20):
        out = engine.decide(spec, status, evidence(trades=2), T0 + timedelta(seconds=31 * k))
        assert out.action == "hold"
        assert out.status.last_analysis.message.startswith("InsufficientData")
        status = out.status
    assert status.stage == "shadow"
    cond = {c.type: c for c in status.conditions}["AnalysisPassing"]
    assert (cond.status, cond.reason) == ("Unknown", "InsufficientData")


def test_missing_challenger_evidence_is_inconclusive():
    spec, d = started()
    out = engine.decide(spec, d.status, Evidence(), T0 + timedelta(seconds=60))
    assert out.action == "hold" and out.status.last_analysis.verdict == "Inconclusive"


def test_measurement_error_holds():
    spec, d = started()
    out = engine.decide(spec, d.status, Evidence(error="connection refused"), T0 + timedelta(seconds=60))
    assert out.action == "hold" and out.status.last_analysis.verdict == "Error"


def _at_canary1(spec):
    _, d = started(spec)
    return engine.decide(spec, d.status, evidence(), T0 + timedelta(seconds=31)).status


@pytest.mark.parametrize(
    "bad,criterion",
    [
        ({"drawdown_ratio": 0.025}, "drawdown"),
        ({"pnl_usd": 50.0, "simulated_pnl_usd": 100.0}, "pnlDeviation"),
        ({"slippage_realized_bps": 1.6}, "slippageRatio"),
        ({"fill_ratio": 0.9}, "fillRatio"),
        ({"precision_ratio": 0.45}, "precisionRatio"),
    ],
)
def test_each_criterion_failure_rolls_back(bad, criterion):
    spec = make_spec()
    s1 = _at_canary1(spec)
    now = T0 + timedelta(seconds=45)
    out = engine.decide(spec, s1, evidence(**bad), now)
    assert out.action == "rollback"
    assert out.status.phase == "RolledBack"
    assert out.status.last_analysis.measurements[criterion].result == "Failed"
    tags = [e for e in out.effects if isinstance(e, engine.TagVersion)]
    assert tags and tags[0].version == "2" and tags[0].tags["quantramp.status"] == "rejected"
    assert criterion in tags[0].tags["quantramp.rejected_reason"]
    assert engine.SetAlias("m", "champion", "1") in out.effects
    assert engine.RemoveAlias("m", "challenger") in out.effects
    assert any(isinstance(e, engine.RecordEvent) and e.type == "Warning" for e in out.effects)


def test_critical_alert_rolls_back():
    spec = make_spec()
    s1 = _at_canary1(spec)
    ev = Evidence(challenger=good(), champion=CHAMP, critical_alerts=1)
    out = engine.decide(spec, s1, ev, T0 + timedelta(seconds=45))
    assert out.action == "rollback"


def test_pnl_floor_keeps_tiny_simulated_pnl_from_failing():
    spec = make_spec()
    s1 = _at_canary1(spec)
    # simulated 0.10 USD, live 0.40 USD: 300% off, but 0.30 USD is 6% of the 5 USD floor (0.5% of 1000)
    out = engine.decide(spec, s1, evidence(pnl_usd=0.4, simulated_pnl_usd=0.1), T0 + timedelta(seconds=45))
    m = out.status.last_analysis.measurements["pnlDeviation"]
    assert m.result == "Successful" and m.value == pytest.approx(0.06)


def test_failure_limit_tolerates_then_rolls_back():
    spec = make_spec(analysis={"interval": "10s", "failureLimit": 1, "criteria": {"minTrades": 5}})
    s1 = _at_canary1(spec)
    first = engine.decide(spec, s1, evidence(fill_ratio=0.5), T0 + timedelta(seconds=45))
    assert first.action == "hold" and first.status.consecutive_failures == 1
    second = engine.decide(spec, first.status, evidence(fill_ratio=0.5), T0 + timedelta(seconds=60))
    assert second.action == "rollback"


def test_success_resets_failure_count():
    spec = make_spec(analysis={"interval": "10s", "failureLimit": 1, "criteria": {"minTrades": 5}})
    s1 = _at_canary1(spec)
    first = engine.decide(spec, s1, evidence(fill_ratio=0.5), T0 + timedelta(seconds=45))
    ok = engine.decide(spec, first.status, evidence(), T0 + timedelta(seconds=56))
    assert ok.status.consecutive_failures == 0


def test_full_ramp_promotes_and_moves_champion_alias():
    spec, d = started()
    status, t = d.status, T0
    actions = []
    for _ in range(3):
        t += timedelta(seconds=31)
        out = engine.decide(spec, status, evidence(), t)
        actions.append(out.action)
        status = out.status
    assert actions == ["advance", "advance", "promote"]
    assert (status.phase, status.stage, status.capital_percent) == ("Promoted", "production", 100)
    assert status.champion_version == "2"
    assert engine.SetAlias("m", "champion", "2") in out.effects
    assert engine.RemoveAlias("m", "challenger") in out.effects
    assert engine.TagVersion("m", "1", {"quantramp.last_known_good": "true"}) in out.effects
    conds = {c.type: c.status for c in status.conditions}
    assert conds["Promoted"] == "True" and conds["Progressing"] == "False"
    # terminal: further analyses do nothing
    assert engine.decide(spec, status, evidence(), t + timedelta(hours=1)).action == "none"


def test_promotion_without_champion_has_no_last_known_good_tag():
    spec, d = started(champion=None)
    status, t = d.status, T0
    # no champion precision: the precision criterion is inconclusive, so the ramp holds
    out = engine.decide(spec, status, Evidence(challenger=good()), t + timedelta(seconds=31))
    assert out.action == "hold"
    assert out.status.last_analysis.measurements["precisionRatio"].result == "Inconclusive"


def test_condition_transition_time_moves_only_on_status_change():
    conds = engine.set_condition([], "X", "True", "A", "", T0, 1)
    same = engine.set_condition(conds, "X", "True", "B", "", T0 + timedelta(hours=1), 1)
    assert same[0].last_transition_time == T0 and same[0].reason == "B"
    moved = engine.set_condition(same, "X", "False", "C", "", T0 + timedelta(hours=2), 1)
    assert moved[0].last_transition_time == T0 + timedelta(hours=2)


def test_status_outside_stages_raises():
    spec, d = started()
    bad = d.status.model_copy(update={"stage_index": 7})
    with pytest.raises(ValueError, match="outside"):
        engine.decide(spec, bad, evidence(), T0 + timedelta(minutes=5))


def test_effects_round_trip_through_the_status_outbox():
    spec, d = started()
    s1 = engine.decide(spec, d.status, evidence(), T0 + timedelta(seconds=31)).status
    out = engine.decide(spec, s1, evidence(drawdown_ratio=0.5), T0 + timedelta(seconds=45))
    raw = [engine.effect_to_dict(e) for e in out.effects]
    import json

    assert [engine.effect_from_dict(json.loads(json.dumps(r))) for r in raw] == out.effects
    with pytest.raises(ValueError, match="unknown effect"):
        engine.effect_from_dict({"effect": "LaunchMissiles"})
