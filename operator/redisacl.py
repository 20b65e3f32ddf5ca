"""A Redis ACL user per TradingStrategy: its trader pods touch only their own strategy's keys and kill channel.

The trader's Redis names all start with ``quantramp:{namespace}:{strategy}:`` (:class:`quantramp.trader.state.Keys`,
:func:`quantramp.trader.allocation.key`); Kubernetes names hold no ``:`` and no glob character, so that
prefix is the strategy's alone. For each strategy the operator keeps

- a Secret ``<strategy>-trader-redis`` in the strategy's namespace (:func:`secret_name`), keys
  ``username`` and ``password``, owned by the TradingStrategy (deleted with it by the garbage
  collector), its random password generated once and never rewritten (:func:`ensure_secret`);
- a Redis user ``qr:<namespace>:<strategy>`` (:func:`username`) with exactly :func:`acl_rules`
  (``ACL SETUSER``, :func:`ensure_user`), removed when the strategy is deleted (:func:`delete_user`).

The trader pods get the Secret through ``secretKeyRef`` (:func:`trader_env`); no password is ever
rendered into a Deployment. The rules allow the commands the trader sends (:data:`TRADER_COMMANDS`) and
nothing else (``-@all``), reads of every key of the strategy, writes of only the keys the trader writes
(books, resume pointer, order intent, stop record, kill latch, kill acknowledgements: not the live
allocation nor the live book scope, which the operator writes, so a pod cannot raise its own capital),
and the strategy's kill channel alone (SUBSCRIBE; the trader never publishes). Key permissions
(``%R~``/``%W~``) need Redis 7.0 or later.

Race and restart safety: the Secret is created with the password before Redis hears of it; a
concurrent reconcile (another replica) that loses the create reads the winner's Secret (409), so both
set the same password; an operator restarted between the two steps reads the Secret back. ``ACL
SETUSER`` with ``reset`` first is idempotent: the user's whole definition is replaced, atomically, and
connected clients of the user stay connected (measured on Redis 7.0). The password reaches Redis as
its SHA-256 (``#<hex>``), so it is in no command log.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from typing import Any

from kubernetes.client import ApiException

from quantramp.trader import allocation as alloc
from quantramp.trader.state import Keys

#: every command the trader pod sends (trader/state.py, trader/killswitch.py, trader/server.py); redis-py's
#: handshake (AUTH / HELLO) needs no permission, and its optional CLIENT SETINFO is refused and ignored
TRADER_COMMANDS = (
    "ping",         # StateStore.ping: readiness and outage recovery
    "get",          # the kill latch, resume pointer, order intent, live allocation, live book scope
    "set",          # resume pointer, order intent (EX), stop record (EX), kill latch, kill acknowledgement (EX)
    "del",          # the kill latch, on an unkill
    "hset",         # the book of the day
    "hgetall",      # the book, on start
    "expire",       # the book of the day
    "multi", "exec", "discard",  # StateStore.save's transactional pipeline
    "subscribe", "unsubscribe",  # the kill channel listener
    "select",       # redis-py's handshake on a URL naming a database other than 0 (key permissions hold in every one)
)
#: keys the trader writes, as suffixes after ``quantramp:{ns}:{strategy}``: (Keys.book/current/intent/
#: retired under any role and book scope, Keys.kill, Keys.kill_ack)
TRADER_WRITES = ("*:book", "*:current", "*:intent", "*:retired", "kill", "kill:ack:*")
#: label on the Secrets the operator creates
MANAGED_BY = {"app.kubernetes.io/managed-by": "quantramp", "app.kubernetes.io/component": "trader-redis"}
#: the Secret's keys
USERNAME_KEY, PASSWORD_KEY = "username", "password"
#: env names under which trader pods get the Secret's keys (read by quantramp.trader.server.TraderSettings)
USERNAME_ENV, PASSWORD_ENV = "QR_REDIS_USERNAME", "QR_REDIS_PASSWORD"
_SAFE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _check(namespace: str, strategy: str) -> None:
    for what, v in (("namespace", namespace), ("strategy", strategy)):
        if not _SAFE.match(v or ""):
            raise ValueError(f"{what} {v!r} is not a Kubernetes name (lowercase letters, digits, '-', '.'): it could "
                             "widen the strategy's Redis key pattern")


def username(namespace: str, strategy: str) -> str:
    """The strategy's Redis ACL user, ``qr:<namespace>:<strategy>``. Raises ValueError on a name that is
    not a Kubernetes name (``:``, ``*``, ``?``, ``[``, ``\\`` or spaces could make users or patterns collide)."""
    _check(namespace, strategy)
    return f"qr:{namespace}:{strategy}"


def secret_name(strategy: str) -> str:
    """The strategy's Redis Secret, ``<strategy>-trader-redis`` (in the strategy's namespace). Distinct
    strategies give distinct names: the suffix is fixed, so ``a`` and ``a-trader-redis`` map to
    ``a-trader-redis`` and ``a-trader-redis-trader-redis``."""
    return f"{strategy}-trader-redis"


def acl_rules(namespace: str, strategy: str) -> list[str]:
    """The ACL SETUSER rules of the strategy's user, without its password: ``reset`` (forget any earlier
    definition), ``on``, read of every key under ``quantramp:{ns}:{strategy}:``, write of the keys the
    trader writes (:data:`TRADER_WRITES`), the kill channel only, ``-@all`` then each of
    :data:`TRADER_COMMANDS`. Pure. Raises ValueError as :func:`username`."""
    _check(namespace, strategy)
    keys = Keys(namespace, strategy, "")
    prefix = keys.prefix
    assert alloc.key(namespace, strategy, "champion").startswith(prefix + ":")  # one prefix for every trader key
    return ["reset", "on", f"%R~{prefix}:*", *(f"%W~{prefix}:{suffix}" for suffix in TRADER_WRITES),
            f"&{keys.kill}", "-@all", *(f"+{c}" for c in TRADER_COMMANDS)]


def password_rule(password: str) -> str:
    """The rule that sets ``password`` as the user's only one, by its SHA-256 (``#<hex>``)."""
    if not password:
        raise ValueError("empty Redis password")
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def new_password() -> str:
    """A random password: 32 bytes from the OS's CSPRNG, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    """A controller owner reference to ``owner`` (a TradingStrategy body with apiVersion, kind, metadata.name/uid)."""
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def secret_manifest(owner: dict[str, Any], password: str) -> dict[str, Any]:
    """The strategy's Redis Secret (type Opaque, ``stringData`` username and password, owned by ``owner``). Pure."""
    meta = owner["metadata"]
    ns, name = meta["namespace"], meta["name"]
    return {
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": secret_name(name), "namespace": ns,
                     "labels": {**MANAGED_BY, "quantramp.io/strategy": name},
                     "ownerReferences": [owner_reference(owner)]},
        "stringData": {USERNAME_KEY: username(ns, name), PASSWORD_KEY: password},
    }


