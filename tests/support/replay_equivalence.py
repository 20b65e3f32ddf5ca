"""The batch replay (trader/replay.py) against the bar-by-bar path, for bar lengths other than the minute.

tests/unit/trader/test_trader_replay.py compares minute runs with exact equality; across other bar lengths the
two paths are compared with a stated float tolerance (rel 1e-12, abs 1e-9) and an identical snapshot.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from quantramp.trader import backtest, replay


def batch_and_steps(model, cfg, bars, seed: int):
    """Two engines of ``cfg`` (SimBroker seeded ``seed``): ``a`` fed ``bars`` one by one, ``b`` by
    :func:`quantramp.trader.replay.run`. Returns ``(a, b)``; asserts the batch ran every bar."""
    a = backtest.make_engine(model, cfg, bars, seed=seed)
    for bar in bars:
        a.on_bar(bar)
    b = backtest.make_engine(model, cfg, bars, seed=seed)
    assert replay.run(b, bars) == len(bars)
    return a, b


def assert_same_run(a, b) -> None:
    """Every stats field equal (floats within rel 1e-12, abs 1e-9) and the snapshots identical."""
    sa, sb = a.stats(), b.stats()
    for f in dataclasses.fields(sa):
        x, y = getattr(sa, f.name), getattr(sb, f.name)
        assert x == pytest.approx(y, rel=1e-12, abs=1e-9) if isinstance(x, float) else x == y, f.name
    assert json.dumps(a.snapshot(), sort_keys=True, default=str) == json.dumps(b.snapshot(), sort_keys=True, default=str)
