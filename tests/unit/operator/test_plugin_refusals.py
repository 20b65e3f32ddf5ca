"""``kubectl quantramp`` shows the API server's own words when it refuses a write (an admission
policy's message, e.g. the chart's kill-switch guard), for actions and for the kill switch alike."""

from __future__ import annotations

import json

import pytest

POLICY = ("ValidatingAdmissionPolicy 'quantramp-kill-switch-guard' with binding 'quantramp-kill-switch-guard' denied request: "
          "clearing the reduced (10%) champion sizing of demo is reserved to members of quantramp:risk-officers")


class Refusing:
    """A CustomObjectsApi whose every patch is refused with 403 and ``message``."""

    def __init__(self, message: str) -> None:
        self.message = message
        self.obj = {"metadata": {"name": "demo", "namespace": "trading", "annotations": {}},
                    "spec": {"killSwitch": {"engaged": True, "reason": "halt", "by": "x", "trigger": "Manual", "flatten": True}},
                    "status": {}}

    def get_namespaced_custom_object(self, group, version, ns, plural, name):
        return self.obj

    def patch_namespaced_custom_object(self, group, version, ns, plural, name, body):
        from kubernetes.client import ApiException

        exc = ApiException(status=403, reason="Forbidden")
        exc.body = json.dumps({"kind": "Status", "status": "Failure", "reason": "Forbidden", "code": 403, "message": self.message})
        raise exc


@pytest.mark.parametrize("args,prefix", [
    (("clear", "demo", "--reason", "risk reviewed"), "error: cannot send clear: "),
    (("kill", "off", "demo", "--reason", "feed fixed"), "error: kill off refused: "),
])
def test_a_refused_write_shows_the_api_servers_message(monkeypatch, args, prefix):
    from typer.testing import CliRunner

    from quantramp.operator import plugin

    monkeypatch.setattr(plugin, "_kube", lambda: (Refusing(POLICY), "trading", "trader-dev"))
    res = CliRunner().invoke(plugin.app, list(args))
    assert res.exit_code == 1
    assert prefix + POLICY in " ".join(res.output.split()), res.output
