"""High availability (kopf peering, operator/__main__.py and the peering section of operator/handlers.py):
the derived priority (the oldest replica wins, no ties, exact in JSON), the CLI's wiring into
``kopf.operator`` (standalone unless --peering), the kopf logger that says pause/resume is not silenced,
and what a tick does when kopf pauses or stops the operator. No API server: kopf.operator is replaced."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone

import kopf
import pytest
from kopf._cogs.aiokits.aioenums import FlagSetter, FlagWaiter

from quantramp.operator import __main__ as cli
from quantramp.operator import handlers as H
from quantramp.operator.models import EffectRecord, TradingStrategyStatus

NOW_MS = 1_784_000_000_000  # 2026-07-14


@pytest.fixture(autouse=True)
def _restore():
    """main() sets logger levels, a malloc trimmer and the handlers' stop flag: undo what a test leaves."""
    levels = {n: logging.getLogger(n).level for n in ("", *cli.NOISY_LOGGERS)}
    custom = getattr(H.CTX, "custom", None)
    yield
    for n, level in levels.items():
        logging.getLogger(n).setLevel(level)
    H.exit_on_pause(None)
    if custom is not None:
        H.CTX.custom = custom


# --- the priority ---------------------------------------------------------------------------


def test_the_older_replica_has_the_higher_priority_whatever_its_pod_name():
    pods = ["quantramp-operator-7c9d-aaaaa", "quantramp-operator-7c9d-zzzzz", "x", ""]
    for older in pods:
        for younger in pods:
            assert cli.default_priority(NOW_MS, older) > cli.default_priority(NOW_MS + 1, younger), (older, younger)
    assert cli.default_priority(NOW_MS - 3_600_000, "b") > cli.default_priority(NOW_MS, "a")


def test_replicas_started_in_the_same_millisecond_differ_by_their_pod_names():
    names = [f"quantramp-operator-6f8b7c-{i:05d}" for i in range(40)]
    prios = {cli.default_priority(NOW_MS, n) for n in names}
    assert len(prios) >= 39  # 40 names into 1000 residues: at most a rare collision, never all alike
    # the hash is stable across processes (crc32, not the salted hash()): the same name, the same priority
    assert cli.default_priority(NOW_MS, names[0]) == cli.default_priority(NOW_MS, names[0])
    assert cli.default_priority(NOW_MS, "quantramp-operator-a") != cli.default_priority(NOW_MS, "quantramp-operator-b")


@pytest.mark.parametrize("start_ms", [0, 1, NOW_MS, cli.PRIORITY_EPOCH_MS - 1, cli.PRIORITY_EPOCH_MS + 10**9, -5])
def test_every_priority_is_a_non_negative_integer_below_2_to_the_53(start_ms):
    for pod in ("", "quantramp-operator-x", "z" * 253):
        p = cli.default_priority(start_ms, pod)
        assert isinstance(p, int) and 0 <= p <= cli.MAX_SAFE_PRIORITY
        assert float(p) == p  # exact as a JSON number (a float64) in every client


def test_a_restarted_replica_comes_back_below_the_one_that_took_over():
    took_over = cli.default_priority(NOW_MS, "quantramp-operator-b")
    restarted = cli.default_priority(NOW_MS + 45_000, "quantramp-operator-a")  # same pod, new process
    assert restarted < took_over


def _kopf_pauses(me: str, records: dict[str, int]) -> bool:
    """Whether kopf's own peering step (kopf._core.engines.peering.process_peering_event, as the operator runs it:
    mandatory peering, so the pause toggle starts on) leaves replica ``me`` paused, given the live records
    {identity: priority} of the peering object."""
    from kopf._cogs.aiokits import aiotoggles
    from kopf._core.engines import peering

    async def run() -> bool:
        settings = kopf.OperatorSettings()
        settings.peering.name, settings.peering.priority = "quantramp", records[me]
        lastseen = datetime.now(timezone.utc).isoformat()
        body = {"metadata": {"name": "quantramp"},
                "status": {k: {"priority": v, "lifetime": 30, "lastseen": lastseen} for k, v in records.items()}}
        paused = aiotoggles.Toggle(True)
        pressure = asyncio.Event()
        pressure.set()  # no sleeping until the peers' deadlines
        await peering.process_peering_event(raw_event={"type": None, "object": body}, namespace="default", resource=None,
                                            identity=me, settings=settings, autoclean=False, conflicts_found=paused,
                                            stream_pressure=pressure)
        return paused.is_on()

    return asyncio.run(run())


