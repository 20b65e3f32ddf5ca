"""Slack notices (quantramp.operator.notify): the pure notice and Block Kit payload, and the real
slack_sdk clients against the fake Slack in hack/fake_slack.py on an ephemeral loopback port."""

from __future__ import annotations

import socket
import time
from datetime import datetime, timedelta, timezone

import fake_slack
import pytest

from quantramp.operator import notify
from quantramp.operator.models import (
    AnalysisResult, HistoryRecord, Measurement, Ramp, ReducedSizing, TradingStrategyStatus, default_stages,
)
from quantramp.operator.notify import Notice, NotifyError, Slack, notice, slack_payload

T0 = datetime(2026, 11, 2, 15, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(hours=2)


def status(phase="RolledBack", failed=("slippageRatio",), extra=None, event="RolledBack", reason="slippageRatio 2.1 > 1.5",
           by="operator"):
    """A status of ramp r3 of aapl v3 against champion v2, in stage canary-1 (1%), after ``event``."""
    ms = {
        "slippageRatio": Measurement(value=2.1, threshold=1.5, result="Successful"),
        "fillRatio": Measurement(value=0.97, threshold=0.95, result="Successful"),
        "drawdown": Measurement(value=0.004, threshold=0.02, result="Successful"),
        "criticalAlerts": Measurement(value=0, threshold=0, result="Successful"),
    }
    for name in failed:
        ms[name] = ms[name].model_copy(update={"result": "Failed"})
    ms.update(extra or {})
    return TradingStrategyStatus(
        phase=phase, stage="canary-1", stage_index=1, capital_percent=1, champion_version="2", challenger_version="3",
        ramp=Ramp(id="r3", number=3, model="aapl", candidate_version="3", champion_version="2", stages=default_stages(),
                  stages_hash="h", started_at=T0),
        seq=7,
        last_analysis=AnalysisResult(time=T1, verdict="Failed" if failed else "Successful", measurements=ms),
        reduced_sizing=ReducedSizing(percent=10, since=T1, reason="rolled back") if phase == "RolledBack" else None,
        history=[
            HistoryRecord(seq=5, time=T0, event="RampStarted:NewVersion", from_phase="Promoted", to_phase="Progressing",
                          stage="shadow"),
            HistoryRecord(seq=7, time=T1, event=event, from_phase="Progressing", to_phase=phase, stage="canary-1",
                          by=by, reason=reason),
        ],
        message=f"rolled back aapl v3 in Progressing stage canary-1: {reason}; champion back to v2",
    )


# --- pure ------------------------------------------------------------------------------------

def test_rollback_notice_carries_versions_stage_and_only_the_failed_measurement_with_its_threshold():
    n = notice("RolledBack", "trading", "aapl-trend", status(), link="https://grafana/x")
    f = dict(n.fields)
    assert f["Model"] == "aapl v3"
    assert f["Champion"] == "v2"
    assert f["Stage"] == "canary-1 1%"
    assert f["By"] == "operator"
    assert f["slippageRatio"] == "2.1 (threshold 1.5)"
    assert "fillRatio" not in f and "drawdown" not in f
    assert f["Champion sizing"] == "10% of capital until cleared"
    assert n.severity == "warning"
    assert n.title == "trading/aapl-trend: rolled back aapl v3 at canary-1"
    assert "\n" not in n.title
    assert "slippageRatio 2.1 > 1.5" in n.text
    assert n.link == "https://grafana/x"


def test_rollback_on_a_safety_criterion_is_critical_and_kill_engaged_is_critical():
    assert notice("RolledBack", "ns", "s", status(failed=("drawdown",))).severity == "critical"
    assert notice("RolledBack", "ns", "s", status(failed=("criticalAlerts",))).severity == "critical"
    assert notice("KillEngaged", "ns", "s", status()).severity == "critical"
    assert notice("Aborted", "ns", "s", status(phase="Aborted", event="Aborted")).severity == "info"


def test_stage_advanced_lists_every_measurement_and_is_info():
    st = status(phase="Progressing", failed=(), event="StageAdvanced", reason="all criteria passed", by="alice")
    n = notice("StageAdvanced", "ns", "s", st)
    f = dict(n.fields)
    assert {"slippageRatio", "fillRatio", "drawdown", "criticalAlerts"} <= set(f)
    assert f["fillRatio"] == "0.97 (threshold 0.95)"
    assert f["By"] == "alice"
    assert "Champion sizing" not in f
    assert n.severity == "info"


def test_paused_lists_the_inconclusive_criterion_with_its_result():
    extra = {"precisionRatio": Measurement(value=0.88, threshold=0.9, result="Inconclusive")}
    n = notice("Paused", "ns", "s", status(phase="Paused", failed=(), extra=extra, event="Paused"))
    f = dict(n.fields)
    assert f["precisionRatio"] == "0.88 (threshold 0.9), Inconclusive"
    assert "fillRatio" not in f


def test_sizing_cleared_and_ramp_started_carry_no_measurements():
    for kind in ("SizingCleared", "RampStarted", "KillReleased"):
        n = notice(kind, "ns", "s", status(phase="Progressing", failed=()))
        assert not {"slippageRatio", "fillRatio"} & set(dict(n.fields)), kind
        assert n.severity == "info"


def test_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown notice kind"):
        notice("Exploded", "ns", "s", status())


def test_payload_respects_slack_limits_and_escapes_mrkdwn():
    n = Notice(kind="RolledBack", namespace="ns", strategy="s", title="T" * 400, text="a < b & c > d " * 400,
               fields=tuple((f"crit{i}", "x" * 3000) for i in range(15)), severity="critical", link="https://l/1")
    p = slack_payload(n)
    header, section, context = p["blocks"]
    assert header["type"] == "header" and len(header["text"]["text"]) <= 150
    assert len(section["fields"]) == 10
    assert all(len(f["text"]) <= 2000 for f in section["fields"])
    assert section["fields"][-1]["text"].startswith("*More*")
    assert "crit14" in section["fields"][-1]["text"]
    assert len(section["text"]["text"]) <= 3000
    assert "&lt;" in section["text"]["text"] and "<" not in section["text"]["text"]
    ctx = context["elements"][0]["text"]
    assert "ns/s" in ctx and "<https://l/1|details>" in ctx
    assert p["text"].startswith("T")


def test_payload_fields_show_label_and_value():
    p = slack_payload(notice("RolledBack", "ns", "s", status()))
    texts = [f["text"] for f in p["blocks"][1]["fields"]]
    assert "*slippageRatio*\n2.1 (threshold 1.5)" in texts
    assert "*Model*\naapl v3" in texts


# --- Slack against the fake ------------------------------------------------------------------

@pytest.fixture
def fake():
    f = fake_slack.serve()
    yield f
    f.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_web_api_post_arrives_with_the_blocks(fake):
    n = notice("RolledBack", "trading", "aapl-trend", status())
    ts = Slack.web(fake.token, "#trading-alerts", base_url=fake.api_url).post(n)
    assert ts
    [m] = fake.messages
    assert m["ts"] == ts and m["channel"] == fake.channels["trading-alerts"]
    assert m["blocks"] == slack_payload(n)["blocks"]
    assert "rolled back aapl v3" in m["text"]


def test_an_oversized_notice_is_accepted_by_the_fake_that_checks_block_limits(fake):
    big = Notice(kind="Paused", namespace="ns", strategy="s", title="x" * 500, text="y" * 9000,
                 fields=tuple((f"c{i}", "z" * 5000) for i in range(30)))
    assert Slack.web(fake.token, "trading-alerts", base_url=fake.api_url).post(big)
    # the fake does check: a raw over-limit payload is refused
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError
    with pytest.raises(SlackApiError, match="invalid_blocks"):
        WebClient(token=fake.token, base_url=fake.api_url).chat_postMessage(
            channel="trading-alerts", text="t", blocks=[{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}])


def test_rate_limited_twice_then_ok_succeeds_thanks_to_the_retry_handler(fake):
    fake.rate_limit_next(2)
    t = time.monotonic()
    ts = Slack.web(fake.token, "trading-alerts", base_url=fake.api_url).post(notice("Promoted", "ns", "s", status(failed=())))
    assert ts and len(fake.messages) == 1
    assert [s for _, p, s in fake.requests if p == "/api/chat.postMessage"] == [429, 429, 200]
    assert time.monotonic() - t >= 2  # waited Retry-After: 1 twice


def test_rate_limited_without_retries_fails(fake):
    fake.rate_limit_next(1)
    with pytest.raises(NotifyError, match="ratelimited"):
        Slack.web(fake.token, "trading-alerts", base_url=fake.api_url, retries=0).post(notice("Promoted", "ns", "s", status()))
    assert fake.messages == []


def test_bad_token_and_unknown_channel_raise_notify_error_without_the_token(fake):
    with pytest.raises(NotifyError, match="invalid_auth") as e:
        Slack.web("xoxb-wrong-secret", "trading-alerts", base_url=fake.api_url).post(notice("Paused", "ns", "s", status()))
    assert "xoxb-wrong-secret" not in str(e.value)
    with pytest.raises(NotifyError, match="channel_not_found"):
        Slack.web(fake.token, "#nowhere", base_url=fake.api_url).post(notice("Paused", "ns", "s", status()))
    assert fake.messages == []


def test_webhook_mode_posts_and_returns_empty_ts(fake):
    n = notice("KillEngaged", "ns", "s", status())
    assert Slack.webhook(fake.webhook_url).post(n) == ""
    [m] = fake.messages
    assert m["api"] == "webhook" and m["blocks"] == slack_payload(n)["blocks"]


def test_webhook_rate_limit_is_retried_and_failures_hide_the_url(fake):
    fake.rate_limit_next(1)
    assert Slack.webhook(fake.webhook_url).post(notice("KillReleased", "ns", "s", status())) == ""
    fake.rate_limit_next(1)
    with pytest.raises(NotifyError, match="HTTP 429") as e:
        Slack.webhook(fake.webhook_url, retries=0).post(notice("KillReleased", "ns", "s", status()))
    assert "fakewebhooksecret" not in str(e.value)
    url = f"http://127.0.0.1:{closed_port()}/services/T1/B1/topsecretpart"
    with pytest.raises(NotifyError, match="unreachable") as e:
        Slack.webhook(url).post(notice("KillReleased", "ns", "s", status()))
    assert "topsecretpart" not in str(e.value)


def test_slack_down_fails_fast_with_notify_error():
    t = time.monotonic()
    with pytest.raises(NotifyError, match="unreachable"):
        Slack.web("xoxb-x", "c", base_url=f"http://127.0.0.1:{closed_port()}/api/").post(notice("Paused", "ns", "s", status()))
    assert time.monotonic() - t < notify.TIMEOUT_S


def test_from_env(fake):
    assert Slack.from_env({}) is None
    web = Slack.from_env({"QR_SLACK_BOT_TOKEN": fake.token, "QR_SLACK_CHANNEL": "quantramp",
                          "QR_SLACK_BASE_URL": fake.api_url, "QR_SLACK_WEBHOOK_URL": fake.webhook_url})
    assert web is not None and web.post(notice("Promoted", "ns", "s", status())) != ""
    hook = Slack.from_env({"QR_SLACK_WEBHOOK_URL": fake.webhook_url})
    assert hook is not None and hook.post(notice("Promoted", "ns", "s", status())) == ""
    assert [m["api"] for m in fake.messages] == ["chat.postMessage", "webhook"]
    with pytest.raises(NotifyError, match="QR_SLACK_CHANNEL"):
        Slack.from_env({"QR_SLACK_BOT_TOKEN": fake.token})
    default = Slack.from_env({"QR_SLACK_BOT_TOKEN": "xoxb-1", "QR_SLACK_CHANNEL": "c"})
    assert default is not None and default.client.base_url == "https://slack.com/api/"
