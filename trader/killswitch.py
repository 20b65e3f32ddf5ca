"""Kill switch: a per-strategy latch, its pub/sub listener, and the publisher side.

Protocol (all names from :class:`quantramp.trader.state.Keys`):

- channel and latch key ``quantramp:{ns}:{strategy}:kill`` (a pub/sub channel and a
  string key share the name; Redis keeps them apart);
- a kill message is JSON ``{"action": "kill", "reason": str, "flatten": bool, "id": str,
  "ts": epoch seconds (optional, time of sending)}``; ``action`` defaults to ``kill``;
- ``{"action": "unkill", "id": ...}`` (or the bare string ``unkill``) clears it;
- ``{"action": "resume", "by": str, "reason": str, "role": str (optional, "" = both
  roles), "id": ..., "ts": ...}`` lifts a governor halt (manual or drawdown; never the
  daily-loss stop of the day): the only way a halted pod resumes. ``by`` is required; the
  pod records who, why and when in its governor state (persisted with the book), logs it
  and acknowledges like a kill. It does not touch the kill latch. Publish with
  :func:`resume_trading`;
- the publisher (:func:`engage` / :func:`release`) sets or deletes the latch key and
  publishes in one MULTI, so a pod that is down or starting still finds the latch;
- a pod receiving a kill blocks new orders at once (in memory), cancels its working
  order, queues a flattening order if asked, writes the latch key too (idempotent), then
  acknowledges with ``quantramp:{ns}:{strategy}:kill:ack:{role}`` = JSON ``{"id",
  "action", "reason", "flatten", "role", "received_at", "acked_at", "sent_at",
  "latency_s"}`` (epoch seconds). Anything the pod does after the ack sees the latch, so
  no order is accepted after the ack. The operator measures propagation as
  ``acked_at - sent_at`` per role.

The latch is read at startup and with every per-bar state write, so a pod started while
killed stays killed, and a message missed during a disconnect is caught up.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from .state import Keys, StateUnavailable

log = logging.getLogger("quantramp.trader.killswitch")

KILL = "kill"
UNKILL = "unkill"
RESUME = "resume"


class BadKillMessage(ValueError):
    """A message on the kill channel that is neither a kill nor an unkill."""


@dataclass(frozen=True)
class KillCommand:
    """A parsed kill-channel message. sent_at: epoch seconds or None."""

    action: str
    reason: str = ""
    flatten: bool = False
    id: str = ""
    sent_at: float | None = None
    by: str = ""
    role: str = ""

    def to_json(self) -> str:
        """The wire form (also the latch key's value)."""
        body: dict[str, Any] = {"action": self.action, "id": self.id}
        if self.action == KILL:
            body.update(reason=self.reason, flatten=self.flatten)
        elif self.action == RESUME:
            body.update(reason=self.reason, by=self.by, role=self.role)
        if self.sent_at is not None:
            body["ts"] = self.sent_at
        return json.dumps(body, separators=(",", ":"))


def parse(raw: str | bytes) -> KillCommand:
    """Parse a kill-channel message or latch value; raise :class:`BadKillMessage`."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    text = raw.strip()
    if text.lower() in (KILL, UNKILL):
        return KillCommand(action=text.lower())
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise BadKillMessage(f"not JSON: {text[:80]!r}") from exc
    if not isinstance(body, dict):
        raise BadKillMessage(f"not a JSON object: {text[:80]!r}")
    action = str(body.get("action", KILL)).lower()
    if action not in (KILL, UNKILL, RESUME):
        raise BadKillMessage(f"unknown action {action!r}")
    by = str(body.get("by", "")).strip()
    if action == RESUME and not by:
        raise BadKillMessage("a resume must say who resumes (by)")
    flatten = body.get("flatten", False)
    if not isinstance(flatten, bool):
        raise BadKillMessage(f"flatten must be true or false, got {flatten!r}")
    ts = body.get("ts")
    sent_at = float(ts) if isinstance(ts, (int, float)) and not isinstance(ts, bool) else None
    return KillCommand(
        action=action, reason=str(body.get("reason", "")), flatten=flatten, id=str(body.get("id", "")), sent_at=sent_at,
        by=by, role=str(body.get("role", "")),
    )


class KillLatch:
    """In-memory latch: engaged blocks new orders; ``flatten`` asks for flattening orders."""

    def __init__(self) -> None:
        self.command: KillCommand | None = None

    @property
    def engaged(self) -> bool:
        """True while killed."""
        return self.command is not None

    @property
    def flatten(self) -> bool:
        """True if the kill asked to flatten positions."""
        return self.command is not None and self.command.flatten

    def apply(self, cmd: KillCommand) -> bool:
        """Engage (kill) or release (unkill); returns True if the latch changed (a resume never does)."""
        if cmd.action == RESUME:
            return False
        if cmd.action == KILL:
            changed = self.command is None or self.command.flatten != cmd.flatten
            self.command = cmd
            return changed
        changed = self.command is not None
        self.command = None
        return changed


def ack_body(cmd: KillCommand, role: str, received_at: float, acked_at: float) -> dict[str, Any]:
    """The acknowledgement JSON of ``cmd`` by ``role`` (epoch seconds)."""
    return {
        "id": cmd.id,
        "action": cmd.action,
        "reason": cmd.reason,
        "flatten": cmd.flatten,
        "role": role,
        "received_at": received_at,
        "acked_at": acked_at,
        "sent_at": cmd.sent_at,
        "latency_s": None if cmd.sent_at is None else acked_at - cmd.sent_at,
    }


# -- publisher side (operator, kubectl plugin, tests) ---------------------------------------
async def engage(client: Redis, keys: Keys, reason: str, flatten: bool = False, id: str | None = None) -> KillCommand:
    """Set the latch and publish a kill for the strategy of ``keys`` (one MULTI). Returns the command."""
    cmd = KillCommand(KILL, reason=reason, flatten=flatten, id=id or uuid.uuid4().hex, sent_at=time.time())
    async with client.pipeline(transaction=True) as p:
        p.set(keys.kill, cmd.to_json())
        p.publish(keys.kill, cmd.to_json())
        await p.execute()
    return cmd


async def release(client: Redis, keys: Keys, id: str | None = None) -> KillCommand:
    """Clear the latch and publish an unkill (one MULTI). Returns the command."""
    cmd = KillCommand(UNKILL, id=id or uuid.uuid4().hex, sent_at=time.time())
    async with client.pipeline(transaction=True) as p:
        p.delete(keys.kill)
        p.publish(keys.kill, cmd.to_json())
        await p.execute()
    return cmd


async def resume_trading(client: Redis, keys: Keys, by: str, reason: str, role: str = "", id: str | None = None) -> KillCommand:
    """Publish a resume for the strategy of ``keys`` (``role`` "" = both roles): the explicit,
    recorded action that lifts a governor halt (see module docstring). ``by``: who (required).
    Returns the command; the pod's acknowledgement is :func:`read_ack` with action ``resume``.
    Raises ValueError if ``by`` is empty."""
    if not by.strip():
        raise ValueError("resume_trading needs by (who resumes)")
    cmd = KillCommand(RESUME, reason=reason, id=id or uuid.uuid4().hex, sent_at=time.time(), by=by, role=role)
    await client.publish(keys.kill, cmd.to_json())
    return cmd


async def read_ack(client: Redis, keys: Keys, role: str) -> dict[str, Any] | None:
    """The acknowledgement of ``role`` (decoded JSON), or None."""
    raw = await client.get(keys.kill_ack(role))
    if raw is None:
        return None
    return json.loads(raw)


async def wait_ack(client: Redis, keys: Keys, role: str, id: str, timeout: float = 10.0, poll_s: float = 0.005) -> dict[str, Any]:
    """Poll :func:`read_ack` until ``role`` acknowledges command ``id``; return the ack.

    ``timeout`` and ``poll_s`` in seconds. Raises ``TimeoutError`` if no matching ack arrives in time.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ack = await read_ack(client, keys, role)
        if ack is not None and ack["id"] == id:
            return ack
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"no ack from {role} for {id} within {timeout:g} s")


