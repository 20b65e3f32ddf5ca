"""quantramp trader: market data, features, model, risk governor, broker, metrics."""
