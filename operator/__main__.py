"""``quantramp-operator``: run the kopf operator (``python -m quantramp.operator``).

Options: ``--namespace NS`` (repeatable; default: all namespaces), ``--verbose``, ``--log-format text|json``,
``--liveness URL`` (kopf's liveness endpoint, e.g. ``http://0.0.0.0:8080/healthz``; it fails
when the operator's event loop stops answering), ``--metrics-port PORT`` and
``--metrics-address ADDR`` (the operator's own metrics, :mod:`quantramp.operator.metrics`;
default address 127.0.0.1: set 0.0.0.0 in a pod), and for high availability ``--peering NAME``,
``--priority N``, ``--peering-lifetime SECONDS`` (below).
Configuration comes from the environment, see :mod:`quantramp.operator.handlers`; an invalid
``QR_TRADER_DEFAULTS`` exits with status 2 and a message naming each bad field.

High availability (kopf peering)
--------------------------------
Without ``--peering`` the operator runs standalone, as a lone developer run should: it neither
reads nor writes a peering object. With ``--peering NAME`` every replica records itself (identity
``POD_NAME``, from the downward API; else kopf's ``user@host/time``) with its priority in the
kopf.dev/v1 peering object NAME — a ClusterKopfPeering when the operator watches all namespaces,
else a KopfPeering in each watched namespace (the chart creates them; one missing keeps the
operator paused) — and kopf pauses every replica that sees a live peer of higher priority. So
exactly one replica, the one of highest priority, is active.

Priority (:func:`default_priority`): ``(PRIORITY_EPOCH_MS - start_ms) * 1000 + crc32(POD_NAME) % 1000``
with ``start_ms`` this process' start, Unix milliseconds. The OLDEST running replica wins: a rolling
update's new pod starts as the standby and the active one hands over once, when it is deleted; a
restarted container comes back as the youngest, so it never preempts the replica that took over.
Equal priorities must be practically impossible, because kopf pauses ALL operators that share
one ("Pausing all operators, including self") until one of them goes: two replicas would have
to start in the same millisecond AND hash their (distinct) pod names to the same residue mod
1000. ``PRIORITY_EPOCH_MS`` is 4e12 (year 2096), so every priority is positive and at most
4e15 + 999, below 2**53: the JSON number in the peering status stays exact in every client.
Clocks of different nodes may disagree by their skew: that only decides which of two replicas
started within the skew of each other is "older" (never a tie), and at worst makes a newly
started replica preempt the active one, one clean handover. To freeze the in-cluster replicas
(kopf's use of peering: debug from a workstation), join the same peering with ``--priority``
above 4e15, e.g. 9007199254740991.

``--peering-lifetime``: how long a replica's record counts as alive without a keep-alive (kopf
refreshes it 5-10 s before that). A replica that stops gracefully removes its record at once,
so the standby takes over within a second or two; one that dies (SIGKILL, node lost) is
replaced when its record expires, at most the lifetime later. kopf's default is 60 s; the chart
sets 30.

A replica that loses the active role while running (a peer of higher priority appears) stops
with exit status 75 once its strategies' ticks have finished, and Kubernetes restarts it as the
youngest, standby replica: kopf does not purge its in-memory index of objects deleted while it
was paused (:mod:`quantramp.operator.handlers`, "Peering").
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
import zlib

#: the priority's time origin, Unix ms (2096-10-02): later than any start, so every priority is positive
PRIORITY_EPOCH_MS = 4_000_000_000_000
#: the largest integer a JSON number holds exactly in every client (JavaScript, Go's float64)
MAX_SAFE_PRIORITY = 2**53 - 1
#: exit status of a replica that lost the active role while running (EX_TEMPFAIL: restarted as the standby)
EXIT_LOST_ACTIVE_ROLE = 75
#: the loggers whose INFO lines drown the operator's own; kopf's peering logger
#: (kopf._core.engines.peering: "Pausing operations in favour of ...", "Resuming operations after the pause")
#: is deliberately not among them; aiohttp.access is kopf's liveness endpoint logging every probe
NOISY_LOGGERS = ("kopf.objects", "kopf.activities.startup", "urllib3", "kubernetes", "aiohttp.access")


def default_priority(start_ms: int, pod_name: str) -> int:
    """The peering priority of a replica started at ``start_ms`` (Unix ms) as pod ``pod_name``:
    older is higher; replicas started in the same millisecond differ by a stable hash of their pod
    names (CRC-32, not ``hash()``, which is salted per process). Always in ``[0, 2**53)``."""
    start_ms = min(max(int(start_ms), 0), PRIORITY_EPOCH_MS - 1)
    return (PRIORITY_EPOCH_MS - start_ms) * 1000 + zlib.crc32(pod_name.encode()) % 1000


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="quantramp-operator", description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", "-n", action="append", default=[], help="watch only this namespace")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="text, or json: one JSON object per line (time, level, logger, message, k8s_ref)")
    parser.add_argument("--liveness", default=None, help="kopf liveness endpoint URL, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--metrics-port", type=int, default=None, help="serve the operator's metrics on this port")
    parser.add_argument("--metrics-address", default="127.0.0.1", help="address of the metrics server")
    parser.add_argument("--peering", default=None, metavar="NAME",
                        help="run as one of several replicas: the kopf.dev peering object NAME decides the active one "
                             "(default: standalone)")
    parser.add_argument("--priority", type=int, default=None, metavar="N",
                        help="peering priority (default: derived so that the oldest replica wins, see the module docs)")
    parser.add_argument("--peering-lifetime", type=int, default=None, metavar="SECONDS",
                        help="seconds a replica's peering record lives without a keep-alive (default: kopf's, 60)")
    args = parser.parse_args(argv)
    if args.peering is None and (args.priority is not None or args.peering_lifetime is not None):
        parser.error("--priority and --peering-lifetime need --peering")
    if args.priority is not None and not 0 <= args.priority <= MAX_SAFE_PRIORITY:
        parser.error(f"--priority must be between 0 and {MAX_SAFE_PRIORITY}")
    if args.peering_lifetime is not None and args.peering_lifetime < 10:
        parser.error("--peering-lifetime must be at least 10 s (kopf refreshes the record 5-10 s before it expires)")
    return args


def operator_kwargs(args: argparse.Namespace, start_ms: int, environ: dict[str, str] | os._Environ) -> dict:
    """The peering and scope arguments of ``kopf.operator`` for these options (no settings object)."""
    kw: dict = {"clusterwide": not args.namespace, "namespaces": args.namespace, "liveness_endpoint": args.liveness}
    if args.peering is None:
        kw["standalone"] = True
        return kw
    pod = environ.get("POD_NAME", "")
    kw.update(standalone=False, peering_name=args.peering,
              priority=args.priority if args.priority is not None else default_priority(start_ms, pod))
    if pod:
        kw["identity"] = pod  # the peering record's key: the pod's name (kopf's own default reads POD_ID)
    return kw


def main(argv: list[str] | None = None) -> None:
    """Parse options and run the operator until interrupted."""
    start_ms = time.time_ns() // 1_000_000  # first: the peering priority orders replicas by start
    from . import malloc

    malloc.limit_arenas()
    malloc.start_trimming()
    import kopf

    from . import handlers
    from .workloads import trader_defaults_from_environment

    args = parse_args(argv)
    try:  # a bad platform setting stops the operator here, before it touches any strategy
        trader_defaults_from_environment()
    except ValueError as exc:
        sys.stderr.write(f"quantramp-operator: {exc}\n")
        raise SystemExit(2) from exc
    from quantramp.trader import logs

    level = logging.DEBUG if args.verbose else logging.INFO
    logs.configure(level, args.log_format)
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_address)
    kw = operator_kwargs(args, start_ms, os.environ)
    settings = kopf.OperatorSettings()
    if args.peering_lifetime is not None:
        settings.peering.lifetime = args.peering_lifetime
    log = logging.getLogger("quantramp.operator")
    if args.peering is None:
        log.info("standalone: no peering (a second replica would act on the same strategies; the chart's ha.enabled runs peered replicas)")
    else:
        where = "cluster-wide (ClusterKopfPeering)" if kw["clusterwide"] else f"in {', '.join(args.namespace)} (KopfPeering)"
        log.info("peering %r %s as %r with priority %d (lifetime %d s): paused until no live peer of higher priority "
                 "is recorded; kopf logs 'Resuming operations' when this replica becomes the active one",
                 args.peering, where, kw.get("identity", "(kopf's id)"), kw["priority"], settings.peering.lifetime)

    async def run() -> bool:
        stop = asyncio.Event()
        handlers.exit_on_pause(stop if args.peering is not None else None)
        await kopf.operator(settings=settings, stop_flag=stop, **kw)
        return handlers.lost_active_role()

    if asyncio.run(run()):
        log.warning("exiting (status %d) after losing the active role to a peer: restarted, this replica is the standby",
                    EXIT_LOST_ACTIVE_ROLE)
        raise SystemExit(EXIT_LOST_ACTIVE_ROLE)


if __name__ == "__main__":
    main()
