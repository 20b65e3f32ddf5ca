"""Slack notices of ramp transitions: a pure notice built from the status, its Block Kit payload,
and a best-effort Slack adapter (Web API ``chat.postMessage`` or an incoming webhook).

Seed 003 §3.1 step 6 ("notifications sent") and DESIGN.md ("Slack messages ... for every rollback
or halt"). :func:`notice` and :func:`slack_payload` are pure; :class:`Slack` does the I/O and
raises :class:`NotifyError` on any failure. Notifying is best effort by design: the caller records
a failure (status, Event, metric) and carries on; a Slack outage never blocks a rollback.

Configuration (:meth:`Slack.from_env`):

* ``QR_SLACK_BOT_TOKEN`` + ``QR_SLACK_CHANNEL``: Web API (``slack_sdk.WebClient``);
  ``QR_SLACK_BASE_URL`` overrides ``https://slack.com/api/`` (tests, the fake in hack/fake_slack.py);
* or ``QR_SLACK_WEBHOOK_URL``: an incoming webhook (``slack_sdk.webhook.WebhookClient``).

Secrets (the token, the webhook URL, which is itself a credential) never appear in
:class:`NotifyError` messages, and the webhook client logs through a logger that drops the debug
line in which slack_sdk prints the URL.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from .models import Measurement, TradingStrategyStatus

#: notice kinds, one per transition the operator announces
KINDS = ("StageAdvanced", "Promoted", "Paused", "RolledBack", "Aborted", "KillEngaged", "KillReleased",
         "SizingCleared", "RampStarted")
#: kinds whose notice lists only the criteria that went wrong (Failed, Error, Inconclusive)
FAILING_ONLY_KINDS = ("RolledBack", "Paused", "Aborted", "KillEngaged")
#: kinds whose notice lists every criterion of the last analysis (the evidence for moving on)
ALL_MEASUREMENTS_KINDS = ("StageAdvanced", "Promoted")
#: results that count as "went wrong" (Inconclusive pauses a ramp, so a Paused notice shows it)
BAD_RESULTS = ("Failed", "Error", "Inconclusive")
#: built-in criteria whose failure means capital was at risk: a rollback they caused is critical
SAFETY_CRITERIA = ("drawdown", "criticalAlerts")

DEFAULT_SLACK_API = "https://slack.com/api/"
TIMEOUT_S = 5
RETRIES = 2

# Slack limits (Block Kit reference): header plain_text 150, section field 2000, section text 3000,
# 10 fields per section, 10 context elements
HEADER_MAX = 150
FIELD_MAX = 2000
SECTION_MAX = 3000
FIELDS_MAX = 10
FALLBACK_MAX = 3000

_SEVERITY_ICON = {"critical": ":rotating_light: ", "warning": ":warning: ", "info": ""}


class NotifyError(RuntimeError):
    """A Slack post failed (API error, rate limit after the retries, connection error, timeout).

    The message is one line and carries no secret; the original exception is chained
    (``__cause__``)."""


@dataclass(frozen=True)
class Notice:
    """One Slack-ready announcement of a ramp transition (transport-neutral, plain text).

    ``kind``: one of :data:`KINDS`; ``title``: one line; ``text``: plain-text body;
    ``fields``: (label, value) pairs such as ``("Model", "aapl v3")``, ``("Stage", "canary-1 1%")``,
    ``("slippageRatio", "2.1 (threshold 1.5)")``; ``severity``: ``info``, ``warning`` or
    ``critical``; ``link``: a URL (dashboard, ticket) or ``""``.
    """

    kind: str
    namespace: str
    strategy: str
    title: str
    text: str
    fields: tuple[tuple[str, str], ...] = ()
    severity: str = "info"
    link: str = ""


def _num(v: float | None) -> str:
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def measurement_text(m: Measurement, with_result: bool = True) -> str:
    """``"2.1 (threshold 1.5)"``, with ``", Failed"`` appended when ``with_result`` and the result
    is not Successful; ``n/a`` for a missing value; the threshold part is left out when unset."""
    s = _num(m.value)
    if m.threshold is not None:
        s += f" (threshold {_num(m.threshold)})"
    if with_result and m.result != "Successful":
        s += f", {m.result}"
    return s


def _severity(kind: str, status: TradingStrategyStatus) -> str:
    if kind == "KillEngaged":
        return "critical"
    if kind == "RolledBack":
        ms = status.last_analysis.measurements if status.last_analysis else {}
        unsafe = any(ms[c].result == "Failed" for c in SAFETY_CRITERIA if c in ms)
        return "critical" if unsafe else "warning"
    return "info"


def _one_line(s: str, limit: int = 300) -> str:
    s = " ".join(s.split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def notice(kind: str, namespace: str, strategy: str, status: TradingStrategyStatus, link: str = "") -> Notice:
    """Build the notice of transition ``kind`` from ``status`` (pure).

    Fields: the model and candidate version (``ramp.model``, ``ramp.candidate_version``), the
    champion (``ramp.champion_version``, the last known good), the stage and the challenger's
    capital percent, who acted (the last history record's ``by``), the champion's reduced sizing
    when set, then the last analysis' measurements with value and threshold: only those that went
    wrong (:data:`BAD_RESULTS`) for RolledBack, Paused, Aborted and KillEngaged; all of them for
    StageAdvanced and Promoted; none for the other kinds. The text is the status message and the
    last history record's reason.

    Severity: KillEngaged is ``critical`` (trading halted). RolledBack is ``critical`` when a
    safety criterion (drawdown, criticalAlerts) failed, since capital was at risk, and ``warning``
    otherwise (the operator already withdrew the challenger; a human follows up). Every other kind
    is ``info``.

    Raises ``ValueError`` for a kind not in :data:`KINDS`.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown notice kind {kind!r}: one of {', '.join(KINDS)}")
    ramp = status.ramp
    model = ramp.model if ramp else "?"
    cand = (ramp.candidate_version if ramp else None) or status.challenger_version or "?"
    champ = ramp.champion_version if ramp else status.champion_version
    stage = status.stage or "-"
    pct = status.capital_percent
    stage_text = f"{stage} {pct:g}%" if pct is not None else stage
    last = status.history[-1] if status.history else None
    where = f"{namespace}/{strategy}"

    titles = {
        "StageAdvanced": f"{where}: {model} v{cand} advanced to {stage_text}",
        "Promoted": f"{where}: {model} v{cand} promoted to champion",
        "Paused": f"{where}: ramp of {model} v{cand} paused at {stage}, waiting for a human",
        "RolledBack": f"{where}: rolled back {model} v{cand} at {stage}",
        "Aborted": f"{where}: aborted {model} v{cand} at {stage}",
        "KillEngaged": f"{where}: kill switch engaged, trading halted",
        "KillReleased": f"{where}: kill switch released",
        "SizingCleared": f"{where}: reduced sizing cleared, champion back to its full share",
        "RampStarted": f"{where}: ramp {ramp.id if ramp else ''} started, {model} v{cand} against "
                       f"{'champion v' + champ if champ else 'no champion (a first model)'}",
    }

    fields: list[tuple[str, str]] = [
        ("Model", f"{model} v{cand}"),
        ("Champion", f"v{champ}" if champ else "none (a first model)"),
        ("Stage", stage_text),
    ]
    if last is not None:
        fields.append(("By", last.by))
    if status.reduced_sizing is not None and kind in ("RolledBack", "KillEngaged", "Aborted"):
        fields.append(("Champion sizing", f"{status.reduced_sizing.percent:g}% of capital until cleared"))
    ms = status.last_analysis.measurements if status.last_analysis else {}
    if kind in FAILING_ONLY_KINDS:
        order = {r: i for i, r in enumerate(BAD_RESULTS)}
        bad = sorted(((n, m) for n, m in ms.items() if m.result in BAD_RESULTS), key=lambda nm: order[nm[1].result])
        fields += [(n, measurement_text(m, with_result=kind == "Paused")) for n, m in bad]
    elif kind in ALL_MEASUREMENTS_KINDS:
        fields += [(n, measurement_text(m)) for n, m in ms.items()]

    lines = [status.message] if status.message else []
    if last is not None and last.reason and last.reason not in status.message:
        lines.append(f"Reason: {last.reason}")
    return Notice(
        kind=kind, namespace=namespace, strategy=strategy, title=_one_line(titles[kind]),
        text="\n".join(lines), fields=tuple(fields), severity=_severity(kind, status), link=link,
    )


def _esc(s: str) -> str:
    """Escape Slack mrkdwn control characters (&, <, >)."""
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(s: str, limit: int) -> str:
    return s if len(s) <= limit else s[: limit - 1] + "…"


def slack_payload(n: Notice) -> dict:
    """The ``chat.postMessage`` / webhook body of ``n`` (pure): ``text`` (the notification and
    fallback text) and Block Kit ``blocks``: a header (the title, ≤ 150 characters), a section with
    the body text (≤ 3000) and the fields (≤ 10; beyond nine the rest are folded into a tenth,
    "More", each entry shortened so that every name shows; each field ≤ 2000 characters), and a context line with namespace/strategy, kind, severity and
    the link. User text is mrkdwn-escaped (&, <, >)."""
    header = _cut(_SEVERITY_ICON.get(n.severity, "") + n.title, HEADER_MAX)
    fields = list(n.fields)
    if len(fields) > FIELDS_MAX:
        rest = fields[FIELDS_MAX - 1:]
        each = max(20, (FIELD_MAX - 100) // len(rest) - len("; : "))
        fields = fields[: FIELDS_MAX - 1] + [("More", "; ".join(_cut(f"{k}: {v}", each) for k, v in rest))]
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}}]
    section: dict = {"type": "section"}
    if n.text:
        section["text"] = {"type": "mrkdwn", "text": _cut(_esc(n.text), SECTION_MAX)}
    if fields:
        section["fields"] = [{"type": "mrkdwn", "text": _cut(f"*{_esc(k)}*\n{_esc(v)}", FIELD_MAX)} for k, v in fields]
    if len(section) > 1:
        blocks.append(section)
    context = f"`{_esc(n.namespace)}/{_esc(n.strategy)}` · {n.kind} · {n.severity}"
    if n.link:
        context += f" · <{n.link}|details>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(context, SECTION_MAX)}]})
    fallback = _cut(f"{n.title}\n{n.text}".strip(), FALLBACK_MAX)
    return {"text": fallback, "blocks": blocks}


