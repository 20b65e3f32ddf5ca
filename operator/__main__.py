"""``quantramp-operator``: run the kopf operator (``python -m quantramp.operator``).

Options: ``--namespace NS`` (repeatable; default: all namespaces), ``--verbose``.
Configuration comes from the environment, see :mod:`quantramp.operator.handlers`.
"""

from __future__ import annotations

import argparse
import asyncio
import logging


def main(argv: list[str] | None = None) -> None:
    """Parse options and run the operator until interrupted."""
    import kopf

    from . import handlers  # noqa: F401  (registers the handlers)

    parser = argparse.ArgumentParser(prog="quantramp-operator", description=__doc__.splitlines()[0])
    parser.add_argument("--namespace", "-n", action="append", default=[], help="watch only this namespace")
    parser.add_argument("--verbose", "-v", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kopf.objects", "kopf.activities.startup", "urllib3", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    asyncio.run(
        kopf.operator(
            clusterwide=not args.namespace,
            namespaces=args.namespace,
            standalone=True,
        )
    )


if __name__ == "__main__":
    main()