# -- listener (pod side) -----------------------------------------------------------------------
async def listen(
    client: Redis,
    channel: str,
    on_command: Callable[[KillCommand, float], Awaitable[None]],
    on_subscribed: Callable[[], Awaitable[None]],
    on_error: Callable[[Exception], None],
    stop: asyncio.Event,
    retry_s: float = 0.5,
) -> None:
    """Subscribe to ``channel`` until ``stop``; call ``on_command(cmd, received_at)`` per message.

    After every (re)subscription ``on_subscribed`` runs (the caller re-reads the latch
    key: messages published while disconnected are lost by pub/sub). Connection errors
    go to ``on_error`` and the subscription is retried every ``retry_s`` seconds.
    Malformed messages are logged and ignored.
    """
    while not stop.is_set():
        pubsub = client.pubsub()
        try:
            await pubsub.subscribe(channel)
            await on_subscribed()
            while not stop.is_set():
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if msg is None or msg.get("type") != "message":
                    continue
                received = time.time()
                try:
                    cmd = parse(msg["data"])
                except BadKillMessage as exc:
                    log.error("ignoring message on %s: %s", channel, exc)
                    continue
                await on_command(cmd, received)
        except (RedisError, OSError, StateUnavailable) as exc:
            on_error(exc)
            try:
                await asyncio.wait_for(stop.wait(), timeout=retry_s)
            except asyncio.TimeoutError:
                pass
        finally:
            try:
                await pubsub.aclose()
            except (RedisError, OSError):
                pass
