"""End to end, high availability (issue 11 item 5) on the real local stack: two operator replicas with kopf
peering (the chart's default ``ha.enabled``), exactly one active; the active pod is deleted in the middle of a
four-stage ramp, and the other carries the ramp on to production, with no transition taken twice.

Who is active is read three ways, which must agree: the peering object (the live record of highest
priority; records are keyed by pod name), the replicas' logs (kopf logs "Resuming operations" when a replica
becomes active, "Pausing operations" when it stops being), and the strategy itself (each status write's field
manager is ``quantramp-operator:<pod>``, so ``metadata.managedFields`` names the replica that wrote it).

The failover figure is the time from ``kubectl delete pod`` (graceful) of the active replica to the first
status write of the other one that carries the ramp further (a new analysis round or a transition). Its bound,
``FAILOVER_BOUND_SECONDS`` = 20 s: a stopping replica removes its own peering record at once (kopf's keep-alive
task writes it with lifetime 0 when the operator is cancelled), the standby sees that on its peering watch and
resumes (no lifetime to wait out), lists the strategies, starts their loops (first tick after
``QR_TICK_SECONDS``/2) and writes at the next analysis round (2 s here): a few seconds, with room for a loaded
2-core machine. It stays below the chart's peering lifetime (30 s), the time a replica that died without
stopping takes to be replaced, and the test also checks that the record was removed before it could expire.
"""

from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone

import pytest
import yaml

import demo

pytestmark = pytest.mark.e2e

NAME, NS = "aapl-ha", "default"
PEERING = demo.RELEASE  # the chart's peering object: named like the release's base name
MANAGER = "quantramp-operator:"
FAILOVER_BOUND_SECONDS = 20.0
#: QR_SHUTDOWN_GRACE_SECONDS (20) + one tick: how long a stopping replica's last tick may still write
LAST_WRITE_SECONDS = 25.0


def manifest():
    spec = {
        "model": {"name": NAME, "version": "2"}, "capitalUsd": 100000,
        "admission": {"mode": "off"},
        "stages": [{"name": "shadow", "capitalPercent": 0, "dwell": "4s"},
                   {"name": "canary-1", "capitalPercent": 1, "dwell": "10s", "maxDrawdown": 0.9, "pnlBand": 10},
                   {"name": "canary-2", "capitalPercent": 5, "dwell": "10s", "maxDrawdown": 0.9, "pnlBand": 10},
                   {"name": "production", "capitalPercent": 100, "maxDrawdown": 0.9, "pnlBand": 10}],
        "analysis": {"interval": "2s", "criteria": {"minTrades": 1, "minPrecisionRatio": 0, "minFillRatio": 0, "maxSlippageRatio": 100}},
        "trader": {"barIntervalSeconds": 0.05},
        "stopLoss": {"enabled": False},
    }
    return {"apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy", "metadata": {"name": NAME, "namespace": NS},
            "spec": spec}


# --- reading the replicas ----------------------------------------------------------------------


def ready_pods(s) -> list[str]:
    """Names of the operator pods that are Running, Ready and not being deleted, oldest first."""
    pods = [p for p in s.operator_pods() if p["status"].get("phase") == "Running" and not p["metadata"].get("deletionTimestamp")
            and any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))]
    return [p["metadata"]["name"] for p in sorted(pods, key=lambda p: p["metadata"]["creationTimestamp"])]


def peers(s) -> dict[str, dict]:
    """The peering records {identity: {priority, lifetime, lastseen}}: the KopfPeering of the first watched
    namespace (the Harness' release watches named namespaces), else the ClusterKopfPeering."""
    ns = (s.operator_namespaces or (None,))[0]
    args = ("kopfpeering", PEERING, "-n", ns) if ns else ("clusterkopfpeering", PEERING)
    return json.loads(s.kubectl("get", *args, "-o", "json").stdout).get("status") or {}


def deadline(record: dict) -> float:
    """Unix time until which kopf counts the record as alive."""
    return datetime.fromisoformat(record["lastseen"]).timestamp() + float(record.get("lifetime", 60))


def live(records: dict[str, dict]) -> dict[str, dict]:
    now = time.time()
    return {k: r for k, r in records.items() if deadline(r) > now}


def pod_log(s, pod: str) -> str:
    return s.kubectl("logs", "-n", demo.OPERATOR_NS, pod, check=False).stdout


def peering_state(log: str) -> str:
    """'active' if kopf's last pause/resume line in the log is a resume, 'paused' if a pause, '' if none."""
    # kopf's own lines only: the operator's start line quotes "Resuming operations" too
    lines = re.findall(r"kopf\._core\.engines\.peering: (Resuming operations|Pausing operations|Pausing all operators)", log)
    return "" if not lines else ("active" if lines[-1] == "Resuming operations" else "paused")


def logged_priority(log: str) -> int | None:
    m = re.search(r"with priority (\d+)", log)
    return int(m.group(1)) if m else None


def strategy(s) -> dict:
    """The strategy with its managedFields (kubectl hides them unless asked)."""
    out = s.kubectl("get", "tradingstrategy", NAME, "-n", NS, "-o", "json", "--show-managed-fields", check=False)
    return json.loads(out.stdout) if out.returncode == 0 else {}


