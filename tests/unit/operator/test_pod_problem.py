"""Why a role's trader pods are not running, as TradersReady says it (operator/workloads.py pod_problem)."""

from __future__ import annotations

from quantramp.operator.workloads import pod_problem

REFUSAL = "quantramp-trader: refusing to trade: postgresql://quantramp@10.244.0.1:5432/market table minute_bars: no bars for symbol 'MSFT'"


def pod(state: dict, last: dict | None = None) -> dict:
    cs = {"name": "trader", "state": state, "lastState": {"terminated": last} if last else {}}
    return {"metadata": {"name": "s-champion-1"}, "status": {"containerStatuses": [cs]}}


def test_a_crash_looping_trader_shows_its_refusal():
    p = pod({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s restarting failed container"}},
            {"exitCode": 3, "reason": "Error", "message": REFUSAL + "\n"})
    assert pod_problem([p]) == f"CrashLoopBackOff; exit 3: {REFUSAL}"


def test_a_missing_secret_shows_the_kubelets_message():
    p = pod({"waiting": {"reason": "CreateContainerConfigError", "message": 'secret "market-db" not found'}})
    assert pod_problem([p]) == 'CreateContainerConfigError; secret "market-db" not found'


def test_a_trader_that_just_exited_with_an_error_shows_its_message():
    assert pod_problem([pod({"terminated": {"exitCode": 2, "message": "quantramp-trader: bad configuration: x"}})]) == (
        "exit 2: quantramp-trader: bad configuration: x")


def test_starting_running_or_cleanly_stopped_pods_say_nothing():
    assert pod_problem([]) == ""
    assert pod_problem([{"metadata": {}, "status": {}}]) == ""
    assert pod_problem([pod({"waiting": {"reason": "ContainerCreating"}})]) == ""
    assert pod_problem([pod({"running": {"startedAt": "2026-12-06T00:00:00Z"}}, {"exitCode": 3, "message": REFUSAL})]) == ""
    assert pod_problem([pod({"terminated": {"exitCode": 0}})]) == ""


def test_the_message_is_bounded():
    p = pod({"waiting": {"reason": "CrashLoopBackOff"}}, {"exitCode": 3, "message": "x" * 5000})
    assert len(pod_problem([p])) == 600