class _NoDebug(logging.Filter):
    """Drops slack_sdk's debug records (the webhook client prints its URL, a secret, at debug)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.DEBUG


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return _one_line(text)


class Slack:
    """Posts :class:`Notice` s to Slack: Web API (``chat.postMessage`` to a channel) or an incoming
    webhook. Both clients retry HTTP 429 after ``Retry-After`` (``RateLimitErrorRetryHandler``,
    ``retries`` times, default 2) and time out after ``timeout`` seconds (default 5).

    Best effort: :meth:`post` raises :class:`NotifyError` on any failure and the caller records it;
    build one with :meth:`from_env`, :meth:`web` or :meth:`webhook`.
    """

    def __init__(self, client: WebClient | WebhookClient, channel: str | None, secrets: tuple[str, ...] = ()) -> None:
        self.client = client
        self.channel = channel
        self._secrets = secrets

    @classmethod
    def web(cls, token: str, channel: str, base_url: str = DEFAULT_SLACK_API, timeout: int = TIMEOUT_S,
            retries: int = RETRIES) -> "Slack":
        """Web API mode: ``chat.postMessage`` to ``channel`` (name or id) with bot token ``token``."""
        client = WebClient(token=token, base_url=base_url, timeout=timeout,
                           retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=retries)])
        return cls(client, channel, (token,))

    @classmethod
    def webhook(cls, url: str, timeout: int = TIMEOUT_S, retries: int = RETRIES) -> "Slack":
        """Incoming-webhook mode: the channel is the webhook's; :meth:`post` returns ``""``."""
        quiet = logging.getLogger(f"{__name__}.webhook")
        if not any(isinstance(f, _NoDebug) for f in quiet.filters):
            quiet.addFilter(_NoDebug())
        client = WebhookClient(url=url, timeout=timeout, logger=quiet,
                               retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=retries)])
        return cls(client, None, (url, url.rstrip("/").rsplit("/", 1)[-1]))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "Slack | None":
        """From ``QR_SLACK_BOT_TOKEN`` + ``QR_SLACK_CHANNEL`` (Web API; ``QR_SLACK_BASE_URL`` optional),
        else ``QR_SLACK_WEBHOOK_URL``; None when neither is set (Slack off). The bot token wins when
        both are set. Raises :class:`NotifyError` when a token is set without a channel."""
        token = (env.get("QR_SLACK_BOT_TOKEN") or "").strip()
        channel = (env.get("QR_SLACK_CHANNEL") or "").strip()
        hook = (env.get("QR_SLACK_WEBHOOK_URL") or "").strip()
        if token:
            if not channel:
                raise NotifyError("QR_SLACK_BOT_TOKEN is set but QR_SLACK_CHANNEL is not: set the channel to post to")
            return cls.web(token, channel, base_url=(env.get("QR_SLACK_BASE_URL") or "").strip() or DEFAULT_SLACK_API)
        if hook:
            return cls.webhook(hook)
        return None

    def post(self, n: Notice) -> str:
        """Post ``n``; returns the message ``ts`` (Web API) or ``""`` (webhook).

        Raises :class:`NotifyError` (one line, no secrets, cause chained) on a Slack API error
        (``invalid_auth``, ``channel_not_found``, ``ratelimited`` after the retries, ...), a non-200
        webhook answer, a connection error or a timeout. Best effort: never retried here beyond
        the rate-limit handler, since a repeated post could duplicate the message."""
        payload = slack_payload(n)
        try:
            if isinstance(self.client, WebClient):
                resp = self.client.chat_postMessage(channel=self.channel, **payload)
                return str(resp.get("ts") or "")
            hook = self.client.send_dict(payload)
        except SlackApiError as exc:
            err = exc.response.get("error", "") if exc.response is not None else ""
            code = exc.response.status_code if exc.response is not None else 0
            raise NotifyError(_redact(f"Slack chat.postMessage failed: {err or exc} (HTTP {code})", self._secrets)) from exc
        except Exception as exc:  # noqa: BLE001 - any transport failure (URLError, timeout, ...) is a NotifyError
            raise NotifyError(_redact(f"Slack unreachable: {type(exc).__name__}: {exc}", self._secrets)) from exc
        if hook.status_code != 200:
            raise NotifyError(_redact(f"Slack webhook answered HTTP {hook.status_code}: {hook.body[:200]}", self._secrets))
        return ""
