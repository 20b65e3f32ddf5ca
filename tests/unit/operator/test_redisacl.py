"""The per-strategy Redis ACL user (quantramp.operator.redisacl): the rule builder, the Secret, its
create-once / read-back protocol against a fake API server (concurrent reconciles, restarts, a
foreign Secret), and what the handlers do with them (no API server, no Redis)."""

from __future__ import annotations

import base64
import copy
import fnmatch
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
    p1, p2 = R.new_password(), R.new_password()
    assert p1 != p2 and len(p1) >= 40


def test_the_secret_is_owned_by_the_strategy_and_the_trader_env_only_references_it():
    m = R.secret_manifest(OWNER, "pw-1")
    assert m["metadata"]["name"] == "aapl-meanrev-trader-redis" and m["metadata"]["namespace"] == "trading"
    (ref,) = m["metadata"]["ownerReferences"]
    assert ref["uid"] == "uid-1" and ref["controller"] is True and ref["kind"] == "TradingStrategy"
    assert m["stringData"] == {"username": "qr:trading:aapl-meanrev", "password": "pw-1"}
    env = R.trader_env("aapl-meanrev")
    assert [e["name"] for e in env] == ["QR_REDIS_USERNAME", "QR_REDIS_PASSWORD"]
    assert all(set(e) == {"name", "valueFrom"} and e["valueFrom"]["secretKeyRef"]["name"] == "aapl-meanrev-trader-redis" for e in env)


# --- the create-once protocol against a fake API server ---------------------------------------


class FakeCore:
    """CoreV1Api's create/read of Secrets, atomic as the API server's (409 on an existing name)."""

    def __init__(self) -> None:
        self.secrets: dict[tuple[str, str], dict] = {}
        self.lock = threading.Lock()
        self.creates = self.reads = 0
        self.barrier: threading.Barrier | None = None

    def create_namespaced_secret(self, ns, body, _preload_content=True):
        if self.barrier is not None:
            self.barrier.wait(5)  # every caller is past its own "does it exist?" before any create lands
        with self.lock:
            self.creates += 1
            key = (ns, body["metadata"]["name"])
            if key in self.secrets:
                raise ApiException(status=409, reason="AlreadyExists")
            stored = copy.deepcopy(body)
            stored["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in stored.pop("stringData").items()}
            self.secrets[key] = stored

    def read_namespaced_secret(self, name, ns, _preload_content=True):
        with self.lock:
            self.reads += 1
            if (ns, name) not in self.secrets:
                raise ApiException(status=404, reason="NotFound")
            return type("Resp", (), {"data": json.dumps(self.secrets[(ns, name)]).encode()})()


def stored_password(core: FakeCore) -> str:
    (secret,) = core.secrets.values()
    return base64.b64decode(secret["data"]["password"]).decode()


def test_concurrent_reconciles_create_one_secret_and_agree_on_its_password():
    core = FakeCore()
    core.barrier = threading.Barrier(4)
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(R.ensure_secret(core, OWNER))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert len(core.secrets) == 1 and core.creates == 4 and core.reads == 3
    assert set(got) == {stored_password(core)}


def test_an_existing_secret_is_read_back_never_rewritten():
    core = FakeCore()
    first = R.ensure_secret(core, OWNER)
    before = copy.deepcopy(core.secrets)
    assert R.ensure_secret(core, OWNER) == first  # a restarted operator: the same password
    assert core.secrets == before


def test_a_secret_of_another_owner_is_refused_not_read_into_redis():
    core = FakeCore()
    R.ensure_secret(core, OWNER)
    recreated = copy.deepcopy(OWNER)
    recreated["metadata"]["uid"] = "uid-2"  # deleted and re-created: the old Secret awaits the garbage collector
    with pytest.raises(R.ForeignSecret, match="not owned by TradingStrategy aapl-meanrev"):
        R.ensure_secret(core, recreated)
    foreign = {"metadata": {"name": "aapl-meanrev-trader-redis"}, "data": {"password": base64.b64encode(b"theirs").decode()}}
    with pytest.raises(R.ForeignSecret):
        R.password_of(foreign, OWNER)


def test_other_api_errors_propagate():
    class Forbidden(FakeCore):
        def create_namespaced_secret(self, ns, body, _preload_content=True):
            raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(ApiException) as e:
        R.ensure_secret(Forbidden(), OWNER)
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
    monkeypatch.setattr(H.CTX, "redis", FakeRedis())
    monkeypatch.setattr(H.CTX, "pod_env", {"REDIS_URL": "redis://r:6379/0"}, raising=False)
    yield H.CTX
    H.CTX.reset_memory()


def test_the_user_gets_the_secrets_password_and_the_secret_is_read_once_per_process(shell):
    H._ensure_redis_user(OWNER)
    H._ensure_redis_user(OWNER)  # a periodic re-apply (Redis may have restarted): SETUSER again, no API call
    assert shell.core.creates == 1 and shell.core.reads == 0
    rules = shell.redis.users["qr:trading:aapl-meanrev"]
    assert rules[-1] == R.password_rule(stored_password(shell.core)) and rules[:-1] == R.acl_rules("trading", "aapl-meanrev")
    assert len([c for c in shell.redis.calls if c[1] == "SETUSER"]) == 2
    shell.reset_memory()  # an operator restart: the password comes back from the Secret
    H._ensure_redis_user(OWNER)
    assert shell.core.creates == 2 and shell.core.reads == 1 and shell.redis.users["qr:trading:aapl-meanrev"] == rules


def test_deletion_removes_the_user_and_a_tick_in_flight_does_not_bring_it_back(shell):
    import asyncio

    H._ensure_redis_user(OWNER)
    asyncio.run(H.drop_redis_user(body=OWNER))
    assert "qr:trading:aapl-meanrev" not in shell.redis.users
    H._ensure_redis_user(OWNER)  # the strategy's last tick, still running
    assert "qr:trading:aapl-meanrev" not in shell.redis.users
    recreated = copy.deepcopy(OWNER)
    recreated["metadata"]["uid"] = "uid-2"
    shell.core.secrets.clear()  # the garbage collector took the old Secret
    H._ensure_redis_user(recreated)
    assert shell.redis.users["qr:trading:aapl-meanrev"][-1] == R.password_rule(stored_password(shell.core))


def test_without_a_redis_for_the_pods_there_are_no_users(shell, monkeypatch):
    monkeypatch.setattr(H.CTX, "pod_env", {})
    assert not H.redis_users()
    import asyncio

    asyncio.run(H.drop_redis_user(body=OWNER))
    assert shell.redis.calls == []


def test_the_operators_own_redis_client_takes_its_password_from_the_env_not_the_url():
    c = H.redis_from_environment({"QR_REDIS_URL": "redis://r:6379/0", "QR_REDIS_PASSWORD": "opw", "QR_REDIS_USERNAME": "qr-operator"})
    kw = c.connection_pool.connection_kwargs
    assert (kw["host"], kw["password"], kw["username"]) == ("r", "opw", "qr-operator")
    c = H.redis_from_environment({"REDIS_URL": "redis://r:6379/0"})
    assert c.connection_pool.connection_kwargs.get("password") is None
    assert H.redis_from_environment({}) is None
