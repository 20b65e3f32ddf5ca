"""Log lines as text or as JSON (trader/logs.py): the trader's QR_LOG_FORMAT and the operator's --log-format."""

from __future__ import annotations

import io
import json
import logging

import kopf
import pytest

from quantramp.operator.__main__ import parse_args
from quantramp.trader import logs, server


@pytest.fixture
def restore_root():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_time_level_logger_message_and_the_traceback(restore_root):
    buf = io.StringIO()
    logs.configure(logging.INFO, "json", buf)
    log = logging.getLogger("quantramp.test")
    # kopf's per-object lines carry the object (k8s_ref) and two extras that are not data
    log.info("reconciled %s", "s1", extra={"k8s_ref": {"namespace": "trading", "name": "s1"},
                                           "settings": kopf.OperatorSettings(), "k8s_skip": False})
    try:
        raise RuntimeError("broker down")
    except RuntimeError:
        log.exception("step failed")
    log.debug("not at INFO")
    first, second = (json.loads(line) for line in buf.getvalue().splitlines())
    assert first["message"] == "reconciled s1" and first["level"] == "INFO" and first["logger"] == "quantramp.test"
    assert first["k8s_ref"] == {"namespace": "trading", "name": "s1"} and "settings" not in first
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert second["level"] == "ERROR" and "RuntimeError: broker down" in second["exc_info"]


def test_text_is_the_default_line(restore_root):
    buf = io.StringIO()
    logs.configure(fmt="text", stream=buf)
    logging.getLogger("quantramp.test").warning("hello")
    line = buf.getvalue().strip()
    assert line.endswith("WARNING quantramp.test: hello") and not line.startswith("{")


def test_an_unknown_format_is_refused_and_the_trader_says_so(restore_root, tmp_path):
    with pytest.raises(ValueError, match="use one of text, json"):
        logs.configure(fmt="xml")
    log = tmp_path / "termination-log"
    log.write_text("")
    assert server.main({"QR_LOG_FORMAT": "xml", "QR_TERMINATION_LOG": str(log)}) == server.EXIT_CONFIG
    assert "QR_LOG_FORMAT" in log.read_text()


def test_the_operator_takes_the_log_format():
    assert parse_args([]).log_format == "text" and parse_args(["--log-format", "json"]).log_format == "json"
    with pytest.raises(SystemExit):
        parse_args(["--log-format", "xml"])
