"""The per-strategy Redis ACL user (quantramp.operator.redisacl): the rule builder, the derived password, the
create-only Secret protocol against a fake API server that refuses every read (concurrent reconciles,
restarts, a re-created strategy), and what the handlers do with them (no API server, no Redis)."""

from __future__ import annotations

import asyncio
import base64
import copy
import fnmatch
import hashlib
import hmac
import json
import threading

import pytest
from kubernetes.client import ApiException

from quantramp.operator import handlers as H
from quantramp.operator import redisacl as R
from quantramp.trader import allocation as alloc
from quantramp.trader.state import Keys

OWNER = {"apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy",
         "metadata": {"name": "aapl-meanrev", "namespace": "trading", "uid": "uid-1"}}
KEY = b"k" * 32


def test_the_rules_allow_exactly_the_traders_commands_after_minus_all():
    rules = R.acl_rules("trading", "aapl-meanrev")
    assert rules[:2] == ["reset", "on"] and "+@all" not in rules and "~*" not in rules and "allkeys" not in rules
    i = rules.index("-@all")
    assert rules[i + 1:] == [f"+{c}" for c in R.TRADER_COMMANDS]
    assert not [r for r in rules if r.startswith("+") and "@" in r], "no command categories: each command by name"
    assert "+publish" not in rules and "+psubscribe" not in rules and "+keys" not in rules and "+flushall" not in rules
    assert [r for r in rules if r.startswith("&")] == ["&quantramp:trading:aapl-meanrev:kill"]
    assert not [r for r in rules if r.startswith(">") or r.startswith("#")], "no password in the rules"


def _patterns(rules: list[str], mode: str) -> list[str]:
    return [r.split("~", 1)[1] for r in rules if r.startswith(f"%{mode}~") or r.startswith("~")]


def _allowed(rules: list[str], mode: str, key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, p) for p in _patterns(rules, mode))


def test_the_key_patterns_cover_every_trader_key_of_the_strategy_and_no_other_strategys():
    rules = R.acl_rules("trading", "a")
    own = Keys("trading", "a", "challenger", "r1-canary-1")
    written = [own.book("2026-07-30"), own.current, own.intent, own.retired, own.kill, own.kill_ack()]
    operators = [own.live_scope, alloc.key("trading", "a", "champion")]  # written by the operator only
    for k in written:
        assert _allowed(rules, "R", k) and _allowed(rules, "W", k), k
    for k in operators:
        assert _allowed(rules, "R", k) and not _allowed(rules, "W", k), k
    # other strategies: a longer name with the same start, another namespace, a dotted name
    for other in (Keys("trading", "a-b", "champion", "v1"), Keys("other", "a", "champion", "v1"), Keys("trading", "a.b", "champion")):
        for k in (other.book("2026-07-30"), other.current, other.kill, other.kill_ack(), other.live_scope):
            assert not _allowed(rules, "R", k) and not _allowed(rules, "W", k), k


@pytest.mark.parametrize("ns,name", [("trading", "a*"), ("trading", "a:b"), ("tr?ding", "a"), ("trading", "[ab]"), ("trading", ""),
                                     ("Trading", "a"), ("trading", "a b")])
def test_names_that_could_widen_a_pattern_or_collide_are_refused(ns, name):
    with pytest.raises(ValueError):
        R.acl_rules(ns, name)
    with pytest.raises(ValueError):
        R.username(ns, name)


def test_users_and_secret_names_never_collide():
    names = ["a", "a-trader-redis", "a-b", "a.b", "ab"]
    assert len({R.secret_name(n) for n in names}) == len(names)
    users = {R.username(ns, n) for ns in ("x", "x-y") for n in names}
    assert len(users) == 2 * len(names)
    assert R.username("trading", "aapl") == "qr:trading:aapl"


def test_the_password_reaches_redis_as_its_hash_only():
    rule = R.password_rule("s3cret")
    assert rule.startswith("#") and len(rule) == 65 and "s3cret" not in rule
    with pytest.raises(ValueError):
        R.password_rule("")