def status_writer(obj: dict) -> str:
    """The pod whose operator replica wrote the status last ('' before the first write)."""
    entries = [m for m in obj.get("metadata", {}).get("managedFields", []) if m.get("subresource") == "status"]
    ours = [m for m in entries if m["manager"].startswith(MANAGER)]
    assert len(ours) == len(entries), f"a status writer that is no replica: {[m['manager'] for m in entries]}"
    return max(ours, key=lambda m: m["time"])["manager"].removeprefix(MANAGER) if ours else ""


def progress_mark(st: dict) -> tuple:
    """What changes when the ramp is carried on: the transition count and the last analysis round."""
    return st.get("seq", 0), (st.get("lastAnalysis") or {}).get("time")


def wait_one_active(s, timeout: float = 240) -> tuple[str, str, dict]:
    """Until two replicas are Ready with live records of distinct priorities, and the logs agree that the
    one of highest priority is active and the other is not. Returns (active pod, standby pod, records)."""
    deadline_ = time.monotonic() + timeout
    why = ""
    while time.monotonic() < deadline_:
        pods = ready_pods(s)
        recs = live(peers(s))
        if len(pods) != 2 or not set(pods) <= set(recs):
            why = f"pods {pods}, live records {sorted(recs)}"
            time.sleep(2)
            continue
        active, standby = sorted(pods, key=lambda p: recs[p]["priority"], reverse=True)
        logs = {p: pod_log(s, p) for p in pods}
        states = {p: peering_state(logs[p]) for p in pods}
        if states[active] == "active" and states[standby] != "active":
            assert recs[active]["priority"] != recs[standby]["priority"], recs  # kopf would pause both
            for p in pods:  # the priority each replica logged at start is the one in its record
                assert logged_priority(logs[p]) == recs[p]["priority"], (p, logged_priority(logs[p]), recs[p])
            return active, standby, recs
        why = f"log states {states}, priorities { {p: recs[p]['priority'] for p in pods} }, records {recs}; peering lines:\n" + "\n".join(
            f"{p}: {line}" for p in pods for line in logs[p].splitlines()
            if re.search(r"kopf\._core\.engines\.peering|quantramp\.operator: peering", line))
        time.sleep(2)
    raise AssertionError(f"not exactly one active replica after {timeout}s: {why}")


# --- the fixture: two replicas, the models --------------------------------------------------------


@pytest.fixture(scope="module")
def ha(operator_stack):
    s = operator_stack
    values = json.loads(s.helm("get", "values", demo.RELEASE, "-n", demo.OPERATOR_NS, "-a", "-o", "json").stdout)
    before = values.get("ha") or {}
    upgraded = not before.get("enabled") or before.get("replicas", 0) < 2
    if upgraded:  # a Harness that installed one standalone replica: two peered ones for this module
        s.helm("upgrade", demo.RELEASE, str(demo.CHART), "-n", demo.OPERATOR_NS, "--reuse-values", "--set", "ha.enabled=true",
               "--set", "ha.replicas=2", "--wait", "--timeout", "180s")
    s.train(NAME, ["--kind", "logistic", "--seed", "1", "--alias", "champion"])
    s.train(NAME, ["--kind", "logistic", "--seed", "2"])
    yield s
    s.kubectl("delete", "tradingstrategy", NAME, "-n", NS, "--ignore-not-found", "--wait=true", "--timeout=60s", check=False)
    if upgraded:
        s.helm("upgrade", demo.RELEASE, str(demo.CHART), "-n", demo.OPERATOR_NS, "--reuse-values",
               "--set", f"ha.enabled={str(bool(before.get('enabled'))).lower()}", "--wait", "--timeout", "180s", check=False)


