"""IBBroker's pure parts: IB order status mapping, ports, config, back-off, refusal when not ready."""

from __future__ import annotations

import pytest

from quantramp.trader.broker import Broker, Order, OrderState
from quantramp.trader.ib import IBBroker, IBConfig, ib_error_is_reject, ib_port, ib_side_sign, map_ib_status


@pytest.mark.parametrize(
    "status, filled, rejected, ours",
    [
        ("PendingSubmit", 0, False, OrderState.NEW),
        ("ApiPending", 0, False, OrderState.NEW),
        ("PreSubmitted", 0, False, OrderState.SUBMITTED),
        ("Submitted", 0, False, OrderState.SUBMITTED),
        ("ApiUpdate", 0, False, OrderState.SUBMITTED),
        ("Submitted", 40, False, OrderState.PARTIALLY_FILLED),
        ("PreSubmitted", 1, False, OrderState.PARTIALLY_FILLED),
        ("PendingCancel", 0, False, OrderState.SUBMITTED),  # not cancelled until IB confirms
        ("PendingCancel", 3, False, OrderState.PARTIALLY_FILLED),
        ("ValidationError", 0, False, OrderState.SUBMITTED),  # ib_async's status after a warning: still live
        ("Filled", 100, False, OrderState.FILLED),
        ("Cancelled", 0, False, OrderState.CANCELLED),
        ("ApiCancelled", 0, False, OrderState.CANCELLED),
        ("Cancelled", 0, True, OrderState.REJECTED),  # error 201 then Cancelled: a reject
        ("Cancelled", 5, True, OrderState.CANCELLED),  # something filled: the rest was cancelled
        ("Inactive", 0, False, OrderState.REJECTED),
        ("Inactive", 5, False, OrderState.CANCELLED),
    ],
)
def test_map_ib_status(status, filled, rejected, ours):
    assert map_ib_status(status, filled, rejected=rejected) is ours


def test_map_ib_status_unknown_raises():
    with pytest.raises(ValueError):
        map_ib_status("Bogus")


@pytest.mark.parametrize(
    "code, reject",
    [(201, True), (103, True), (200, True), (203, True), (202, False), (399, False), (404, False), (2104, False), (10148, True), (0, False)],
)
def test_ib_error_is_reject(code, reject):
    assert ib_error_is_reject(code) is reject


def test_ports_and_sides():
    assert (ib_port("paper", "tws"), ib_port("live", "tws"), ib_port("paper", "gateway"), ib_port("live", "gateway")) == (7497, 7496, 4002, 4001)
    with pytest.raises(ValueError):
        ib_port("demo")
    assert (ib_side_sign("BOT"), ib_side_sign("SLD")) == (1, -1)
    with pytest.raises(ValueError):
        ib_side_sign("X")


def test_config_defaults_env_and_backoff():
    assert IBConfig().api_port == 7497  # paper TWS unless told otherwise
    cfg = IBConfig.from_env({"IB_MODE": "live", "IB_APP": "gateway", "IB_CLIENT_ID": "9", "IB_ACCOUNT": "U1"})
    assert (cfg.api_port, cfg.client_id, cfg.account) == (4001, 9, "U1")
    assert IBConfig.from_env({"IB_PORT": "7000"}).api_port == 7000
    with pytest.raises(ValueError):
        IBConfig(mode="real")
    b = IBConfig(backoff_initial_s=0.5, backoff_factor=2.0, backoff_max_s=5.0)
    assert [b.backoff(i) for i in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    with pytest.raises(ValueError):
        IBConfig(backoff_initial_s=0)


def test_orders_are_refused_until_connected_and_reconciled():
    br = IBBroker(IBConfig(port=1))
    assert isinstance(br, Broker) and not br.ready and br.state == "DISCONNECTED"
    u = br.submit(Order("o1", "AAPL", 5))
    assert u.state == OrderState.REJECTED and "not ready" in u.reason
    assert br.order("o1").state == OrderState.REJECTED and br.open_orders() == []
    # a duplicate id is refused without touching the original
    assert br.submit(Order("o1", "AAPL", 1)).reason.startswith("duplicate")
    with pytest.raises(KeyError):
        br.cancel("nope")
