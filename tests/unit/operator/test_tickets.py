"""JIRA post-mortems (quantramp.operator.tickets): the pure seed 003 §6 template filled in from the
status, and the real jira client against the fake JIRA in hack/fake_jira.py on an ephemeral
loopback port (never a duplicate ticket, never a duplicate comment, fast failure)."""

from __future__ import annotations

import socket
import time
from datetime import datetime, timedelta, timezone

import fake_jira
import pytest

from quantramp.operator import tickets
from quantramp.operator.models import (
    Allocation, AnalysisResult, EffectRecord, HistoryRecord, Measurement, Ramp, ReducedSizing, RoleAllocation,
    TradingStrategyStatus, default_stages,
)
from quantramp.operator.tickets import Jira, Ticket, TicketError, postmortem, ticket_label

UID = "3f2a9c4e-1b7d-4e8a-9c1f-0a2b3c4d5e6f"
T0 = datetime(2026, 10, 1, 14, 30, tzinfo=timezone.utc)
T_ADV = T0 + timedelta(days=30)
T_RB = T_ADV + timedelta(days=2, hours=3)
NOW = T_RB + timedelta(hours=1, minutes=5, seconds=7)


def rolled_back() -> TradingStrategyStatus:
    """Ramp r3 of aapl v3 (champion v2) rolled back at canary-1 in transition r3.7 (slippage)."""
    return TradingStrategyStatus(
        phase="RolledBack", stage="canary-1", stage_index=1, capital_percent=1, champion_version="2",
        challenger_version="3", seq=7,
        ramp=Ramp(id="r3", number=3, model="aapl", candidate_version="3", champion_version="2", stages=default_stages(),
                  stages_hash="h", started_at=T0),
        allocation=Allocation(champion=RoleAllocation(version="2", capital_percent=10, replicas=1),
                              challenger=RoleAllocation(version=None, capital_percent=0, replicas=0)),
        last_analysis=AnalysisResult(time=T_RB, verdict="Failed", message="1 criterion failed", measurements={
            "fillRatio": Measurement(value=0.97, threshold=0.95, result="Successful"),
            "drawdown": Measurement(value=0.004, threshold=0.02, result="Successful"),
            "slippageRatio": Measurement(value=2.1, threshold=1.5, result="Failed", message="realised 2.1x modelled"),
            "precisionRatio": Measurement(value=None, threshold=0.9, result="InsufficientData"),
        }),
        reduced_sizing=ReducedSizing(percent=10, since=T_RB, reason="rolled back"),
        history=[
            HistoryRecord(seq=2, time=T0 - timedelta(days=40), event="Promoted", from_phase="Progressing",
                          to_phase="Promoted", stage="production", reason="previous ramp r2"),
            HistoryRecord(seq=5, time=T0, event="RampStarted:NewVersion", from_phase="Promoted", to_phase="Progressing",
                          stage="shadow", reason="ramp r3 (NewVersion): aapl v3 against champion v2"),
            HistoryRecord(seq=6, time=T_ADV, event="StageAdvanced", from_phase="Progressing", to_phase="Progressing",
                          stage="canary-1", by="alice", reason="all criteria passed | dwell 30d"),
            HistoryRecord(seq=7, time=T_RB, event="RolledBack", from_phase="Progressing", to_phase="RolledBack",
                          stage="canary-1", reason="slippageRatio 2.1 > 1.5"),
        ],
        effects=[
            EffectRecord(id="r3.7.0", kind="TagVersion", model="aapl", version="3", state="Done", attempts=1,
                         tags={"quantramp.status": "rejected", "quantramp.rejected_reason": "x", "quantramp.ramp": "r3"}),
            EffectRecord(id="r3.7.1", kind="SetAlias", model="aapl", alias="champion", version="2", state="Done", attempts=1),
            EffectRecord(id="r3.7.2", kind="RemoveAlias", model="aapl", alias="challenger", state="Pending", attempts=2),
            EffectRecord(id="r3.7.3", kind="RecordEvent", type="Warning", reason="RolledBack", must=False),
        ],
        message="rolled back aapl v3 in Progressing stage canary-1: slippageRatio 2.1 > 1.5; champion back to v2",
    )


def pm(**kw) -> Ticket:
    args = dict(namespace="trading", strategy="aapl-trend", uid=UID, status=rolled_back(), transition="r3.7",
                trigger="slippageRatio 2.1 > 1.5", severity="warning", impact_usd=-1234.5, now=NOW)
    args.update(kw)
    return postmortem(**args)


def section(desc: str, name: str) -> str:
    start = desc.index(f"h2. {name}")
    nxt = desc.find("\nh2. ", start + 1)
    return desc[start: nxt if nxt > 0 else len(desc)]


# --- labels and the template (pure) ----------------------------------------------------------

def test_ticket_label_is_deterministic_and_jira_safe():
    assert ticket_label(UID, "r3.7") == "quantramp-3f2a9c4e1b7d-r3-7"
    assert ticket_label(UID.upper(), "r3.7") == ticket_label(UID, "r3.7")
    assert ticket_label(UID, "r3.8") != ticket_label(UID, "r3.7")
    assert " " not in ticket_label(UID, "r 3 . 7")
    with pytest.raises(ValueError):
        ticket_label("", "r3.7")
    with pytest.raises(ValueError):
        ticket_label(UID, "")


