"""JIRA post-mortem tickets for rollbacks and halts: a pure ticket built from the status (the seed
runbook's post-mortem template, seed 003 §6, filled in) and a JIRA adapter that never files a
second ticket for the same transition.

Seed 003 §3.1 step 7 ("JIRA ticket created") and DESIGN.md ("JIRA ticket with the post-mortem
template (timeline, measurements, versions) filled in"). :func:`postmortem` and
:func:`ticket_label` are pure; :class:`Jira` does the I/O with the ``jira`` client (REST API v2)
and raises :class:`TicketError` on any failure.

Never a duplicate: every ticket carries a deterministic label (:func:`ticket_label`, from the
strategy's uid and the transition id). :meth:`Jira.find_or_create` searches that label before
creating, so an operator that dies after creating and before recording the key finds the ticket
on its next attempt instead of filing another. :meth:`Jira.comment_once` does the same for
comments with a marker in the comment body.

Configuration (:meth:`Jira.from_env`): ``QR_JIRA_URL``, ``QR_JIRA_PROJECT`` (required with a
URL), ``QR_JIRA_TOKEN`` (a personal access token, sent as a bearer token) or ``QR_JIRA_USER`` +
``QR_JIRA_TOKEN`` (basic auth; Jira Cloud's e-mail + API token), ``QR_JIRA_ISSUE_TYPE`` (default
``Task``), ``QR_JIRA_CLOUD`` (``true``/``false``; default: true when the host ends with
``.atlassian.net``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .models import EffectRecord, HistoryRecord, TradingStrategyStatus

if TYPE_CHECKING:  # the jira client is imported only when a Jira adapter is built
    import jira

TIMEOUT_S = 5.0
#: default issue type: ``Task`` is in the default issue type schemes of Jira Software, Work
#: Management and Service Management projects; ``Incident`` exists only in Service Management and
#: ``Bug`` not in business projects. Set QR_JIRA_ISSUE_TYPE=Incident where the project has it.
DEFAULT_ISSUE_TYPE = "Task"
SUMMARY_MAX = 255
#: characters the label may hold (JIRA labels may not contain spaces; JQL needs no escaping for these)
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,254}$")
MARKER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
PROJECT_RE = re.compile(r"^[A-Z][A-Z0-9_]{0,254}$")
ROOT_CAUSE = "to be determined by the on-call engineer (template)"
FOR_HUMANS = "_(for the on-call engineer to fill in)_"
_RESULT_ORDER = ("Failed", "Error", "Inconclusive", "InsufficientData", "Skipped", "Successful")


class TicketError(RuntimeError):
    """A JIRA call failed (HTTP error, connection error, timeout, no ticket with a label).

    The message is one line and carries no secret; the original exception is chained."""


@dataclass(frozen=True)
class Ticket:
    """A JIRA issue to file: ``summary`` (one line, ≤ 255 characters), ``description`` (JIRA wiki
    markup), ``labels``, ``priority`` (``Highest`` for a critical trigger, ``High`` otherwise) and
    ``key_label``, the deduplication label (also in ``labels``)."""

    summary: str
    description: str
    labels: tuple[str, ...]
    priority: str
    key_label: str


def ticket_label(uid: str, transition: str) -> str:
    """The deduplication label of the ticket of ``transition`` of the strategy with Kubernetes uid
    ``uid``: ``quantramp-<first 12 hex digits of the uid, dashes removed, lower case>-<transition
    id with every character other than letters, digits, '_' and '-' replaced by '-'>``, e.g.
    ``ticket_label("3f2a9c4e-1b7d-4e8a-9c1f-0a2b3c4d5e6f", "r3.7") == "quantramp-3f2a9c4e1b7d-r3-7"``.

    Deterministic (the same transition of the same object always gives the same label; a
    strategy deleted and re-created has a new uid, so a new ticket), JIRA-safe (no spaces, ≤ 255
    characters). Raises ``ValueError`` when the uid has no hex digits or the transition is empty.
    """
    hexes = re.sub(r"[^0-9a-f]", "", uid.lower())[:12]
    tid = re.sub(r"[^A-Za-z0-9_-]", "-", transition.strip())
    if not hexes or not tid:
        raise ValueError(f"ticket_label needs a uid with hex digits and a transition id, got {uid!r}, {transition!r}")
    return f"quantramp-{hexes}-{tid}"[:255]


# --- the post-mortem (pure) -------------------------------------------------------------------

def _esc(s: object) -> str:
    """One table cell / inline text of JIRA wiki markup: one line, markup characters escaped."""
    text = " ".join(str(s).split())
    text = re.sub(r"([|{}\[\]*])", r"\\\1", text)
    return text or "-"


def _row(*cells: object) -> str:
    return "|" + "|".join(_esc(c) for c in cells) + "|"


def _head(*cells: str) -> str:
    return "||" + "||".join(cells) + "||"


def _utc(t: datetime | None) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else "-"


def _duration(d: timedelta) -> str:
    s = max(0, int(d.total_seconds()))
    days, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    parts = [f"{days}d"] if days else []
    if days or h:
        parts.append(f"{h}h")
    parts += [f"{m}m", f"{s}s"] if not days else [f"{m}m"]
    return " ".join(parts)


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _transition_record(status: TradingStrategyStatus, transition: str) -> HistoryRecord | None:
    m = re.search(r"(\d+)$", transition)
    if not m:
        return None
    seq = int(m.group(1))
    return next((r for r in reversed(status.history) if r.seq == seq), None)


def _ramp_history(status: TradingStrategyStatus) -> tuple[list[HistoryRecord], bool]:
    """The history records of the current ramp, and whether older ones were trimmed away."""
    ramp = status.ramp
    if ramp is None:
        return list(status.history), False
    for i in range(len(status.history) - 1, -1, -1):
        r = status.history[i]
        if r.event.startswith("RampStarted") and r.time == ramp.started_at:
            return status.history[i:], False
    return [r for r in status.history if r.time >= ramp.started_at], True


def _effect_action(e: EffectRecord) -> str:
    if e.kind == "TagVersion":
        tags = ", ".join(f"{k}={v}" for k, v in e.tags.items() if not k.endswith(("_reason", "_at")))
        return f"{e.model} v{e.version} tagged {tags or ', '.join(e.tags)}"
    if e.kind == "SetAlias":
        return f"{e.model} alias {e.alias} set to v{e.version}" + (" (restored)" if e.alias == "champion" else "")
    if e.kind == "RemoveAlias":
        return f"{e.model} alias {e.alias} removed"
    return f"Kubernetes Event {e.reason} recorded"


def _effect_state(e: EffectRecord) -> str:
    if e.state == "Done":
        return "done"
    if e.state == "Failed":
        return f"failed after {e.attempts} attempts: {e.last_error[:200]}"
    if e.state == "Superseded":
        return "superseded by a later effect"
    return f"pending ({e.attempts} attempts so far)"


def _actions(status: TradingStrategyStatus, transition: str, severity: str, ns: str, name: str) -> list[str]:
    ramp = status.ramp
    rows = []
    ch = status.allocation.challenger
    if ch.replicas == 0:
        rows.append(_row("Challenger stopped (0 replicas, 0% of capital)", "quantramp operator", "-", "done"))
    else:
        rows.append(_row(f"Challenger stop decided; it still runs {ch.replicas} replica(s) at {ch.capital_percent:g}%",
                         "quantramp operator", "-", "in progress"))
    ks = status.kill_switch
    if ks is not None and ks.engaged:
        lat = f", last acknowledgement {ks.latency_seconds:.3f} s after the broadcast" if ks.latency_seconds is not None else ""
        rows.append(_row(f"Kill switch engaged ({ks.trigger}: {ks.reason}){lat}", ks.by or "quantramp operator", _utc(ks.since),
                         "engaged until released with authorization (kubectl quantramp kill off)"))
    else:
        rows.append(_row(f"Kill switch not engaged (the trigger was {severity}, not critical)", "quantramp operator", "-", "n/a"))
    effects = [e for e in status.effects if e.id.startswith(f"{transition}.") and e.kind != "RecordEvent"]
    rows += [_row(_effect_action(e), "quantramp operator", "-", _effect_state(e)) for e in effects]
    if not effects and ramp is not None:
        rows.append(_row(f"{ramp.model} v{ramp.candidate_version} tagged quantramp.status=rejected", "quantramp operator", "-",
                         "decided (its outbox record is no longer in the status)"))
        champ = f"champion alias restored to v{ramp.champion_version}" if ramp.champion_version else "champion alias removed (no last known good version)"
        rows.append(_row(f"{ramp.model} {champ}", "quantramp operator", "-", "decided (its outbox record is no longer in the status)"))
    rs = status.reduced_sizing
    if rs is not None:
        rows.append(_row(f"Champion trades at most {rs.percent:g}% of the capital until cleared "
                         f"(kubectl quantramp clear {name} -n {ns} --reason ...)", "quantramp operator", "-",
                         f"in force since {_utc(rs.since)}"))
    else:
        rows.append(_row("Champion reduced sizing", "quantramp operator", "-", "not in force (cleared, or not an automated rollback)"))
    rows.append(_row("Investigate the root cause (seed 003 §3.3 step 1, mandatory)", "on-call", "", "open"))
    rows.append(_row("Test a fix in shadow before a new ramp (seed 003 §3.3 step 2)", "on-call", "", "open"))
    return rows


def postmortem(namespace: str, strategy: str, uid: str, status: TradingStrategyStatus, transition: str, trigger: str,
               severity: str, impact_usd: float | None, now: datetime) -> Ticket:
    """The post-mortem ticket of ``transition`` (a rollback or a halt) of strategy
    ``namespace/strategy`` (Kubernetes uid ``uid``), from ``status`` after the transition (pure).

    ``transition``: the transition id ``<ramp id>.<seq>`` (e.g. ``r3.7``; the outbox effect ids of
    that transition start with it); ``trigger``: why (e.g. ``slippageRatio 3.2 > 1.5``);
    ``severity``: the trigger's, ``critical`` or ``warning``; ``impact_usd``: the P&L attributed to
    the incident in USD (negative: a loss) or None when there is no P&L series; ``now``: UTC.

    The description fills the seed runbook's post-mortem template (seed 003 §6) in JIRA wiki
    markup: Incident details (date/time of the transition, the history record whose ``seq`` is the
    transition's, else the ramp start; duration so far = ``now`` − that time; severity; impact;
    root cause left to the on-call engineer), Timeline (every history record of the current ramp),
    Analysis (the last analysis as a table of criteria with value, threshold and result, failing
    ones first; the why-questions left for humans), Model versions, Actions (what the operator did,
    from the allocation, the transition's outbox effects and the reduced sizing; then the open
    follow-ups), Lessons learned (left for humans), Links. Priority ``Highest`` when ``severity``
    is critical, else ``High``; labels ``quantramp``, :func:`ticket_label` and
    ``strategy-<name>``.
    """
    ramp = status.ramp
    key = ticket_label(uid, transition)
    record = _transition_record(status, transition)
    start = record.time if record else (ramp.started_at if ramp else now)
    model = ramp.model if ramp else "?"
    cand = ramp.candidate_version if ramp else (status.challenger_version or "?")
    champ = ramp.champion_version if ramp else None
    stage = (record.stage if record and record.stage else None) or status.stage or "-"
    event = record.event if record else status.phase
    verb = {"RolledBack": "rolled back", "Aborted": "aborted"}.get(event, "halted" if "Kill" in event else event.lower())
    one_line_trigger = " ".join(trigger.split())
    summary = f"[quantramp] {namespace}/{strategy} {verb} {model} v{cand} at {stage}: {one_line_trigger[:120]}"[:SUMMARY_MAX]

    impact = "unknown: no P&L series" if impact_usd is None else f"{impact_usd:,.2f} USD"
    history, trimmed = _ramp_history(status)
    d: list[str] = [
        f"_Post-mortem (seed 003 §6 template) filed by the quantramp operator for transition {_esc(transition)} of "
        f"{_esc(namespace)}/{_esc(strategy)}. Sections marked \"for the on-call engineer\" are left for humans._",
        "",
        "h2. Incident details",
        _head("Field", "Value"),
        _row("Date/Time", _utc(start)),
        _row("Duration", f"{_duration(now - start)} so far (from {_utc(start)} to {_utc(now)})"),
        _row("Severity", severity),
        _row("Impact", impact),
        _row("Root Cause", ROOT_CAUSE),
        _row("Trigger", one_line_trigger or "-"),
        "",
        "h2. Timeline",
    ]
    if trimmed:
        d.append("_Older records of this ramp were trimmed (the status keeps the last 50 transitions)._")
    d.append(_head("Time (UTC)", "Event", "From → To", "Stage", "By", "Reason"))
    d += [_row(_utc(r.time), r.event, f"{r.from_phase or '-'} → {r.to_phase or '-'}", r.stage, r.by, r.reason[:500])
          for r in history]
    d += ["", "h2. Analysis", "*What happened?*", _esc(status.message or one_line_trigger)]
    la = status.last_analysis
    if la is not None:
        d.append(f"Last analysis at {_utc(la.time)}: verdict {_esc(la.verdict)}." + (f" {_esc(la.message)}" if la.message else ""))
        d.append(_head("Criterion", "Value", "Threshold", "Result", "Message"))
        rank = {r: i for i, r in enumerate(_RESULT_ORDER)}
        for n, m in sorted(la.measurements.items(), key=lambda nm: (rank.get(nm[1].result, 99), nm[0])):
            d.append(_row(n, _num(m.value), _num(m.threshold), m.result, m.message[:300]))
    else:
        d.append("_No analysis was recorded in this stage._")
    d += ["*Why did it happen?*", FOR_HUMANS, "*Why wasn't it caught earlier?*", FOR_HUMANS, ""]
    d += [
        "h2. Model versions",
        _head("Item", "Value"),
        _row("Model", model),
        _row("Candidate (challenger)", f"v{cand}"),
        _row("Champion / last known good", f"v{champ}" if champ else "none (a first model): trading stopped"),
        _row("Ramp", f"{ramp.id} started {_utc(ramp.started_at)}" if ramp else "-"),
        "",
        "h2. Actions",
        _head("Action", "Owner", "Deadline", "Status"),
        *_actions(status, transition, severity, namespace, strategy),
        "",
        "h2. Lessons learned",
        f"# {FOR_HUMANS}",
        "# ",
        "# ",
        "",
        "h2. Links",
        f"* Strategy: {{{{{namespace}/{strategy}}}}} (uid {{{{{uid}}}}})",
        f"* Status: {{{{kubectl quantramp status {strategy} -n {namespace}}}}}",
        f"* History: {{{{kubectl quantramp history {strategy} -n {namespace}}}}}",
        f"* Deduplication label: {{{{{key}}}}}",
    ]
    return Ticket(
        summary=summary, description="\n".join(d), labels=("quantramp", key, f"strategy-{_label_part(strategy)}"),
        priority="Highest" if severity == "critical" else "High", key_label=key,
    )


def _label_part(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "-", s)[:200]


# --- the JIRA adapter -------------------------------------------------------------------------

def _truthy(v: str) -> bool:
    return v.strip().lower() in ("1", "true", "yes", "on")


class Jira:
    """Files and comments post-mortem tickets in project ``project`` with the ``jira`` client.

    Built by :meth:`from_env` or :meth:`connect`; the client is constructed with
    ``max_retries=0``, ``timeout=5`` (seconds), ``validate=False`` and ``get_server_info=False``,
    so construction makes no request and a JIRA outage costs at most one timeout per call.
    Every failure raises :class:`TicketError`.
    """

    def __init__(self, client: "jira.JIRA", project: str, issue_type: str = DEFAULT_ISSUE_TYPE,
                 secrets: tuple[str, ...] = ()) -> None:
        self.client = client
        self.project = project
        self.issue_type = issue_type
        self._secrets = secrets

    @classmethod
    def connect(cls, url: str, project: str, token: str, user: str | None = None,
                issue_type: str = DEFAULT_ISSUE_TYPE, timeout: float = TIMEOUT_S, cloud: bool | None = None) -> "Jira":
        """A client for the JIRA at ``url``: bearer ``token`` (a personal access token), or basic
        auth ``user`` + ``token`` when ``user`` is given. ``cloud`` (None: a host ending in
        ``.atlassian.net``) makes searches use Jira Cloud's ``/rest/api/2/search/jql``: with
        ``get_server_info=False`` the client cannot detect Cloud and would call ``/search``, which
        Cloud has removed. Raises :class:`TicketError` for a project key that is not a JIRA key."""
        import jira  # noqa: PLC0415 (lazy: the pure post-mortem needs no client)

        if not PROJECT_RE.match(project):
            raise TicketError(f"QR_JIRA_PROJECT must be a JIRA project key (upper-case letters, digits, _), got {project!r}")
        auth: dict[str, Any] = {"basic_auth": (user, token)} if user else {"token_auth": token}
        client = jira.JIRA(server=url, max_retries=0, timeout=timeout, validate=False, get_server_info=False, **auth)
        if cloud is None:
            cloud = (urlsplit(url).hostname or "").endswith(".atlassian.net")
        if cloud:
            client.deploymentType = "Cloud"  # what get_server_info=True would have read from serverInfo
        return cls(client, project, issue_type, (token,))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Jira | None":
        """From ``QR_JIRA_URL``, ``QR_JIRA_PROJECT``, ``QR_JIRA_TOKEN``, optional ``QR_JIRA_USER``
        (basic auth instead of bearer), ``QR_JIRA_ISSUE_TYPE`` (default ``Task``) and ``QR_JIRA_CLOUD``.
        None when ``QR_JIRA_URL`` is unset (tickets off). Raises :class:`TicketError` when the URL is
        set without a project or a token."""
        url = (env.get("QR_JIRA_URL") or "").strip()
        if not url:
            return None
        project = (env.get("QR_JIRA_PROJECT") or "").strip()
        token = (env.get("QR_JIRA_TOKEN") or "").strip()
        if not project or not token:
            raise TicketError("QR_JIRA_URL is set: QR_JIRA_PROJECT and QR_JIRA_TOKEN are required too")
        cloud_env = (env.get("QR_JIRA_CLOUD") or "").strip()
        return cls.connect(url, project, token, user=(env.get("QR_JIRA_USER") or "").strip() or None,
                           issue_type=(env.get("QR_JIRA_ISSUE_TYPE") or "").strip() or DEFAULT_ISSUE_TYPE,
                           cloud=_truthy(cloud_env) if cloud_env else None)

    def _error(self, what: str, exc: BaseException) -> TicketError:
        from jira.exceptions import JIRAError  # noqa: PLC0415

        if isinstance(exc, JIRAError):
            detail = f"HTTP {exc.status_code}: {exc.text or 'no message'}"
        else:
            detail = f"{type(exc).__name__}: {exc}"
        for s in self._secrets:
            if s:
                detail = detail.replace(s, "***")
        return TicketError(" ".join(f"JIRA {what} failed: {detail}".split())[:500])

    def find(self, key_label: str) -> str | None:
        """The key of the oldest ticket of the project labelled ``key_label``, or None.

        JQL ``project = "P" AND labels = "<key_label>" ORDER BY created ASC``: if a race ever left
        two tickets, every caller settles on the same (first) one. Raises :class:`TicketError`."""
        if not LABEL_RE.match(key_label):
            raise TicketError(f"not a quantramp ticket label: {key_label!r}")
        jql = f'project = "{self.project}" AND labels = "{key_label}" ORDER BY created ASC'
        try:
            found = self.client.search_issues(jql, maxResults=1, fields="summary,labels", validate_query=True)
        except Exception as exc:  # noqa: BLE001 - JIRAError, requests errors: all are TicketError
            raise self._error(f"search for label {key_label}", exc) from exc
        return str(found[0].key) if found else None

    def find_or_create(self, t: Ticket) -> tuple[str, bool]:
        """The key of the ticket labelled ``t.key_label``, creating it when there is none: returns
        ``(key, created)``.

        Never a duplicate across crashes: an operator that dies after creating and before
        recording the key finds the ticket by its label on the next attempt. The remaining race is
        two writers searching at the same moment, both finding nothing and both creating (JIRA has
        no conditional create); the operator rules it out by having one writer per strategy (kopf
        handles one object in one worker at a time and the operator runs as a single replica).
        Search lag: JIRA's index (and Cloud's eventually consistent ``search/jql``) may miss an
        issue for a moment after creation; a retry comes seconds later, after the index caught up.

        The priority is sent by name; a project whose create screen has no priority field refuses
        it (HTTP 400 about ``priority``), and the ticket is then created without it. Raises
        :class:`TicketError`."""
        key = self.find(t.key_label)
        if key is not None:
            return key, False
        fields: dict[str, Any] = {
            "project": {"key": self.project},
            "summary": t.summary[:SUMMARY_MAX],
            "description": t.description,
            "issuetype": {"name": self.issue_type},
            "labels": list(t.labels),
            "priority": {"name": t.priority},
        }
        try:
            try:
                issue = self.client.create_issue(fields=fields, prefetch=False)
            except Exception as exc:  # noqa: BLE001
                if getattr(exc, "status_code", None) == 400 and "priority" in str(getattr(exc, "text", "")).lower():
                    fields.pop("priority")
                    issue = self.client.create_issue(fields=fields, prefetch=False)
                else:
                    raise
        except Exception as exc:  # noqa: BLE001
            raise self._error(f"create of the ticket labelled {t.key_label}", exc) from exc
        return str(issue.key), True

    def comment_once(self, key_label: str, marker: str, text: str) -> bool:
        """Add ``text`` as a comment to the ticket labelled ``key_label``, unless one of its comments
        already carries ``[quantramp:<marker>]``; returns whether it added one.

        The marker ends the comment in a ``{noformat}`` block (rendered verbatim, not as a link).
        Raises :class:`TicketError` when no ticket has the label, the marker is not
        ``[A-Za-z0-9_.:-]``, or a call fails."""
        if not MARKER_RE.match(marker):
            raise TicketError(f"comment marker must be letters, digits, '_', '.', ':', '-': got {marker!r}")
        key = self.find(key_label)
        if key is None:
            raise TicketError(f"no JIRA ticket in {self.project} is labelled {key_label}")
        tag = f"[quantramp:{marker}]"
        try:
            if any(tag in (c.body or "") for c in self.client.comments(key)):
                return False
            self.client.add_comment(key, f"{text}\n\n{{noformat}}{tag}{{noformat}}")
        except Exception as exc:  # noqa: BLE001
            raise self._error(f"comment on {key}", exc) from exc
        return True