def test_the_password_is_the_hmac_of_namespace_name_uid_and_changes_with_each():
    pw = R.derive_password(KEY, "trading", "aapl-meanrev", "uid-1")
    mac = hmac.new(KEY, b"trading/aapl-meanrev/uid-1", hashlib.sha256).digest()
    assert pw == base64.urlsafe_b64encode(mac).decode().rstrip("=") and len(pw) == 43  # 256 bits
    assert pw == R.derive_password(KEY, "trading", "aapl-meanrev", "uid-1")  # deterministic
    others = {R.derive_password(KEY, "trading", "aapl-meanrev", "uid-2"),  # deleted and re-created
              R.derive_password(KEY, "other", "aapl-meanrev", "uid-1"), R.derive_password(KEY, "trading", "aapl", "uid-1"),
              R.derive_password(b"j" * 32, "trading", "aapl-meanrev", "uid-1")}  # a rotated key
    assert pw not in others and len(others) == 4
    with pytest.raises(ValueError):
        R.derive_password(KEY, "trading", "aapl-meanrev", "")


def test_the_key_is_checked_and_its_fingerprint_is_neither_key_nor_password():
    with pytest.raises(ValueError, match="at least 32"):
        R.check_key("short")
    assert R.check_key(" " + "x" * 32 + "\n") == b"x" * 32
    fp = R.key_fingerprint(KEY)
    assert len(fp) == 8 and fp == hashlib.sha256(hmac.new(KEY, b"fingerprint", hashlib.sha256).digest()).hexdigest()[:8]
    assert fp != R.key_fingerprint(b"j" * 32) and fp not in KEY.hex() and fp not in R.derive_password(KEY, "trading", "a", "u")


def test_the_secret_is_owned_by_the_strategy_and_the_trader_env_only_references_it():
    m = R.secret_manifest(OWNER, "pw-1")
    assert m["metadata"]["name"] == "aapl-meanrev-trader-redis" and m["metadata"]["namespace"] == "trading"
    (ref,) = m["metadata"]["ownerReferences"]
    assert ref["uid"] == "uid-1" and ref["controller"] is True and ref["kind"] == "TradingStrategy"
    assert m["stringData"] == {"username": "qr:trading:aapl-meanrev", "password": "pw-1"}
    env = R.trader_env("aapl-meanrev")
    assert [e["name"] for e in env] == ["QR_REDIS_USERNAME", "QR_REDIS_PASSWORD"]
    assert all(set(e) == {"name", "valueFrom"} and e["valueFrom"]["secretKeyRef"]["name"] == "aapl-meanrev-trader-redis" for e in env)


# --- the create-only protocol against a fake API server ---------------------------------------


