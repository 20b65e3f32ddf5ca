"""A Redis ACL user per TradingStrategy: its trader pods touch only their own strategy's keys and kill channel.

The trader's Redis names all start with ``quantramp:{namespace}:{strategy}:`` (:class:`quantramp.trader.state.Keys`,
:func:`quantramp.trader.allocation.key`); Kubernetes names hold no ``:`` and no glob character, so that
prefix is the strategy's alone. For each strategy the operator keeps

- a Secret ``<strategy>-trader-redis`` in the strategy's namespace (:func:`secret_name`), keys
  ``username`` and ``password``, owned by the TradingStrategy (deleted with it by the garbage
  collector), created once and never read, updated or rewritten by the operator (:func:`ensure_secret`);
- a Redis user ``qr:<namespace>:<strategy>`` (:func:`username`) with exactly :func:`acl_rules`
  (``ACL SETUSER``, :func:`ensure_user`), removed when the strategy is deleted (:func:`delete_user`).

The password is derived, not random: ``HMAC-SHA256(key, "<namespace>/<strategy>/<uid>")``, URL-safe
base64 (:func:`derive_password`; 256 bits), where ``key`` is a platform secret the operator gets in
``QR_REDIS_ACL_KEY`` (the chart: ``secretKeyRef`` to ``redis.aclKeySecret``/``redis.aclKeyKey``). So the
operator needs only ``create`` on Secrets, never ``get``: every replica, every reconcile and every restart
computes the same password without reading it back, a create that loses to another (409 AlreadyExists)
is a success, and a strategy deleted and re-created under the same name (a new uid) gets a new password.

The trader pods get the Secret through ``secretKeyRef`` (:func:`trader_env`); no password is ever
rendered into a Deployment. The rules allow the commands the trader sends (:data:`TRADER_COMMANDS`) and
nothing else (``-@all``), reads of every key of the strategy, writes of only the keys the trader writes
(books, resume pointer, order intent, stop record, kill latch, kill acknowledgements: not the live
allocation nor the live book scope, which the operator writes, so a pod cannot raise its own capital),
and the strategy's kill channel alone (SUBSCRIBE; the trader never publishes). Key permissions
(``%R~``/``%W~``) need Redis 7.0 or later.

Race and restart safety: the Secret is created before Redis hears of the user; ``ACL SETUSER`` with
``reset`` first is idempotent: the user's whole definition is replaced, atomically, and connected
clients of the user stay connected (measured on Redis 7.0). The password reaches Redis as its SHA-256
(``#<hex>``), so it is in no command log.

Limits of create-only (the operator cannot see what an existing Secret holds):

- a 409 on a Secret that is not this strategy's (someone else's Secret of that name, or the Secret of a
  deleted strategy of the same name that the garbage collector has not removed yet) is taken as success:
  the pods would read a password Redis does not know and fail to log in. :func:`ensure_secret` reports
  whether it created the Secret; the handlers try the create again at the next convergence until one
  succeeds (the garbage collector's case heals itself; a foreign Secret must be deleted by its owner).
- **Key rotation.** A new key derives new passwords; the existing Secrets still hold the old ones and the
  operator can neither read nor update them. The platform rotates by (1) updating the key Secret, (2)
  restarting the operator (it reads the key at start), (3) deleting the per-strategy Secrets
  (``kubectl delete secret -l app.kubernetes.io/component=trader-redis -A``): the operator re-creates
  each with the new password at its next convergence and sets the user's new password in Redis. Trader
  pod templates carry the key's fingerprint (:func:`key_fingerprint`, annotation
  :data:`KEY_FINGERPRINT_ANNOTATION`, never the password), so the new key rolls every trader pod and the
  new pods read the new Secret. Between (2) and (3) pods that restart cannot log in; do (3) right after (2).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
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
#: pod template annotation with :func:`key_fingerprint`: a key rotation changes it, so trader pods roll
KEY_FINGERPRINT_ANNOTATION = "quantramp.io/redis-acl-key"
#: the operator's env holding the key the passwords are derived from
KEY_ENV = "QR_REDIS_ACL_KEY"
#: shortest key accepted (bytes): the passwords are no stronger than it
MIN_KEY_BYTES = 32
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


def check_key(key: str) -> bytes:
    """The derivation key as bytes. Raises ValueError when it is shorter than :data:`MIN_KEY_BYTES`."""
    raw = (key or "").strip().encode()
    if len(raw) < MIN_KEY_BYTES:
        raise ValueError(f"{KEY_ENV} holds {len(raw)} bytes: give at least {MIN_KEY_BYTES} random bytes "
                         "(e.g. `openssl rand -hex 32`)")
    return raw


def derive_password(key: bytes, namespace: str, strategy: str, uid: str) -> str:
    """The strategy's password: ``HMAC-SHA256(key, "<namespace>/<strategy>/<uid>")``, URL-safe base64 without
    padding (43 characters, 256 bits). Pure: every replica and restart derives the same one; a new uid (the
    strategy re-created) or a new key gives another. Raises ValueError as :func:`username` or on an empty uid."""
    _check(namespace, strategy)
    if not uid:
        raise ValueError("the strategy has no uid")
    mac = hmac.new(key, f"{namespace}/{strategy}/{uid}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


def key_fingerprint(key: bytes) -> str:
    """8 hex characters identifying the key (first 8 of ``sha256(HMAC(key, "fingerprint"))``): not the key,
    not a password; put on trader pod templates so that a key rotation rolls them."""
    return hashlib.sha256(hmac.new(key, b"fingerprint", hashlib.sha256).digest()).hexdigest()[:8]


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


# --- adapters (thin: one API call each) -------------------------------------------------------------


def ensure_secret(core: Any, owner: dict[str, Any], key: bytes) -> tuple[str, bool]:
    """Create the strategy's Redis Secret with its derived password (:func:`derive_password`); an existing one
    (409 AlreadyExists) is left alone, never read. Returns the password and whether this call created the
    Secret (False: it existed, most likely made by an earlier reconcile, another replica or an operator
    before a restart, with the same password; see the module's limits).

    ``core`` is a ``kubernetes.client.CoreV1Api`` (needs only ``secrets`` create in the strategy's
    namespace). Raises ``ApiException`` on other API errors."""
    meta = owner["metadata"]
    password = derive_password(key, meta["namespace"], meta["name"], meta["uid"])
    try:
        core.create_namespaced_secret(meta["namespace"], secret_manifest(owner, password), _preload_content=False)
        return password, True
    except ApiException as exc:
        if exc.status != 409:
            raise
    return password, False


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
