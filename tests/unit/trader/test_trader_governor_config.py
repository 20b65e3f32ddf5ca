"""config/risk-limits.yaml and the governor's built-in defaults say the same thing."""

from __future__ import annotations

from pathlib import Path

import yaml

from quantramp.trader import governor as g

CONFIG = Path(__file__).resolve().parents[3] / "config" / "risk-limits.yaml"


def test_yaml_matches_the_code():
    doc = yaml.safe_load(CONFIG.read_text())
    seed = dict(doc["seed_runbook"])
    assert seed.pop("reference_capital_usd") == g.SEED_REFERENCE_CAPITAL_USD
    assert seed == g.SEED_LIMITS_USD
    d = doc["defaults"]
    assert d["capital_fractions"] == g.DEFAULT_FRACTIONS
    assert d["drawdown_size_factor"] == g.DEFAULT_DRAWDOWN_SIZE_FACTOR
    assert d["price_collar_ratio"] == g.DEFAULT_PRICE_COLLAR_RATIO
    assert d["max_orders_per_window"] == g.DEFAULT_MAX_ORDERS_PER_WINDOW
    assert d["throttle_window_s"] == g.DEFAULT_THROTTLE_WINDOW_S
    assert d["duplicate_window_s"] == g.DEFAULT_DUPLICATE_WINDOW_S
    assert d["max_price_age_s"] == g.DEFAULT_MAX_PRICE_AGE_S
    assert d["max_capital_fraction"] == g.DEFAULT_MAX_CAPITAL_FRACTION


def test_seed_runbook_figures():
    # the figures: $100 daily loss, $500 position, $2,000 turnover, $50 trade, -$20 halves size
    assert g.SEED_LIMITS_USD == {
        "max_daily_loss_usd": 100.0, "max_position_usd": 500.0, "max_daily_turnover_usd": 2_000.0,
        "max_order_usd": 50.0, "drawdown_soft_usd": 20.0,
    }
