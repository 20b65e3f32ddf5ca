"""Where a trader serves its probes and metrics: POD_IP, and loopback too inside a pod, so that `kubectl
port-forward` (which dials localhost in the pod's network namespace) reaches them; loopback only outside a pod.
The e2e test tests/e2e/test_calendars.py port-forwards to a real trader pod."""

from __future__ import annotations

import pytest

from quantramp.trader.server import listen_addresses


@pytest.mark.parametrize("pod_ip, expected", [
    ("127.0.0.1", ["127.0.0.1"]),
    ("10.244.0.7", ["10.244.0.7", "127.0.0.1"]),
    ("fd00:10:244::7", ["fd00:10:244::7", "::1"]),
    ("0.0.0.0", ["0.0.0.0"]),
])
def test_a_pod_also_listens_on_loopback(pod_ip, expected):
    assert listen_addresses(pod_ip) == expected


def test_a_pod_ip_that_is_not_an_address_is_refused():
    with pytest.raises(ValueError):
        listen_addresses("pod-7")