def test_kopf_with_these_priorities_pauses_exactly_the_younger_replica():
    old, young = "quantramp-operator-5d4f-aaaaa", "quantramp-operator-5d4f-bbbbb"
    records = {old: cli.default_priority(NOW_MS, old), young: cli.default_priority(NOW_MS + 2500, young)}
    assert not _kopf_pauses(old, records) and _kopf_pauses(young, records)
    # a new pod of a rolling update (started later) waits too; the same millisecond still has one winner
    records = {old: cli.default_priority(NOW_MS, old), young: cli.default_priority(NOW_MS, young)}
    assert sorted([_kopf_pauses(old, records), _kopf_pauses(young, records)]) == [False, True]
    # what the derivation avoids: kopf pauses BOTH replicas of equal priority
    assert _kopf_pauses(old, {old: 7, young: 7}) and _kopf_pauses(young, {old: 7, young: 7})


# --- the CLI's wiring -------------------------------------------------------------------------


def test_without_peering_the_operator_is_standalone():
    kw = cli.operator_kwargs(cli.parse_args([]), NOW_MS, {"POD_NAME": "quantramp-operator-a"})
    assert kw["standalone"] is True and "peering_name" not in kw and "priority" not in kw and "identity" not in kw
    assert kw["clusterwide"] is True and kw["namespaces"] == []


def test_with_peering_the_name_the_derived_priority_and_the_pod_as_identity():
    args = cli.parse_args(["--peering", "quantramp", "-n", "trading", "-n", "research"])
    kw = cli.operator_kwargs(args, NOW_MS, {"POD_NAME": "quantramp-operator-a"})
    assert kw["standalone"] is False and kw["peering_name"] == "quantramp" and kw["identity"] == "quantramp-operator-a"
    assert kw["priority"] == cli.default_priority(NOW_MS, "quantramp-operator-a")
    assert kw["clusterwide"] is False and kw["namespaces"] == ["trading", "research"]
    # an explicit priority wins; no POD_NAME leaves the identity to kopf
    kw = cli.operator_kwargs(cli.parse_args(["--peering", "q", "--priority", "7"]), NOW_MS, {})
    assert kw["priority"] == 7 and "identity" not in kw


@pytest.mark.parametrize("argv,words", [
    (["--priority", "5"], "need --peering"),
    (["--peering-lifetime", "30"], "need --peering"),
    (["--peering", "q", "--priority", str(2**53)], "--priority must be between"),
    (["--peering", "q", "--priority", "-1"], "--priority must be between"),
    (["--peering", "q", "--peering-lifetime", "5"], "at least 10"),
])
def test_bad_peering_options_are_refused(argv, words, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv)
    assert exc.value.code == 2 and words in capsys.readouterr().err


class _Recorder:
    """Stands in for kopf.operator: records its arguments, returns at once."""

    def __init__(self) -> None:
        self.kwargs: dict = {}

    async def __call__(self, **kwargs):
        self.kwargs = kwargs


def _run_main(monkeypatch, argv, env):
    rec = _Recorder()
    monkeypatch.setattr(kopf, "operator", rec)
    for k in ("POD_NAME",):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(cli.time, "time_ns", lambda: NOW_MS * 1_000_000)
    monkeypatch.setattr("quantramp.operator.malloc.start_trimming", lambda: None)
    cli.main(argv)
    return rec.kwargs


def test_main_runs_kopf_standalone_by_default(monkeypatch):
    kw = _run_main(monkeypatch, [], {})
    assert kw["standalone"] is True and "peering_name" not in kw and kw["stop_flag"] is not None


def test_main_passes_the_peering_and_logs_the_priority(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="quantramp.operator")
    kw = _run_main(monkeypatch, ["--peering", "quantramp", "--peering-lifetime", "30"], {"POD_NAME": "quantramp-operator-a"})
    prio = cli.default_priority(NOW_MS, "quantramp-operator-a")
    assert (kw["standalone"], kw["peering_name"], kw["priority"], kw["identity"]) == (False, "quantramp", prio, "quantramp-operator-a")
    assert kw["settings"].peering.lifetime == 30 and kw["clusterwide"] is True
    assert f"with priority {prio}" in caplog.text and "'quantramp-operator-a'" in caplog.text


def test_kopfs_pause_and_resume_lines_are_not_silenced(monkeypatch):
    _run_main(monkeypatch, ["--peering", "quantramp"], {"POD_NAME": "p"})
    peering = logging.getLogger("kopf._core.engines.peering")  # "Pausing operations in favour of", "Resuming operations"
    assert peering.isEnabledFor(logging.INFO)
    assert not logging.getLogger("kopf.objects").isEnabledFor(logging.INFO)  # the list does silence something
    assert not [n for n in cli.NOISY_LOGGERS if "kopf._core.engines.peering".startswith(n)]


