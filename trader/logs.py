"""Log output of the trader and the operator: ``text`` (one readable line) or ``json`` (one JSON object per
line, for log pipelines: python-json-logger, a dependency of kopf).

JSON lines carry ``time`` (ISO 8601, UTC, microseconds), ``level``, ``logger``, ``message``, ``exc_info``
(the traceback, when there is one) and the record's extras that are JSON data, e.g. kopf's ``k8s_ref``
(the object a handler's line is about); kopf's ``settings`` and ``k8s_skip`` extras are left out.
"""

from __future__ import annotations

import logging
import sys

#: the log formats: the chart's ``logFormat``, the operator's ``--log-format``, the trader's ``QR_LOG_FORMAT``
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: record attributes kopf adds that are not data (an OperatorSettings object, a flag for its event poster)
_NOT_DATA = ("settings", "k8s_skip")
#: the name of the handler :func:`configure` installs
_HANDLER = "quantramp"


def formatter(fmt: str) -> logging.Formatter:
    """The formatter of log format ``fmt`` (one of :data:`LOG_FORMATS`). Raises ValueError for another one."""
    if fmt == "text":
        return logging.Formatter(TEXT_FORMAT)
    if fmt == "json":
        from pythonjsonlogger.core import RESERVED_ATTRS
        from pythonjsonlogger.json import JsonFormatter

        return JsonFormatter("{levelname}{name}{message}", style="{", timestamp="time",
                             rename_fields={"levelname": "level", "name": "logger"},
                             reserved_attrs=[*RESERVED_ATTRS, *_NOT_DATA])
    raise ValueError(f"log format {fmt!r}: use one of {', '.join(LOG_FORMATS)}")


def configure(level: int = logging.INFO, fmt: str = "text", stream=None) -> None:
    """Send every log line at ``level`` and above to ``stream`` (default stdout) in format ``fmt``. The
    handler a previous call installed is replaced; other handlers of the root logger (a test's log
    capture) stay. Raises ValueError for an unknown format (nothing changed then)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter(fmt))
    handler.set_name(_HANDLER)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


__all__ = ["LOG_FORMATS", "configure", "formatter"]
