"""The trader pod's environment and a deterministic model, shared by the trader runtime tests
(tests/integration/trader: the conftest's Pod, the IB runtime and live-bar tests)."""

POD_ENV = {
    "QR_STRATEGY": "aapl-it",
    "QR_NAMESPACE": "trading",
    "QR_ROLE": "challenger",
    "QR_STAGE": "canary-1",
    "QR_MODEL_URI": "models:/aapl-it/1",
    "MLFLOW_TRACKING_URI": "http://127.0.0.1:1",
    "QR_CAPITAL_USD": "10000",
    "QR_BAR_INTERVAL_SECONDS": "0",
}


class Momentum:
    """Deterministic model: up if the last bar's normalised return is positive (trades often)."""

    def p_up_one(self, x):
        return 0.9 if x[0] > 0 else 0.1
