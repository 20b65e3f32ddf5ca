"""Kill-channel messages, the in-memory latch and the acknowledgement body (no Redis)."""

from __future__ import annotations

import json

import pytest

from quantramp.trader import killswitch as ks
from quantramp.trader.state import Keys


def test_parse_kill_message():
    cmd = ks.parse(b'{"reason": "drawdown 10%", "flatten": true, "id": "abc", "ts": 1700000000.5}')
    assert cmd == ks.KillCommand("kill", reason="drawdown 10%", flatten=True, id="abc", sent_at=1700000000.5)
    assert ks.parse(cmd.to_json()) == cmd


@pytest.mark.parametrize("raw", ["unkill", "UNKILL", '{"action": "unkill", "id": "u"}'])
def test_parse_unkill(raw):
    assert ks.parse(raw).action == "unkill"


def test_bare_kill_defaults():
    cmd = ks.parse("kill")
    assert cmd.action == "kill" and cmd.flatten is False and cmd.sent_at is None


@pytest.mark.parametrize(
    "raw", ["nope", "[1, 2]", '{"action": "pause"}', '{"flatten": "yes"}', "{not json"],
)
def test_bad_messages_are_rejected(raw):
    with pytest.raises(ks.BadKillMessage):
        ks.parse(raw)


def test_latch_engages_and_releases():
    latch = ks.KillLatch()
    assert not latch.engaged and not latch.flatten
    assert latch.apply(ks.KillCommand("kill", flatten=False)) is True
    assert latch.engaged and not latch.flatten
    assert latch.apply(ks.KillCommand("kill", flatten=False)) is False  # idempotent
    assert latch.apply(ks.KillCommand("kill", flatten=True)) is True and latch.flatten
    assert latch.apply(ks.KillCommand("unkill")) is True and not latch.engaged
    assert latch.apply(ks.KillCommand("unkill")) is False


def test_ack_body_measures_propagation():
    cmd = ks.KillCommand("kill", reason="r", flatten=True, id="k", sent_at=100.0)
    body = ks.ack_body(cmd, "champion", received_at=100.01, acked_at=100.02)
    assert body["latency_s"] == pytest.approx(0.02) and body["role"] == "champion" and body["id"] == "k"
    json.dumps(body)
    assert ks.ack_body(ks.KillCommand("kill"), "champion", 1.0, 2.0)["latency_s"] is None


def test_key_names():
    k = Keys("trading", "aapl-meanrev", "challenger")
    assert k.book("2026-07-29") == "quantramp:trading:aapl-meanrev:challenger:2026-07-29:book"
    assert k.current == "quantramp:trading:aapl-meanrev:challenger:current"
    assert k.kill == "quantramp:trading:aapl-meanrev:kill"
    assert k.kill_ack() == "quantramp:trading:aapl-meanrev:kill:ack:challenger"
    assert k.kill_ack("champion") == "quantramp:trading:aapl-meanrev:kill:ack:champion"
