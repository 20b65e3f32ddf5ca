"""Shared pytest fixtures: the real local stack (a single-node cluster, Redis, Prometheus, MLflow, the fakes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "hack"))
sys.path.insert(0, str(REPO / "tests"))  # tests/support: shared test data helpers (support.stock_bars)

import demo  # noqa: E402  (hack/demo.py: the Harness shared with `make demo`)


@pytest.fixture(scope="session")
def stack():
    """A fresh local stack in .local/test, torn down after the session. Yields a demo.Harness."""
    h = demo.Harness(REPO / ".local" / "test")
    h.up(fresh=True)
    try:
        yield h
    finally:
        h.down()


@pytest.fixture(scope="session")
def operator_stack(stack):
    """The stack with the demo models registered, the CRD installed and the operator running."""
    for model, _role, options in demo.DEMO_MODELS:
        stack.train(model, options)
    stack.install_crd()
    stack.start_operator()
    return stack