def test_postmortem_has_every_section_of_the_seed_template():
    t = pm()
    for name in ("Incident details", "Timeline", "Analysis", "Model versions", "Actions", "Lessons learned", "Links"):
        assert f"h2. {name}" in t.description, name
    assert "*What happened?*" in t.description and "*Why wasn't it caught earlier?*" in t.description
    assert t.summary == "[quantramp] trading/aapl-trend rolled back aapl v3 at canary-1: slippageRatio 2.1 > 1.5"
    assert t.labels == ("quantramp", "quantramp-3f2a9c4e1b7d-r3-7", "strategy-aapl-trend")
    assert t.key_label == t.labels[1]
    assert t.priority == "High"
    assert pm(severity="critical").priority == "Highest"


def test_incident_details_date_duration_severity_impact_root_cause():
    d = section(pm().description, "Incident details")
    assert "|Date/Time|2026-11-02 17:30:00 UTC|" in d
    assert "|Duration|1h 5m 7s so far" in d
    assert "|Severity|warning|" in d
    assert "|Impact|-1,234.50 USD|" in d
    assert "|Root Cause|to be determined by the on-call engineer (template)|" in d
    assert "|Impact|unknown: no P&L series|" in section(pm(impact_usd=None).description, "Incident details")


def test_duration_falls_back_to_the_ramp_start_when_the_transition_is_not_in_the_history():
    d = section(pm(transition="r3.99").description, "Incident details")
    assert "|Date/Time|2026-10-01 14:30:00 UTC|" in d
    assert "|Duration|32d 4h 5m so far" in d


def test_timeline_lists_the_records_of_the_current_ramp_only_with_escaped_cells():
    tl = section(pm().description, "Timeline")
    rows = [line for line in tl.splitlines() if line.startswith("|") and not line.startswith("||")]
    assert len(rows) == 3  # RampStarted, StageAdvanced, RolledBack; not the previous ramp's Promoted
    assert rows[0].startswith("|2026-10-01 14:30:00 UTC|RampStarted:NewVersion|Promoted → Progressing|shadow|operator|")
    assert rows[1] == r"|2026-10-31 14:30:00 UTC|StageAdvanced|Progressing → Progressing|canary-1|alice|all criteria passed \| dwell 30d|"
    assert rows[2].startswith("|2026-11-02 17:30:00 UTC|RolledBack|Progressing → RolledBack|canary-1|operator|slippageRatio")
    assert "previous ramp r2" not in tl


def test_analysis_table_puts_the_failing_criterion_first_with_value_and_threshold():
    an = section(pm().description, "Analysis")
    rows = [line for line in an.splitlines() if line.startswith("|") and not line.startswith("||")]
    assert rows[0] == "|slippageRatio|2.1|1.5|Failed|realised 2.1x modelled|"
    assert "|precisionRatio|n/a|0.9|InsufficientData|-|" in rows
    assert "|fillRatio|0.97|0.95|Successful|-|" in rows
    assert "verdict Failed" in an


def test_model_versions_and_actions_come_from_the_status():
    desc = pm().description
    mv = section(desc, "Model versions")
    assert "|Model|aapl|" in mv and "|Candidate (challenger)|v3|" in mv
    assert "|Champion / last known good|v2|" in mv and "|Ramp|r3 started 2026-10-01 14:30:00 UTC|" in mv
    act = section(desc, "Actions")
    assert "|Challenger stopped (0 replicas, 0% of capital)|quantramp operator|-|done|" in act
    assert "|aapl v3 tagged quantramp.status=rejected, quantramp.ramp=r3|quantramp operator|-|done|" in act
    assert "|aapl alias champion set to v2 (restored)|quantramp operator|-|done|" in act
    assert "|aapl alias challenger removed|quantramp operator|-|pending (2 attempts so far)|" in act
    assert "at most 10% of the capital until cleared" in act
    assert "Kill switch not engaged" in act
    from quantramp.operator.models import KillState

    killed = rolled_back().model_copy(update={"kill_switch": KillState(
        engaged=True, reason="drawdown 0.5 > 0.03", by="quantramp-operator", trigger="Rollback", since=NOW, command_id="r3.7.1",
        latency_seconds=0.012)})
    act = section(pm(severity="critical", status=killed).description, "Actions")
    assert "Kill switch engaged (Rollback: drawdown 0.5 > 0.03), last acknowledgement 0.012 s after the broadcast" in act
    links = section(desc, "Links")
    assert "kubectl quantramp status aapl-trend -n trading" in links


def test_summary_is_one_line_and_cut():
    t = pm(trigger="x" * 500 + "\nsecond line")
    assert "\n" not in t.summary and len(t.summary) <= 255
    assert t.summary.endswith("x" * 120)


# --- the JIRA client against the fake --------------------------------------------------------

