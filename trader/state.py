"""Durable trader state in Redis (redis-py asyncio): the book of each trading day and the kill latch.

Keys (``ns`` = Kubernetes namespace of the TradingStrategy, ``day`` = the New York
trading date of the bar, YYYY-MM-DD):

========================================================  =======  ====================================================
``quantramp:{ns}:{strategy}:{role}:{stage}:{day}:book``   hash     the book after the last bar of that day (see below)
``quantramp:{ns}:{strategy}:{role}:{stage}:current``      string   the trading date of the newest book (where to resume)
``quantramp:{ns}:{strategy}:{role}:{stage}:intent``       string   write-ahead of the order about to be sent: JSON
                                                                 ``{"id", "symbol", "qty", "closing", "written_at"}``
``quantramp:{ns}:{strategy}:{role}:{stage}:retired``      string   written by a retired pod as it stops: JSON ``{"scope",
                                                                 "position_qty", "flat", "at"}`` (see below)
``quantramp:{ns}:{strategy}:{role}:scope``                string   the book scope the operator runs for the role ("" or
                                                                 absent: none); a pod whose scope is not it is retired
``quantramp:{ns}:{strategy}:kill``                        string   the kill latch, per strategy (both roles): JSON of the
                                                                 kill message; absent = not killed
``quantramp:{ns}:{strategy}:kill``                        channel  pub/sub channel of kill / unkill messages
``quantramp:{ns}:{strategy}:kill:ack:{role}``             string   JSON acknowledgement of the last kill message
========================================================  =======  ====================================================

A book hash holds readable fields — ``position_qty``, ``cash_usd``, ``pnl_usd``,
``day_pnl_usd``, ``day_turnover_usd``, ``peak_equity_usd``, ``bar_ts``, ``model_uri``,
``stage``, ``saved_at`` — and ``engine``: the JSON of :meth:`Engine.snapshot` (books,
counters, the working order, feature window, governor state incl. the throttle window,
broker RNG), from which a restarted pod resumes exactly. JSON floats round-trip exactly.

Every bar costs one pipelined round trip (:meth:`StateStore.save`: HSET + EXPIRE of the
book, SET of the pointer, GET of the kill latch — the latch comes back with the write, so
a kill published while the listener was disconnected is still seen on the next bar).
Books of past days are kept :data:`BOOK_TTL_S` seconds as a daily record.

Errors: every Redis failure surfaces as :class:`StateUnavailable`; the runtime then
refuses orders, flattens and reports not-ready until :meth:`StateStore.ping` succeeds.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry

#: past books stay this long (seconds) as the daily record
BOOK_TTL_S = 40 * 24 * 3600
#: acknowledgements stay this long (seconds)
ACK_TTL_S = 7 * 24 * 3600
#: socket timeouts (seconds): a dead Redis must be noticed within a bar or two
CONNECT_TIMEOUT_S = 0.5
SOCKET_TIMEOUT_S = 1.0
#: snapshot format written in the book's ``engine`` field
FORMAT_VERSION = 1


class StateUnavailable(Exception):
    """Redis could not be reached or answered with an error (the cause is chained)."""


@dataclass(frozen=True)
class Keys:
    """Redis key names of one (namespace, strategy, role)."""

    namespace: str
    strategy: str
    role: str
    #: the ramp stage the pod runs for: each stage keeps its own book, so a stage is judged on
    #: its own evidence, while a pod restarted within a stage resumes exactly
    stage: str = ""

    @property
    def prefix(self) -> str:
        """``quantramp:{ns}:{strategy}``."""
        return f"quantramp:{self.namespace}:{self.strategy}"

    @property
    def _book_prefix(self) -> str:
        return f"{self.prefix}:{self.role}:{self.stage}" if self.stage else f"{self.prefix}:{self.role}"

    def book(self, day: str) -> str:
        """Hash of the book of trading date ``day`` (YYYY-MM-DD) of this role and stage."""
        return f"{self._book_prefix}:{day}:book"

    @property
    def current(self) -> str:
        """String: the trading date of the newest book of this role and stage."""
        return f"{self._book_prefix}:current"

    @property
    def intent(self) -> str:
        """String: the write-ahead intent of the order this role is about to send (JSON)."""
        return f"{self._book_prefix}:intent"

    @property
    def retired(self) -> str:
        """String: the stop record of a retired pod of this role and stage (JSON)."""
        return f"{self._book_prefix}:retired"

    @property
    def live_scope(self) -> str:
        """String: the book scope the operator runs for this role now (a stopping pod of another scope
        is retired: it flattens before it exits)."""
        return f"{self.prefix}:{self.role}:scope"

    @property
    def kill(self) -> str:
        """The kill latch key, and also the name of the kill pub/sub channel (per strategy)."""
        return f"{self.prefix}:kill"

    def kill_ack(self, role: str | None = None) -> str:
        """String: acknowledgement of the last kill message by ``role`` (default: this role)."""
        return f"{self.prefix}:kill:ack:{role or self.role}"


def connect(url: str, username: str = "", password: str = "") -> Redis:
    """An asyncio client for ``url`` with short timeouts and a single immediate retry.

    ``username`` / ``password``: the pod's Redis ACL user (empty: none, or whatever ``url`` carries;
    credentials in ``url`` win, as redis-py reads them). The retry covers a pooled connection that
    went stale (Redis restarted); more retries with backoff would only delay noticing that Redis is
    down.
    """
    creds = {k: v for k, v in (("username", username), ("password", password)) if v}
    return Redis.from_url(
        url,
        **creds,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=SOCKET_TIMEOUT_S,
        retry=Retry(NoBackoff(), 1),
        decode_responses=True,
    )


def book_fields(snapshot: dict[str, Any], extra: dict[str, Any]) -> dict[str, str]:
    """The hash fields of one book: readable figures plus the full engine snapshot (JSON).

    ``snapshot`` is :meth:`Engine.snapshot` or :meth:`~.portfolio.Portfolio.snapshot` (several symbols: the
    figures summed, ``positions`` per symbol); ``extra`` holds runtime figures
    (day_turnover_usd, bar_ts, model_uri, stage, ...), stored as given (str()).
    """
    books = snapshot["symbols"] if "symbols" in snapshot else {"": snapshot}  # a Portfolio: one per symbol
    positions, cash, pnl, day_pnl = {}, 0.0, 0.0, 0.0
    for sym, snap in books.items():
        live = snap["live"]
        p = live["cash"] if live["position"] == 0 else live["cash"] + live["position"] * live["mark"]
        positions[sym] = int(live["position"])
        cash, pnl, day_pnl = cash + live["cash"], pnl + p, day_pnl + p - snap["day_start_pnl"]
    several = len(books) > 1
    fields = {
        # several symbols: the gross shares here, each symbol's signed shares in "positions"
        "position_qty": str(sum(abs(q) for q in positions.values()) if several else positions[""]),
        "cash_usd": repr(cash),
        "pnl_usd": repr(pnl),
        "day_pnl_usd": repr(day_pnl),
        "peak_equity_usd": repr(next(iter(books.values()))["peak_equity"]),  # the one governor's peak
        "engine": json.dumps(snapshot, separators=(",", ":")),
        "format": str(FORMAT_VERSION),
        "saved_at": repr(time.time()),
    }
    if several:
        fields["positions"] = json.dumps(positions, separators=(",", ":"))
    for k, v in extra.items():
        fields[k] = v if isinstance(v, str) else json.dumps(v)
    return fields


def parse_book(fields: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Inverse of :func:`book_fields`: (engine snapshot, runtime extras as decoded JSON where possible)."""
    if "engine" not in fields:
        raise ValueError("book has no engine snapshot")
    if int(fields.get("format", "0")) != FORMAT_VERSION:
        raise ValueError(f"book format {fields.get('format')!r} is not {FORMAT_VERSION}")
    snap = json.loads(fields["engine"])
    extra: dict[str, Any] = {}
    for k, v in fields.items():
        if k in ("engine", "format"):
            continue
        try:
            extra[k] = json.loads(v)
        except ValueError:
            extra[k] = v
    return snap, extra