def trader_env(strategy: str) -> list[dict[str, Any]]:
    """The trader container's env entries for its Redis user: ``secretKeyRef`` to :func:`secret_name`, never a value."""
    ref = secret_name(strategy)
    return [{"name": USERNAME_ENV, "valueFrom": {"secretKeyRef": {"name": ref, "key": USERNAME_KEY}}},
            {"name": PASSWORD_ENV, "valueFrom": {"secretKeyRef": {"name": ref, "key": PASSWORD_KEY}}}]


class ForeignSecret(RuntimeError):
    """A Secret of the strategy's Redis Secret name exists but is not this strategy's (another owner or none):
    the operator neither reads its password into Redis nor overwrites it."""


def password_of(secret: dict[str, Any], owner: dict[str, Any]) -> str:
    """The password in ``secret`` (a Secret as JSON: base64 ``data``) if it is ``owner``'s Redis Secret.

    Raises :class:`ForeignSecret` when its controller owner reference is not ``owner`` (a strategy deleted
    and re-created under the same name: the old Secret is still waiting for the garbage collector; or a
    Secret somebody else made), and ValueError when it has no password. Pure."""
    uid = owner["metadata"]["uid"]
    refs = (secret.get("metadata") or {}).get("ownerReferences") or []
    if not any(r.get("uid") == uid and r.get("controller") for r in refs):
        raise ForeignSecret(f"Secret {secret['metadata']['name']} exists and is not owned by TradingStrategy "
                            f"{owner['metadata']['name']} (uid {uid}): rename or delete it (or wait for the garbage "
                            "collector if the strategy was re-created)")
    raw = (secret.get("data") or {}).get(PASSWORD_KEY)
    if not raw:
        raise ValueError(f"Secret {secret['metadata']['name']} has no {PASSWORD_KEY!r}")
    return base64.b64decode(raw).decode()


# --- adapters (thin: one API call each) -------------------------------------------------------------


def ensure_secret(core: Any, owner: dict[str, Any]) -> str:
    """Create the strategy's Redis Secret with a new random password, or, when it exists (409), read it;
    return its password. Never rewrites an existing Secret.

    ``core`` is a ``kubernetes.client.CoreV1Api`` (needs ``secrets`` create and get in the strategy's
    namespace). Raises :class:`ForeignSecret` (see :func:`password_of`) and ``ApiException`` on API errors."""
    meta = owner["metadata"]
    ns, name = meta["namespace"], meta["name"]
    password = new_password()
    try:
        core.create_namespaced_secret(ns, secret_manifest(owner, password), _preload_content=False)
        return password
    except ApiException as exc:
        if exc.status != 409:
            raise
    resp = core.read_namespaced_secret(secret_name(name), ns, _preload_content=False)
    return password_of(json.loads(resp.data), owner)


def ensure_user(client: Any, namespace: str, strategy: str, password: str) -> None:
    """``ACL SETUSER`` the strategy's user to exactly :func:`acl_rules` with ``password`` (idempotent).

    ``client`` is a synchronous redis-py client of a user allowed ``ACL SETUSER``. Raises ``redis.RedisError``
    (e.g. ``ResponseError`` from a Redis older than 7.0, which has no key permissions)."""
    client.execute_command("ACL", "SETUSER", username(namespace, strategy), *acl_rules(namespace, strategy),
                           password_rule(password))


def delete_user(client: Any, namespace: str, strategy: str) -> bool:
    """``ACL DELUSER`` the strategy's user (its connected clients are disconnected). Returns whether it
    existed. Raises ``redis.RedisError``."""
    return bool(client.execute_command("ACL", "DELUSER", username(namespace, strategy)))