def test_main_exits_75_after_losing_the_active_role(monkeypatch):
    async def paused_operator(**kwargs):  # a tick stopped for OPERATOR_PAUSING raises the stop flag
        H.paused("trading", "a")
        assert kwargs["stop_flag"].is_set()

    H.CTX.reset_memory()
    monkeypatch.setattr(kopf, "operator", paused_operator)
    monkeypatch.setattr("quantramp.operator.malloc.start_trimming", lambda: None)
    with pytest.raises(SystemExit) as exc:
        cli.main(["--peering", "quantramp"])
    assert exc.value.code == cli.EXIT_LOST_ACTIVE_ROLE


# --- what a tick does when kopf pauses or stops the operator -----------------------------------


def _tick_once_then_stop(monkeypatch, reason):
    """Run the ticker daemon for one tick, kopf's stop flag set (with ``reason``) during it; returns the
    operator's stop flag."""
    setter: FlagSetter = FlagSetter()
    ticks = []

    async def reconcile(ns, name, body, by_model, stopped):
        ticks.append(name)
        setter.set(reason=reason)

    monkeypatch.setattr(H, "reconcile", reconcile)
    monkeypatch.setattr(H, "TICK_SECONDS", 0.0)
    H.CTX.reset_memory()
    H.CTX.converged[("trading", "a")] = 1.0
    stop = asyncio.Event()

    async def run():
        H.exit_on_pause(stop)
        body = {"metadata": {"namespace": "trading", "name": "a"}}
        await H.ticker(body=body, stopped=FlagWaiter(setter), strategies_by_model={})

    asyncio.run(run())
    assert ticks == ["a"]
    return stop


def test_a_tick_stopped_because_the_operator_pauses_stops_the_replica_with_fresh_memory(monkeypatch):
    stop = _tick_once_then_stop(monkeypatch, kopf.DaemonStoppingReason.OPERATOR_PAUSING)
    assert stop.is_set() and H.lost_active_role()
    assert ("trading", "a") not in H.CTX.converged


def test_a_tick_stopped_because_the_operator_exits_only_stops(monkeypatch):
    stop = _tick_once_then_stop(monkeypatch, kopf.DaemonStoppingReason.OPERATOR_EXITING)
    assert not stop.is_set() and not H.lost_active_role()


def test_a_paused_standalone_operator_is_not_stopped(monkeypatch):
    H.CTX.reset_memory()
    H.exit_on_pause(None)
    H.paused("trading", "a")  # no stop flag: nothing to raise, and nothing raised
    assert not H.lost_active_role()


def _outbox(monkeypatch, stopped):
    ran, writes = [], []
    monkeypatch.setattr(H, "_execute", lambda obj, eff, st: ran.append(eff.id) or "done")
    monkeypatch.setattr(H, "write_status", lambda obj, st: writes.append(st) or obj)
    st = TradingStrategyStatus(phase="Progressing", effects=[
        EffectRecord(id="r1.2.0", kind="RecordEvent", must=False, reason="StageAdvanced"),
        EffectRecord(id="r1.2.1", kind="Notify", must=False, reason="StageAdvanced")])
    obj = {"metadata": {"namespace": "trading", "name": "a", "resourceVersion": "1"}, "status": {}}
    asyncio.run(H._run_outbox(obj, st, stopped))
    return ran, writes


def test_the_outbox_starts_no_effect_once_the_daemon_is_told_to_stop(monkeypatch):
    ran, writes = _outbox(monkeypatch, True)  # kopf's stop flag is truthy once set
    assert ran == [] and writes == []
    ran, writes = _outbox(monkeypatch, None)  # the same outbox, not stopped: both effects run
    assert ran == ["r1.2.0", "r1.2.1"] and len(writes) == 2


def test_status_writes_name_the_replica_as_field_manager():
    assert H.status_field_manager({"POD_NAME": "quantramp-operator-7c9d-x2"}) == "quantramp-operator:quantramp-operator-7c9d-x2"
    assert H.status_field_manager({}) == "quantramp-operator"
    assert len(H.status_field_manager({"POD_NAME": "p" * 300})) == 128
    calls = []

    class Custom:
        def replace_namespaced_custom_object_status(self, *args, **kwargs):
            calls.append(kwargs)
            return {"metadata": {"resourceVersion": "2"}}

    H.CTX.reset_memory()
    H.CTX.custom = Custom()
    obj = {"apiVersion": "quantramp.io/v1alpha1", "kind": "TradingStrategy",
           "metadata": {"name": "a", "namespace": "trading", "resourceVersion": "1"}, "spec": {}}
    H.write_status(obj, TradingStrategyStatus(phase="Progressing"))
    assert calls == [{"field_manager": H.STATUS_FIELD_MANAGER}]