@pytest.fixture
def fake():
    f = fake_jira.serve(user="ops@example.com")
    yield f
    f.stop()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_find_or_create_twice_files_one_ticket(fake):
    j = Jira.connect(fake.url, "QR", fake.token)
    t = pm(severity="critical")
    assert j.find_or_create(t) == ("QR-1", True)
    # an operator that crashed before recording the key: a new client finds the ticket by label
    assert Jira.connect(fake.url, "QR", fake.token).find_or_create(t) == ("QR-1", False)
    assert list(fake.tickets) == ["QR-1"]
    f = fake.tickets["QR-1"]["fields"]
    assert f["labels"] == list(t.labels) and f["priority"]["name"] == "Highest"
    assert f["issuetype"]["name"] == "Task" and f["summary"] == t.summary
    assert "h2. Timeline" in f["description"]
    assert j.find_or_create(pm(transition="r3.8")) == ("QR-2", True)


def test_comment_once_adds_one_comment_per_marker(fake):
    j = Jira.connect(fake.url, "QR", fake.token)
    t = pm()
    j.find_or_create(t)
    assert j.comment_once(t.key_label, "cleared-r3.9", "reduced sizing cleared by alice") is True
    assert j.comment_once(t.key_label, "cleared-r3.9", "reduced sizing cleared by alice") is False
    assert j.comment_once(t.key_label, "kill-released", "kill switch released") is True
    comments = fake.tickets["QR-1"]["comments"]
    assert len(comments) == 2
    assert "[quantramp:cleared-r3.9]" in comments[0]["body"] and "cleared by alice" in comments[0]["body"]


def test_comment_on_a_missing_ticket_raises(fake):
    with pytest.raises(TicketError, match="no JIRA ticket"):
        Jira.connect(fake.url, "QR", fake.token).comment_once("quantramp-000000000000-r1-1", "m", "text")


def test_jira_down_raises_ticket_error_fast():
    j = Jira.connect(f"http://127.0.0.1:{closed_port()}", "QR", "secret-token-123")
    t = time.monotonic()
    with pytest.raises(TicketError, match="ConnectionError") as e:
        j.find_or_create(pm())
    assert time.monotonic() - t < tickets.TIMEOUT_S
    assert isinstance(e.value.__cause__, Exception)
    assert "\n" not in str(e.value)


def test_bad_token_raises_without_leaking_it(fake):
    with pytest.raises(TicketError, match="HTTP 401") as e:
        Jira.connect(fake.url, "QR", "wrong-secret-token").find_or_create(pm())
    assert "wrong-secret-token" not in str(e.value)
    assert fake.tickets == {}


def test_project_without_priority_field_still_gets_its_ticket():
    f = fake_jira.serve(no_priority=True)
    try:
        assert Jira.connect(f.url, "QR", f.token).find_or_create(pm()) == ("QR-1", True)
        assert [s for m, p, s in f.requests if p.endswith("/issue") and m == "POST"] == [400, 201]
    finally:
        f.stop()


def test_unknown_issue_type_is_a_ticket_error(fake):
    with pytest.raises(TicketError, match="issue type"):
        Jira.connect(fake.url, "QR", fake.token, issue_type="Epicfail").find_or_create(pm())


def test_cloud_searches_with_search_jql(fake):
    j = Jira.connect(fake.url, "QR", fake.token, cloud=True)
    assert j.find_or_create(pm()) == ("QR-1", True)
    assert j.find_or_create(pm()) == ("QR-1", False)
    paths = {p for _, p, _ in fake.requests}
    assert "/rest/api/2/search/jql" in paths and "/rest/api/2/search" not in paths


def test_from_env(fake):
    assert Jira.from_env({}) is None
    with pytest.raises(TicketError, match="QR_JIRA_PROJECT"):
        Jira.from_env({"QR_JIRA_URL": fake.url, "QR_JIRA_TOKEN": fake.token})
    basic = Jira.from_env({"QR_JIRA_URL": fake.url, "QR_JIRA_PROJECT": "QR", "QR_JIRA_USER": "ops@example.com",
                           "QR_JIRA_TOKEN": fake.token, "QR_JIRA_ISSUE_TYPE": "Incident"})
    assert basic is not None and basic.find_or_create(pm()) == ("QR-1", True)
    assert fake.tickets["QR-1"]["fields"]["issuetype"]["name"] == "Incident"
    bearer = Jira.from_env({"QR_JIRA_URL": fake.url, "QR_JIRA_PROJECT": "QR", "QR_JIRA_TOKEN": fake.token})
    assert bearer is not None and bearer.find_or_create(pm()) == ("QR-1", False)
    cloud = Jira.from_env({"QR_JIRA_URL": "https://acme.atlassian.net", "QR_JIRA_PROJECT": "QR", "QR_JIRA_TOKEN": "t"})
    assert cloud is not None and cloud.client.deploymentType == "Cloud"


def test_fake_refuses_jql_it_does_not_understand(fake):
    import requests
    r = requests.get(f"{fake.url}/rest/api/2/search", params={"jql": "text ~ rollback"},
                     headers={"Authorization": f"Bearer {fake.token}"}, timeout=5)
    assert r.status_code == 400
