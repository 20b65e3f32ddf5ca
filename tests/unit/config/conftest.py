"""Fixtures of the config tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def localstack():
    """hack/localstack.py loaded as a module (it is a script, not part of the package), fresh per test module."""
    spec = importlib.util.spec_from_file_location("qr_localstack", REPO / "hack" / "localstack.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up
    try:
        spec.loader.exec_module(mod)
        yield mod
    finally:
        sys.modules.pop(spec.name, None)