class StateStore:
    """Reads and writes the durable state of one (namespace, strategy, role)."""

    def __init__(self, client: Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys

    async def ping(self) -> None:
        """Raise :class:`StateUnavailable` unless Redis answers PING."""
        try:
            await self.client.ping()
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis ping failed: {exc}") from exc

    async def load(self) -> tuple[str, dict[str, Any], dict[str, Any]] | None:
        """The newest book: (trading date, engine snapshot, extras), or None if there is none."""
        try:
            day = await self.client.get(self.keys.current)
            if not day:
                return None
            fields = await self.client.hgetall(self.keys.book(day))
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis read failed: {exc}") from exc
        if not fields:
            return None
        snap, extra = parse_book(fields)
        return day, snap, extra

    async def save(self, day: str, snapshot: dict[str, Any], extra: dict[str, Any]) -> str | None:
        """Write the book of ``day`` and the pointer in one pipeline; returns the kill latch value (or None)."""
        key = self.keys.book(day)
        try:
            async with self.client.pipeline(transaction=True) as p:
                p.hset(key, mapping=book_fields(snapshot, extra))
                p.expire(key, BOOK_TTL_S)
                p.set(self.keys.current, day)
                p.get(self.keys.kill)
                res = await p.execute()
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis write failed: {exc}") from exc
        return res[-1]

    async def write_intent(self, order_id: str, symbol: str, qty: int, closing: bool) -> None:
        """Write ahead the order about to be sent (before the broker sees it; review D12). With
        AOF ``appendfsync always`` (the stress's and the chart's Redis) it is on disk when this
        returns. Raises :class:`StateUnavailable`."""
        body = {"id": order_id, "symbol": symbol, "qty": int(qty), "closing": bool(closing), "written_at": time.time()}
        try:
            await self.client.set(self.keys.intent, json.dumps(body), ex=BOOK_TTL_S)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis write failed: {exc}") from exc

    async def read_intent(self) -> dict[str, Any] | None:
        """The last order intent written ahead (decoded JSON), or None."""
        try:
            raw = await self.client.get(self.keys.intent)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis read failed: {exc}") from exc
        return None if raw is None else json.loads(raw)

    async def read_kill(self) -> str | None:
        """The kill latch value (JSON of the kill message), or None if not killed."""
        try:
            return await self.client.get(self.keys.kill)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis read failed: {exc}") from exc

    async def set_kill(self, value: str | None) -> None:
        """Set (value) or clear (None) the kill latch."""
        try:
            if value is None:
                await self.client.delete(self.keys.kill)
            else:
                await self.client.set(self.keys.kill, value)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis write failed: {exc}") from exc

    async def ack(self, body: dict[str, Any]) -> None:
        """Write this role's kill acknowledgement (JSON ``body``)."""
        try:
            await self.client.set(self.keys.kill_ack(), json.dumps(body), ex=ACK_TTL_S)
        except (RedisError, OSError) as exc:
            raise StateUnavailable(f"redis write failed: {exc}") from exc

    async def close(self) -> None:
        """Close the client's connections."""
        try:
            await self.client.aclose()
        except (RedisError, OSError):
            pass
