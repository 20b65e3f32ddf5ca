"""``quantramp-operator``: run the kopf operator (``python -m quantramp.operator``).

Options: ``--namespace NS`` (repeatable; default: all namespaces), ``--verbose``,
``--liveness URL`` (kopf's liveness endpoint, e.g. ``http://0.0.0.0:8080/healthz``; it fails
when the operator's event loop stops answering), ``--metrics-port PORT`` and
``--metrics-address ADDR`` (the operator's own metrics, :mod:`quantramp.operator.metrics`;
default address 127.0.0.1: set 0.0.0.0 in a pod).
Configuration comes from the environment, see :mod:`quantramp.operator.handlers`; an invalid
``QR_TRADER_DEFAULTS`` exits with status 2 and a message naming each bad field.
"""

from __future__ import annotations

import argparse
import asyncio
import logging


def main(argv: list[str] | None = None) -> None:
    """Parse options and run the operator until interrupted."""
    from . import malloc

    malloc.limit_arenas()
    malloc.start_trimming()
    import kopf

    from . import handlers  # noqa: F401  (registers the handlers)
    from .workloads import trader_defaults_from_environment

    parser = argparse.ArgumentParser(prog="quantramp-operator", description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", "-n", action="append", default=[], help="watch only this namespace")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("--liveness", default=None, help="kopf liveness endpoint URL, e.g. http://0.0.0.0:8080/healthz")
    parser.add_argument("--metrics-port", type=int, default=None, help="serve the operator's metrics on this port")
    parser.add_argument("--metrics-address", default="127.0.0.1", help="address of the metrics server")
    args = parser.parse_args(argv)
    try:  # a bad platform setting stops the operator here, before it touches any strategy
        trader_defaults_from_environment()
    except ValueError as exc:
        parser.exit(2, f"quantramp-operator: {exc}\n")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kopf.objects", "kopf.activities.startup", "urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(args.metrics_port, addr=args.metrics_address)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=True,
            liveness_endpoint=args.liveness,
        )
    )


if __name__ == "__main__":
    main()
