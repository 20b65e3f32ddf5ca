"""End to end, credentials (issue 11 item 2) on the real local stack: the chart installed by the harness with the
operator's Redis password, Slack and JIRA tokens in Secrets; two strategies with real trader pods.

- no credential (the operator's Redis password, the Slack and JIRA tokens, either strategy's own Redis
  password; raw or base64) is in the live Deployments or pods, nor anywhere in the Helm release
  (``helm get all``: values, manifest, notes);
- each strategy has its Secret ``<strategy>-trader-redis`` owned by it, holding the password derived from the
  platform key (HMAC over namespace/name/uid: the operator creates the Secret and never reads it), and its
  Redis user; the pod template carries the key's fingerprint, not a password; every trader connection is
  logged in as its own strategy's user, and the pods were refused nothing (ACL LOG);
- strategy A's user is refused (NOPERM) strategy B's kill channel and kill latch;
- deleting a strategy stops its pods before it deletes its Redis user (no failed login of that user), and the
  garbage collector deletes its Secret.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
import redis
import yaml

from quantramp.operator import redisacl
from quantramp.trader.state import Keys

import demo

pytestmark = pytest.mark.e2e
NS = "default"
A, B = "aapl-sec-a", "aapl-sec-b"


def manifest(name: str) -> dict:
    # both pods run for the whole module: an hour-long shadow stage
    return {"apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy", "metadata": {"name": name, "namespace": NS},
            "spec": {"model": {"name": name, "version": "2"}, "capitalUsd": 100000, "admission": {"mode": "off"},
                     "stages": [{"name": "shadow", "capitalPercent": 0, "dwell": "1h"},
                                {"name": "production", "capitalPercent": 100, "maxDrawdown": 0.5, "pnlBand": 10}],
                     # lenient criteria: nothing rolls the challenger back while the module runs
                     "analysis": {"interval": "5s", "criteria": {"minTrades": 1, "minPrecisionRatio": 0, "minFillRatio": 0,
                                                                 "maxSlippageRatio": 100}},
                     "trader": {"barIntervalSeconds": 0.2}}}


def conditions(stack, name: str) -> dict[str, str]:
    st = stack.strategies(NS).get(name, {}).get("status") or {}
    return {c["type"]: c["status"] for c in st.get("conditions", [])}


def secret_data(stack, name: str) -> dict[str, str] | None:
    out = stack.kubectl("get", "secret", name, "-n", NS, "-o", "json", check=False)
    if out.returncode != 0:
        return None
    obj = json.loads(out.stdout)
    return {"_owners": obj["metadata"].get("ownerReferences") or [],
            **{k: base64.b64decode(v).decode() for k, v in (obj.get("data") or {}).items()}}


@pytest.fixture(scope="module")
def strategies(operator_stack):
    for name in (A, B):
        operator_stack.train(name, ["--kind", "logistic", "--seed", "1", "--alias", "champion"])
        operator_stack.train(name, ["--kind", "logistic", "--seed", "2"])
        operator_stack.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest(name)))
    for name in (A, B):
        demo.wait_for(lambda: conditions(operator_stack, name).get("TradersReady") == "True", f"{name}'s traders ready")
    time.sleep(5)  # a few more bars: books, intents, allocation reads, under the pods' own users
    yield operator_stack
    for name in (A, B):
        operator_stack.kubectl("delete", "tradingstrategy", name, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)


@pytest.fixture(scope="module")
def admin(operator_stack):
    client = redis.Redis.from_url(operator_stack.env["REDIS_URL"], decode_responses=True)  # the default user, with the stack's password
    yield client
    client.close()


def test_no_credential_is_in_the_deployments_the_pods_or_the_helm_release(strategies):
    h = strategies
    own = {name: secret_data(h, redisacl.secret_name(name)) for name in (A, B)}
    assert all(own.values()), own
    secrets = {"the operator's Redis password": h.env["QR_REDIS_PASSWORD"], "the Slack token": h.env["QR_SLACK_BOT_TOKEN"],
               "the key of the per-strategy Redis passwords": h.env["QR_REDIS_ACL_KEY"],
               "the JIRA token": h.env["QR_JIRA_TOKEN"], **{f"{n}'s Redis password": own[n]["password"] for n in (A, B)}}
    assert all(len(v) >= 16 for v in secrets.values()), "every secret is long enough to be grepped for"
    texts = {
        "live Deployments": h.kubectl("get", "deployments", "-A", "-o", "json").stdout,
        "live pods": h.kubectl("get", "pods", "-A", "-o", "json").stdout,
        "helm get all": h.helm("get", "all", demo.RELEASE, "-n", demo.OPERATOR_NS).stdout,
        "helm get manifest": h.helm("get", "manifest", demo.RELEASE, "-n", demo.OPERATOR_NS).stdout,
        "the harness's values file": (h.dir / "operator-values.json").read_text(),
    }
    assert f"{A}-champion" in texts["live Deployments"] and "quantramp-operator" in texts["helm get manifest"]
    for where, text in texts.items():
        for what, value in secrets.items():
            for form in (value, base64.b64encode(value.encode()).decode()):
                assert form not in text, f"{what} is in the {where}"
    # what they hold instead: references
    deps = json.loads(texts["live Deployments"])["items"]
    chal = next(d for d in deps if d["metadata"]["name"] == f"{A}-challenger")
    env = {e["name"]: e for e in chal["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["QR_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": f"{A}-trader-redis", "key": "password"}
    assert "@" not in env["REDIS_URL"]["value"]
    key = redisacl.check_key(h.env["QR_REDIS_ACL_KEY"])
    assert chal["spec"]["template"]["metadata"]["annotations"][redisacl.KEY_FINGERPRINT_ANNOTATION] == redisacl.key_fingerprint(key)
    op = next(d for d in deps if d["metadata"]["name"] == f"{demo.RELEASE}-operator")
    op_env = {e["name"]: e for e in op["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert op_env["QR_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "quantramp-redis"
    assert op_env["QR_REDIS_ACL_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "quantramp-redis-acl", "key": "key"}


def test_each_strategy_has_its_own_secret_and_redis_user_and_the_pods_log_in_as_it(strategies, admin):
    h = strategies
    for name in (A, B):
        sec = secret_data(h, redisacl.secret_name(name))
        uid = h.strategies(NS)[name]["metadata"]["uid"]
        assert [o["uid"] for o in sec["_owners"] if o.get("controller")] == [uid]
        assert sec["username"] == redisacl.username(NS, name)
        # derived, not random: the operator never reads the Secret back (it may only create Secrets)
        assert sec["password"] == redisacl.derive_password(redisacl.check_key(h.env["QR_REDIS_ACL_KEY"]), NS, name, uid)
        user = admin.acl_getuser(redisacl.username(NS, name))
        # redis-py's parsed ACL GETUSER: categories and commands apart
        assert user and user["enabled"] and user["categories"][0] == "-@all" and "+@all" not in user["categories"], user
        assert "+publish" not in user["commands"] and "+keys" not in user["commands"], user
        assert user["channels"] == [f"&{Keys(NS, name, '').kill}"], user
        assert user["keys"][0] == f"%R~quantramp:{NS}:{name}:*", user
    # the pods are logged in as their strategies' users (each pod: a command and a pub/sub connection; only the
    # pods have these passwords so far), and a connection from a trader pod's address is its own strategy's user
    clients = admin.client_list()
    for name in (A, B):
        assert sum(c["user"] == redisacl.username(NS, name) for c in clients) >= 2, clients
    pods = json.loads(h.kubectl("get", "pods", "-n", NS, "-l", "app.kubernetes.io/name=quantramp-trader", "-o", "json").stdout)["items"]
    by_ip = {p["status"].get("podIP"): p["metadata"]["labels"]["quantramp.io/strategy"] for p in pods if p["status"].get("podIP")}
    for c in clients:
        strategy = by_ip.get(c["addr"].rsplit(":", 1)[0])
        if strategy in (A, B):  # (not seen at all if the pod network masqueraded them)
            assert c["user"] == redisacl.username(NS, strategy), c
    # and they were refused nothing while trading. Only A's and B's users: ACL LOG is the whole Redis' and
    # outlives strategies, and earlier modules' strategies left failed logins ("auth" on HELLO) of their own
    # users (pods still retrying after their user was removed, before the drain on deletion; or any pod
    # whose strategy another test deleted); those are not these pods'
    ours = {redisacl.username(NS, A), redisacl.username(NS, B)}
    refused = [e for e in admin.execute_command("ACL", "LOG", "128") if e.get("username") in ours]
    assert not refused, refused


def test_a_strategys_user_is_refused_another_strategys_kill_channel(strategies, admin):
    h = strategies
    pw = secret_data(h, redisacl.secret_name(A))["password"]
    url = h.env["REDIS_URL"].split("@", 1)[-1]  # host:port/db of the stack's Redis, without the admin's password
    a = redis.Redis.from_url(f"redis://{url}", username=redisacl.username(NS, A), password=pw, decode_responses=True)
    theirs, mine = Keys(NS, B, ""), Keys(NS, A, "")
    try:
        assert a.ping()
        a.get(mine.kill)  # its own latch: allowed
        with pytest.raises(redis.exceptions.NoPermissionError):
            a.get(theirs.kill)
        with pytest.raises(redis.exceptions.NoPermissionError):
            a.set(theirs.kill, json.dumps({"action": "kill", "reason": "from another strategy"}))
        with pytest.raises(redis.exceptions.NoPermissionError):
            a.publish(theirs.kill, json.dumps({"action": "kill", "reason": "from another strategy"}))
        ps = a.pubsub()
        ps.subscribe(theirs.kill)
        with pytest.raises(redis.exceptions.NoPermissionError):
            ps.get_message(timeout=5)
        ps.close()
    finally:
        a.close()
    assert admin.get(theirs.kill) is None and conditions(h, B).get("TradersReady") == "True"


def test_deleting_a_strategy_deletes_its_redis_user_and_secret(strategies, admin):
    h = strategies
    h.kubectl("delete", "tradingstrategy", B, "-n", NS, "--wait=true", "--timeout=120s")
    assert admin.acl_getuser(redisacl.username(NS, B)) is None
    # the operator scaled B's Deployments to 0 and waited for its pods to go before DELUSER: none of them
    # retried a login as a user that no longer exists
    time.sleep(3)
    failed = [e for e in admin.execute_command("ACL", "LOG", "128")
              if e.get("username") == redisacl.username(NS, B) and e.get("reason") == "auth"]
    assert not failed, failed
    demo.wait_for(lambda: secret_data(h, redisacl.secret_name(B)) is None, f"{B}'s Secret garbage-collected", timeout=120)
    assert admin.acl_getuser(redisacl.username(NS, A)) is not None  # the other strategy's user stays