class FakeCore:
    """CoreV1Api's create of Secrets, atomic as the API server's (409 on an existing name). Every read is
    refused (403), as the chart's RBAC refuses it: a test fails if the code reads a Secret back."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict] = {}
        self.lock = threading.Lock()
        self.creates = self.reads = 0
        self.barrier: threading.Barrier | None = None

    def create_namespaced_secret(self, ns, body, _preload_content=True):
        if self.barrier is not None:
            self.barrier.wait(5)  # every caller is past any "does it exist?" before any create lands
        with self.lock:
            self.creates += 1
            key = (ns, body["metadata"]["name"])
            if key in self.secrets:
                raise ApiException(status=409, reason="AlreadyExists")
            stored = copy.deepcopy(body)
            stored["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in stored.pop("stringData").items()}
            self.secrets[key] = stored

    def _refuse(self, *args, **kwargs):
        with self.lock:
            self.reads += 1
        raise ApiException(status=403, reason="Forbidden: secrets get/list/watch/patch not granted")

    read_namespaced_secret = list_namespaced_secret = list_secret_for_all_namespaces = _refuse
    patch_namespaced_secret = replace_namespaced_secret = _refuse


def stored_password(core: FakeCore) -> str:
    (secret,) = core.secrets.values()
    return base64.b64decode(secret["data"]["password"]).decode()


def test_concurrent_reconciles_create_one_secret_and_all_derive_its_password_without_reading():
    core = FakeCore()
    core.barrier = threading.Barrier(4)
    got: list[tuple[str, bool]] = []
    threads = [threading.Thread(target=lambda: got.append(R.ensure_secret(core, OWNER, KEY))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(core.secrets) == 1 and core.creates == 4 and core.reads == 0
    assert {pw for pw, _ in got} == {stored_password(core)} and sorted(c for _, c in got) == [False, False, False, True]


def test_an_existing_secret_is_never_read_nor_rewritten_and_a_restart_derives_the_same_password():
    core = FakeCore()
    first, created = R.ensure_secret(core, OWNER, KEY)
    before = copy.deepcopy(core.secrets)
    assert created and R.ensure_secret(core, OWNER, KEY) == (first, False)  # a restarted operator: 409, same password
    assert core.secrets == before and core.reads == 0


def test_other_api_errors_propagate():
    class Forbidden(FakeCore):
        def create_namespaced_secret(self, ns, body, _preload_content=True):
            raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(ApiException) as e:
        R.ensure_secret(Forbidden(), OWNER, KEY)
    assert e.value.status == 403


# --- the handlers' use of them ------------------------------------------------------------------


class FakeRedis:
    def __init__(self) -> None:
        self.users: dict[str, list[str]] = {}
        self.calls: list[tuple] = []

    def execute_command(self, *args):
        self.calls.append(args)
        if args[:2] == ("ACL", "SETUSER"):
            self.users[args[2]] = list(args[3:])
            return "OK"
        if args[:2] == ("ACL", "DELUSER"):
            return int(self.users.pop(args[2], None) is not None)
        raise AssertionError(args)


@pytest.fixture
def shell(monkeypatch):
    H.CTX.reset_memory()
    monkeypatch.setattr(H.CTX, "core", FakeCore(), raising=False)
    monkeypatch.setattr(H.CTX, "apps", FakeApps(), raising=False)
    monkeypatch.setattr(H.CTX, "redis", FakeRedis())
    monkeypatch.setattr(H.CTX, "pod_env", {"REDIS_URL": "redis://r:6379/0"}, raising=False)
    monkeypatch.setattr(H.CTX, "acl_key", KEY)
    monkeypatch.setattr(H.CTX, "acl_fingerprint", R.key_fingerprint(KEY))
    yield H.CTX
    H.CTX.reset_memory()


class FakeApps:
    """AppsV1Api's list and merge patch of Deployments (replicas only) and CoreV1Api's pod list, linked: a
    Deployment scaled to 0 has no pods after ``lag`` more pod lists (its pods terminating)."""

    def __init__(self) -> None:
        self.replicas: dict[str, int] = {}
        self.lag = 2
        self.events: list[str] = []

    def list_namespaced_deployment(self, ns, label_selector="", _preload_content=True):
        items = [{"metadata": {"name": n}} for n in self.replicas]
        return type("Resp", (), {"data": json.dumps({"items": items}).encode()})()

    def patch_namespaced_deployment(self, name, ns, body):
        self.replicas[name] = body["spec"]["replicas"]
        self.events.append(f"scale {name} {self.replicas[name]}")

    def pods(self) -> list[dict]:
        if any(self.replicas.values()) or self.lag > 0:
            self.lag -= 0 if any(self.replicas.values()) else 1
            return [{"metadata": {"name": f"{n}-pod"}} for n in self.replicas]
        return []


def test_the_user_gets_the_derived_password_and_no_secret_is_ever_read(shell):
    H._ensure_redis_user(OWNER)
    H._ensure_redis_user(OWNER)  # a periodic re-apply (Redis may have restarted): SETUSER again, no API call
    assert shell.core.creates == 1 and shell.core.reads == 0
    rules = shell.redis.users["qr:trading:aapl-meanrev"]
    pw = R.derive_password(KEY, "trading", "aapl-meanrev", "uid-1")
    assert stored_password(shell.core) == pw
    assert rules[-1] == R.password_rule(pw) and rules[:-1] == R.acl_rules("trading", "aapl-meanrev")
    assert len([c for c in shell.redis.calls if c[1] == "SETUSER"]) == 2
    shell.reset_memory()  # an operator restart: 409, the same derived password, no read
    H._ensure_redis_user(OWNER)
    assert shell.core.creates == 2 and shell.core.reads == 0 and shell.redis.users["qr:trading:aapl-meanrev"] == rules
    H._ensure_redis_user(OWNER)  # after a 409 the create is tried again (the Secret may be a deleted namesake's)
    assert shell.core.creates == 3 and shell.core.reads == 0


def test_four_concurrent_reconciles_one_secret_one_password_no_read(shell):
    shell.core.barrier = threading.Barrier(4)
    threads = [threading.Thread(target=H._ensure_redis_user, args=(OWNER,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(shell.core.secrets) == 1 and shell.core.reads == 0
    sets = [c for c in shell.redis.calls if c[1] == "SETUSER"]
    assert len(sets) == 4 and {c[-1] for c in sets} == {R.password_rule(stored_password(shell.core))}


def test_without_a_key_there_are_no_users(shell, monkeypatch):
    monkeypatch.setattr(H.CTX, "acl_key", None)
    assert not H.redis_users()
    assert H.acl_key_from_environment({}) == (None, "")
    assert H.acl_key_from_environment({"QR_REDIS_ACL_KEY": "k" * 32}) == (KEY, R.key_fingerprint(KEY))
    with pytest.raises(ValueError):
        H.acl_key_from_environment({"QR_REDIS_ACL_KEY": "short"})


def test_deletion_stops_the_pods_before_removing_the_user_and_a_tick_in_flight_does_not_bring_it_back(shell, monkeypatch):
    H._ensure_redis_user(OWNER)
    shell.apps.replicas = {"aapl-meanrev-champion": 1, "aapl-meanrev-challenger": 1}
    seen_users_while_pods: list[bool] = []

    def pods(ns, name, role=None):
        out = shell.apps.pods()
        seen_users_while_pods.append(bool(out) and "qr:trading:aapl-meanrev" in shell.redis.users)
        return out

    monkeypatch.setattr(H, "_pods", pods)
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    asyncio.run(H.drop_redis_user(body=OWNER))
    assert shell.apps.replicas == {"aapl-meanrev-champion": 0, "aapl-meanrev-challenger": 0}
    assert all(seen_users_while_pods[:-1]) and not seen_users_while_pods[-1]  # the user outlived every pod
    assert "qr:trading:aapl-meanrev" not in shell.redis.users
    H._ensure_redis_user(OWNER)  # the strategy's last tick, still running
    assert "qr:trading:aapl-meanrev" not in shell.redis.users
    recreated = copy.deepcopy(OWNER)
    recreated["metadata"]["uid"] = "uid-2"
    shell.core.secrets.clear()  # the garbage collector took the old Secret
    H._ensure_redis_user(recreated)
    new_pw = R.derive_password(KEY, "trading", "aapl-meanrev", "uid-2")
    assert new_pw != R.derive_password(KEY, "trading", "aapl-meanrev", "uid-1")
    assert stored_password(shell.core) == new_pw and shell.redis.users["qr:trading:aapl-meanrev"][-1] == R.password_rule(new_pw)


def test_the_drain_is_bounded(shell, monkeypatch):
    shell.apps.replicas = {"stuck": 1}
    monkeypatch.setattr(H, "_pods", lambda ns, name, role=None: [{"metadata": {"name": "stuck-pod"}}])
    monkeypatch.setattr(asyncio, "sleep", _no_sleep)
    clock = iter(range(0, 10_000, 5))
    monkeypatch.setattr(H.time, "monotonic", lambda: float(next(clock)))
    assert asyncio.run(H._drain_traders("trading", "aapl-meanrev", deadline=30)) is False


async def _no_sleep(_s):
    return None


def test_without_a_redis_for_the_pods_there_are_no_users(shell, monkeypatch):
    monkeypatch.setattr(H.CTX, "pod_env", {})
    assert not H.redis_users()
    asyncio.run(H.drop_redis_user(body=OWNER))
    assert shell.redis.calls == []


def test_the_operators_own_redis_client_takes_its_password_from_the_env_not_the_url():
    c = H.redis_from_environment({"QR_REDIS_URL": "redis://r:6379/0", "QR_REDIS_PASSWORD": "opw", "QR_REDIS_USERNAME": "qr-operator"})
    kw = c.connection_pool.connection_kwargs
    assert (kw["host"], kw["password"], kw["username"]) == ("r", "opw", "qr-operator")
    c = H.redis_from_environment({"REDIS_URL": "redis://r:6379/0"})
    assert c.connection_pool.connection_kwargs.get("password") is None
    assert H.redis_from_environment({}) is None
