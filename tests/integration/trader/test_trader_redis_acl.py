"""The per-strategy Redis ACL user (quantramp.operator.redisacl) against a real redis-server with a password:
the real trader runtime, logged in as its strategy's user, does all it does (books, order intents, live
allocation, kill latch and acknowledgements, the kill channel, the stop record of a retired pod) without
one refusal; the same user is refused (NOPERM) every key and the kill channel of another strategy, the
keys the operator writes for it, and commands the trader never sends. The isolation check is shown to
fail when the user is ``+@all ~* &*``, so it does test the rules."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import AuthenticationError, NoPermissionError

from quantramp.operator import redisacl
from quantramp.trader import allocation as alloc
from quantramp.trader import killswitch as ks
from quantramp.trader.state import Keys

pytestmark = pytest.mark.integration

ADMIN_PASSWORD = "admin-pw-7d1c"  # the operator's (default user's) password, as the chart's redis.existingSecret gives it
NS, A, B = "trading", "aapl-it", "msft-it"  # A: the conftest's pod strategy; B: another strategy in the same namespace
KEY = b"integration-test-key-0123456789abcdef"
PW_A, PW_B = redisacl.derive_password(KEY, NS, A, "uid-a"), redisacl.derive_password(KEY, NS, B, "uid-b")


@pytest.fixture()
def acl_redis(redis_server):
    """The test's redis-server with a password on the default user (the operator's login), users A and B set up
    as the operator sets them up; yields (url, admin client)."""
    Redis.from_url(redis_server.url).config_set("requirepass", ADMIN_PASSWORD)
    admin = Redis.from_url(redis_server.url, password=ADMIN_PASSWORD, decode_responses=True)
    redisacl.ensure_user(admin, NS, A, PW_A)
    redisacl.ensure_user(admin, NS, B, PW_B)
    admin.execute_command("ACL", "LOG", "RESET")
    yield redis_server.url, admin
    admin.close()


def user_a(url: str) -> AsyncRedis:
    return AsyncRedis.from_url(url, username=redisacl.username(NS, A), password=PW_A, decode_responses=True)


async def _until(cond, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


def test_the_real_trader_does_everything_it_does_as_its_strategys_user(acl_redis, make_pod):
    url, admin = acl_redis
    creds = {"QR_REDIS_USERNAME": redisacl.username(NS, A), "QR_REDIS_PASSWORD": PW_A}
    key = alloc.key(NS, A, "champion")
    admin.set(key, alloc.Allocation(100_000, 50_000, 10_000, 2_000).to_json())  # the operator writes the allocation

    async def scenario():
        op = AsyncRedis.from_url(url, password=ADMIN_PASSWORD, decode_responses=True)  # the operator's client
        champ = make_pod(url, QR_ROLE="champion", QR_STAGE="production", QR_BOOK_SCOPE="v1", QR_CAPITAL_USD="100000",
                         QR_ALLOCATION_KEY=key, QR_BAR_INTERVAL_SECONDS="0.003", **creds)
        chal = make_pod(url, QR_BOOK_SCOPE="r1-canary-1", QR_BAR_INTERVAL_SECONDS="0.003", **creds)
        await op.set(chal.keys.live_scope, "r1-canary-1")
        stops = [asyncio.Event(), asyncio.Event()]
        tasks = [asyncio.create_task(p.rt.run(s)) for p, s in zip((champ, chal), stops)]
        # trading: books saved every bar (HSET, EXPIRE, SET, GET in MULTI), intents written ahead (SET EX)
        await _until(lambda: len(champ.calls) >= 3 and len(chal.calls) >= 3)
        users = {c["user"] for c in admin.client_list()} - {"default"}
        assert users == {redisacl.username(NS, A)}, users  # the pods are logged in as their strategy's user
        cmd = await ks.engage(op, chal.keys, reason="acl drill", id="k-acl")
        for role in ("champion", "challenger"):  # SUBSCRIBE got it; SET latch, SET ack EX
            assert (await ks.wait_ack(op, chal.keys, role, "k-acl"))["action"] == "kill"
        await ks.release(op, chal.keys, id="u-acl")  # DEL latch on the pods' side too
        for role in ("champion", "challenger"):
            assert (await ks.wait_ack(op, chal.keys, role, "u-acl"))["action"] == "unkill"
        assert cmd.id == "k-acl" and await op.get(chal.keys.kill) is None
        await op.set(chal.keys.live_scope, "")  # the operator retires the challenger: it flattens and records it
        for p, s in zip((champ, chal), stops):
            assert p.rt.redis_up and p.metric("quantramp_redis_up") == 1, "the pod never lost Redis"
            s.set()
        await asyncio.gather(*tasks)
        rec = json.loads(await op.get(chal.keys.retired))
        assert rec["scope"] == "r1-canary-1" and rec["flat"] is True
        assert await op.hget(champ.keys.book(await op.get(champ.keys.current)), "position_qty") is not None
        for p in (champ, chal):
            await p.close()
        await op.aclose()

    asyncio.run(scenario())
    denied = admin.execute_command("ACL", "LOG")
    assert not denied, f"the trader's user was refused: {denied}"


async def _subscribe(client: AsyncRedis, channel: str, pattern: bool = False) -> None:
    """SUBSCRIBE (PSUBSCRIBE) and read the reply: redis-py reports a refusal with the first message read."""
    ps = client.pubsub()
    try:
        await (ps.psubscribe if pattern else ps.subscribe)(channel)
        msg = await ps.get_message(timeout=2)
        assert msg and msg["type"] in ("subscribe", "psubscribe"), msg
    finally:
        await ps.aclose()


async def check_isolation(url: str, admin: Redis) -> None:
    """Strategy A's user on its own keys and channel (works) and on strategy B's (NOPERM); AssertionError
    listing every operation that was not refused."""
    a = user_a(url)
    own, other = Keys(NS, A, "challenger", "r1-canary-1"), Keys(NS, B, "champion", "v3")
    allowed: list[str] = []

    async def _refused(what: str, op) -> None:
        try:
            await op
        except NoPermissionError:
            return
        allowed.append(what)

    try:
        # its own: what the trader does works
        assert await a.ping()
        await a.set(own.kill, "{}")
        assert await a.get(own.kill) == "{}"
        await a.delete(own.kill)
        await a.hset(own.book("2026-07-30"), mapping={"position_qty": "0"})
        await a.expire(own.book("2026-07-30"), 60)
        assert await a.hgetall(own.book("2026-07-30")) == {"position_qty": "0"}
        await a.set(own.intent, "{}", ex=60)
        await a.set(own.kill_ack(), "{}", ex=60)
        ps = a.pubsub()
        await ps.subscribe(own.kill)
        assert (await ps.get_message(timeout=2))["type"] == "subscribe"
        admin.publish(own.kill, "unkill")
        msg = await ps.get_message(ignore_subscribe_messages=True, timeout=2)
        assert msg and msg["data"] == "unkill"
        await ps.aclose()
        # what the operator writes for it: read, never write (a pod cannot raise its own capital)
        await a.get(alloc.key(NS, A, "champion"))
        await _refused("strategy A writes its own live allocation", a.set(alloc.key(NS, A, "champion"), "{}"))
        await _refused("strategy A writes its own live book scope", a.set(own.live_scope, ""))
        # strategy B: nothing
        admin.set(other.kill, "{}")
        await _refused("strategy A reads strategy B's kill latch", a.get(other.kill))
        await _refused("strategy A clears strategy B's kill latch", a.delete(other.kill))
        await _refused("strategy A sets strategy B's kill latch", a.set(other.kill, "{}"))
        await _refused("strategy A rewrites strategy B's book", a.hset(other.book("2026-07-30"), "position_qty", "1"))
        await _refused("strategy A reads strategy B's book", a.hgetall(other.book("2026-07-30")))
        await _refused("strategy A writes strategy B's allocation", a.set(alloc.key(NS, B, "champion"), "{}"))
        await _refused("strategy A writes strategy B's kill ack", a.set(other.kill_ack(), "{}"))
        await _refused("strategy A publishes on strategy B's kill channel", a.publish(other.kill, "unkill"))
        await _refused("strategy A subscribes to strategy B's kill channel", _subscribe(a, other.kill))
        await _refused("strategy A subscribes to every channel by pattern", _subscribe(a, "quantramp:*", pattern=True))
        # commands the trader never sends
        await _refused("KEYS", a.keys("*"))
        await _refused("FLUSHALL", a.flushall())
        await _refused("CONFIG GET", a.config_get("requirepass"))
        await _refused("ACL SETUSER", a.execute_command("ACL", "SETUSER", redisacl.username(NS, A), "+@all"))
    finally:
        await a.aclose()
    assert not allowed, "not refused: " + "; ".join(allowed)
    assert admin.get(other.kill) == "{}", "strategy B's latch is untouched"


def test_a_strategys_user_is_refused_another_strategys_keys_and_kill_channel(acl_redis):
    url, admin = acl_redis
    asyncio.run(check_isolation(url, admin))
    log = admin.execute_command("ACL", "LOG", "100")
    assert {e["username"] for e in log} == {redisacl.username(NS, A)} and len(log) >= 10  # the refusals are logged


def test_the_isolation_check_fails_when_the_user_may_do_anything(acl_redis):
    """The same check against ``+@all ~* &*``: it must fail, or it would prove nothing about the rules."""
    url, admin = acl_redis
    admin.execute_command("ACL", "SETUSER", redisacl.username(NS, A), "reset", "on", "+@all", "~*", "&*",
                          redisacl.password_rule(PW_A))
    with pytest.raises(AssertionError) as failed:
        asyncio.run(check_isolation(url, admin))
    for what in ("subscribes to strategy B's kill channel", "publishes on strategy B's kill channel",
                 "clears strategy B's kill latch", "rewrites strategy B's book", "writes its own live allocation", "FLUSHALL"):
        assert what in str(failed.value), str(failed.value)


def test_setting_the_user_again_keeps_the_kill_listener_and_deleting_it_logs_the_pod_out(acl_redis):
    """A periodic re-apply (ACL SETUSER with reset) must not drop a subscribed pod; DELUSER disconnects it."""
    url, admin = acl_redis
    own = Keys(NS, A, "challenger")

    async def scenario():
        a = user_a(url)
        ps = a.pubsub()
        await ps.subscribe(own.kill)
        await ps.get_message(timeout=2)
        redisacl.ensure_user(admin, NS, A, PW_A)
        admin.publish(own.kill, "unkill")
        msg = await ps.get_message(ignore_subscribe_messages=True, timeout=2)
        assert msg and msg["data"] == "unkill"
        assert redisacl.delete_user(admin, NS, A) is True and redisacl.delete_user(admin, NS, A) is False
        await ps.aclose()
        await a.aclose()
        with pytest.raises(AuthenticationError):
            await user_a(url).ping()

    asyncio.run(scenario())