def test_the_active_replica_is_deleted_mid_ramp_and_the_other_carries_it_to_production_once(ha):
    s = ha
    active, standby, recs = wait_one_active(s)
    print(f"\nactive {active} (priority {recs[active]['priority']}), standby {standby} (priority {recs[standby]['priority']})")

    # the ramp starts and advances once under the active replica: every status write is its own
    s.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(manifest()))
    writers_before: set[str] = set()
    t_end = time.monotonic() + 300
    while True:
        obj = strategy(s)
        st = obj.get("status") or {}
        if st:
            writers_before.add(status_writer(obj))
        if st.get("stage") == "canary-1" and st.get("phase") == "Progressing":
            break
        assert time.monotonic() < t_end, f"no advance to canary-1: {json.dumps(st)[:3000]}"
        time.sleep(0.5)
    assert writers_before == {active}, f"status writers while both replicas ran: {writers_before} (active: {active})"
    assert peering_state(pod_log(s, standby)) != "active" and live(peers(s)).keys() >= {active, standby}

    # delete the active pod (graceful), then follow the peering record, the status writers and the ramp
    mark = progress_mark(st)
    rec = peers(s)[active]
    t_kill = time.time()
    s.kubectl("delete", "pod", active, "-n", demo.OPERATOR_NS, "--wait=false")
    removed_at = taken_over_at = None
    late_writes: list[float] = []  # writes of the deleted replica seen after the kill
    t_end = time.monotonic() + 120
    while removed_at is None or taken_over_at is None:
        now = time.time()
        if removed_at is None and active not in peers(s):
            removed_at = now
        obj = strategy(s)
        writer, st = status_writer(obj), obj.get("status") or {}
        assert writer in (active, standby), writer
        if writer == active and progress_mark(st) != mark:
            late_writes.append(now - t_kill)
        if taken_over_at is None and writer == standby and progress_mark(st) != mark:
            taken_over_at = now
        assert time.monotonic() < t_end, f"no takeover: record removed at {removed_at}, writer {writer}, status {json.dumps(st)[:2000]}"
        time.sleep(0.25)
    failover = taken_over_at - t_kill
    print(f"failover: {failover:.1f} s from deleting {active} to the first status write of {standby} carrying the ramp "
          f"(bound {FAILOVER_BOUND_SECONDS:g} s); peering record removed after {removed_at - t_kill:.1f} s")
    assert removed_at < deadline(rec), "the deleted replica's record expired instead of being removed as it stopped"
    assert failover < FAILOVER_BOUND_SECONDS, f"failover took {failover:.1f} s"
    assert not [t for t in late_writes if t > LAST_WRITE_SECONDS], late_writes

    # the survivor ramps to production; the pod that replaces the deleted one starts as the standby
    t_end = time.monotonic() + 400
    while True:
        obj = strategy(s)
        st = obj.get("status") or {}
        if st.get("phase") == "Promoted" and not any(e["state"] == "Pending" for e in st.get("effects", [])):
            break
        assert st.get("phase") in ("Progressing", "Promoted"), json.dumps(st)[:3000]
        assert time.monotonic() < t_end, f"not promoted: {json.dumps(st)[:3000]}"
        time.sleep(1)
    assert status_writer(obj) == standby
    assert (st["stage"], st["capitalPercent"], st["championVersion"]) == ("production", 100, "2")
    assert s.aliases(NAME) == {"champion": "2"}

    # no transition twice: each stage entered once, transition numbers consecutive, effects once each
    hist = st["history"]
    assert [(h["event"].split(":")[0], h["stage"]) for h in hist] == [
        ("RampStarted", "shadow"), ("StageAdvanced", "canary-1"), ("StageAdvanced", "canary-2"), ("Promoted", "production")], hist
    seqs = [h["seq"] for h in hist]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and st["seq"] == seqs[-1], seqs
    ids = [e["id"] for e in st["effects"]]
    assert len(ids) == len(set(ids)) and all(e["state"] in ("Done", "Superseded") for e in st["effects"]), st["effects"]
    events = json.loads(s.kubectl("get", "events", "-n", NS, "--field-selector", f"involvedObject.name={NAME}", "-o", "json").stdout)
    reasons = [e["reason"] for e in events["items"]]
    assert reasons.count("StageAdvanced") == 2 and reasons.count("Promoted") == 1 and reasons.count("RampStarted") == 1, reasons

    # the trader Deployments were not applied by two writers in turn: the champion's template changed once (the
    # promoted version; stage capital moves through Redis), and no template was re-applied after being replaced
    def rollout(role: str):
        """(Deployment, its ReplicaSets) once the Deployment controller has caught up with the last template change
        (it creates the new ReplicaSet before it writes the revision annotation and observedGeneration)."""
        out = s.kubectl("get", "deployment", f"{NAME}-{role}", "-n", NS, "-o", "json", check=False)
        if out.returncode != 0:
            return "gone", []
        dep = json.loads(out.stdout)
        rs = json.loads(s.kubectl("get", "replicasets", "-n", NS, "-l", f"quantramp.io/strategy={NAME},quantramp.io/role={role}",
                                  "-o", "json").stdout)["items"]
        owned = [r for r in rs if any(o["uid"] == dep["metadata"]["uid"] for o in r["metadata"].get("ownerReferences", []))]
        settled = dep["status"].get("observedGeneration") == dep["metadata"]["generation"] and \
            int(dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"]) >= len(owned)
        return (dep, owned) if settled else None

    for role in ("champion", "challenger"):
        dep, owned = demo.wait_for(lambda: rollout(role), f"the {role} Deployment's rollout to settle", timeout=60)
        if dep == "gone":
            continue
        revision = int(dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"])
        print(f"{role}: generation {dep['metadata']['generation']}, revision {revision}, {len(owned)} ReplicaSets")
        assert revision == len(owned), (role, revision, [r["metadata"]["name"] for r in owned])
        assert dep["status"].get("observedGeneration") == dep["metadata"]["generation"], dep["status"]
        if role == "champion":
            assert dep["metadata"]["generation"] == 2, dep["metadata"]

    # the Deployment replaced the deleted pod: the newcomer is the youngest, so it waits as the standby
    new_active, new_standby, recs = wait_one_active(s)
    assert new_active == standby and new_standby != active, (new_active, new_standby)
    assert recs[new_standby]["priority"] < recs[new_active]["priority"]
