"""No duplicate JIRA ticket when the operator dies between creating a ticket and recording it
(issue 9): the operator is SIGKILLed by the failpoint ``QR_FAILPOINT=ticket-created`` right after
each ticket it creates, before the status write that marks the effect done, and restarted; the
next operator finds the ticket by its label (strategy uid + transition id) instead of opening a
second one. Strategies are killed by spec one at a time (no trader pods, no models: each kill opens one
ticket, alone, so each SIGKILL lands exactly between a ticket and its record: N strategies, N crashes).
With find-or-create replaced by a plain create, every crash would leave a duplicate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections import Counter

import pytest
import yaml

import demo
from quantramp.operator.tickets import ticket_label

pytestmark = pytest.mark.integration
NS = "ticket-crash"
N = 22


def _start(stack, log, failpoint: bool) -> subprocess.Popen:
    env = {**stack.env, "QR_PROMETHEUS_URL": stack.env["PROMETHEUS_URL"], "QR_TICK_SECONDS": "0.5"}
    if failpoint:
        env["QR_FAILPOINT"] = "ticket-created"
    return subprocess.Popen([str(demo.BIN / "quantramp-operator"), "--namespace", NS], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)


def test_a_crash_between_the_ticket_and_its_record_never_opens_a_second_ticket(stack, capsys):
    stack.install_crd()
    stack.kubectl("create", "namespace", NS, check=False)
    tag = uuid.uuid4().hex[:5]
    names = [f"t{tag}-{i:02d}" for i in range(N)]
    docs = [{"apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy", "metadata": {"name": n, "namespace": NS},
             "spec": {"model": {"name": f"absent-{n}", "version": "1"}, "capitalUsd": 100000, "admission": {"mode": "off"},
                      "killSwitch": {"engaged": True, "reason": "crash test", "by": "test"}}} for n in names]
    (stack.dir / "logs").mkdir(exist_ok=True)
    log = open(stack.dir / "logs" / "operator-ticket-crash.log", "ab")

    def objs() -> dict[str, dict]:
        return {o["metadata"]["name"]: o for o in json.loads(stack.kubectl("get", "ts", "-n", NS, "-o", "json").stdout)["items"]}

    def recorded(o: dict) -> bool:
        st = o.get("status") or {}
        return bool(st.get("killSwitch", {}).get("incident")) and st["killSwitch"]["incident"] in (st.get("tickets") or {})

    # one strategy at a time, so that each new ticket is created alone and its SIGKILL lands before any
    # other is created: N strategies, N kill points, each exactly between a ticket and its record
    crashes = 0
    proc = _start(stack, log, failpoint=True)
    try:
        for doc in docs:
            stack.kubectl("apply", "-f", "-", stdin=yaml.safe_dump(doc))
            name = doc["metadata"]["name"]
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                if proc.poll() is not None:  # the failpoint fired: a ticket exists that the status does not record
                    crashes += proc.returncode == -signal.SIGKILL
                    proc = _start(stack, log, failpoint=True)
                if recorded(objs().get(name, {})):
                    break
                time.sleep(0.3)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and sum(recorded(o) for o in objs().values()) < N:
            if proc.poll() is not None:
                crashes += proc.returncode == -signal.SIGKILL
                proc = _start(stack, log, failpoint=False)
            time.sleep(0.5)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    final = objs()
    labels = Counter(label for t in stack.jira_tickets() for label in t["fields"]["labels"])
    want = {n: ticket_label(final[n]["metadata"]["uid"], final[n]["status"]["killSwitch"]["incident"]) for n in names}
    dup = sum(labels[lb] > 1 for lb in want.values())
    lost = sum(labels[lb] == 0 for lb in want.values())
    with capsys.disabled():
        print(f"\nticket crash test: {N} strategies killed, {crashes} SIGKILLs between a ticket and its record, "
              f"duplicate tickets {dup}, lost tickets {lost}, recorded {sum(recorded(o) for o in final.values())}/{N}")
    assert crashes >= 20, f"only {crashes} crashes: the failpoint did not fire"
    assert all(recorded(o) for o in final.values())
    assert dup == 0 and lost == 0
    # the recorded key is the one ticket with the label
    by_label = {lb: t["key"] for t in stack.jira_tickets() for lb in t["fields"]["labels"]}
    assert all(final[n]["status"]["tickets"][final[n]["status"]["killSwitch"]["incident"]] == by_label[want[n]] for n in names)
