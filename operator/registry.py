"""MLflow model registry adapter: read the champion alias, move aliases, tag versions, read a
version's run metrics (its admission evidence).

Thin and idempotent (check, then set): setting an alias or a tag to the value it already has
sends no write. It speaks MLflow's REST API 2.0 with ``requests`` rather than importing the
MLflow client, which alone costs the operator about 150 MB of memory (``operator-scale.md``);
authentication follows the MLflow client's variables (``MLFLOW_TRACKING_TOKEN``, or
``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``). Errors raise
:class:`RegistryError` with MLflow's ``error_code`` (e.g. ``RESOURCE_DOES_NOT_EXIST``).
"""

from __future__ import annotations

import os
from typing import Any

import requests
import requests.adapters

#: seconds per request
TIMEOUT_S = 10.0


class RegistryError(RuntimeError):
    """An MLflow registry call failed; ``error_code`` is MLflow's (or ``UNAVAILABLE`` for transport errors)."""

    def __init__(self, message: str, error_code: str = "", status: int = 0) -> None:
        super().__init__(f"{error_code}: {message}" if error_code else message)
        self.error_code, self.status = error_code, status


class Registry:
    """The operator's view of the MLflow registry at ``tracking_uri`` (http or https)."""

    def __init__(self, tracking_uri: str | None = None, timeout: float = TIMEOUT_S) -> None:
        uri = (tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "").rstrip("/")
        if not uri.startswith(("http://", "https://")):
            raise RegistryError(f"MLFLOW_TRACKING_URI must be an http(s) URL of an MLflow server, got {uri!r}")
        self.base = f"{uri}/api/2.0/mlflow"
        self.timeout = timeout
        self.session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=32)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        token = os.environ.get("MLFLOW_TRACKING_TOKEN")
        user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        elif user and password:
            self.session.auth = (user, password)

    def _call(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        try:
            r = self.session.request(method, f"{self.base}/{path}", timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise RegistryError(f"MLflow at {self.base} is unreachable: {exc}", "UNAVAILABLE") from exc
        try:
            body = r.json() if r.content else {}
        except ValueError:
            body = {}
        if r.status_code >= 400:
            raise RegistryError(str(body.get("message") or r.text[:300]), str(body.get("error_code") or ""), r.status_code)
        return body

    def alias_version(self, model: str, alias: str) -> str | None:
        """Version number (as a string) that ``alias`` points at, or None if the alias is unset."""
        try:
            mv = self._call("GET", "registered-models/alias", params={"name": model, "alias": alias})
        except RegistryError as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND") or exc.status == 404:
                return None
            raise
        return str(mv["model_version"]["version"])

    def _version(self, model: str, version: str) -> dict[str, Any]:
        return self._call("GET", "model-versions/get", params={"name": model, "version": str(version)})["model_version"]

    def check_version(self, model: str, version: str) -> None:
        """Raise :class:`RegistryError` unless ``model`` version ``version`` is registered."""
        self._version(model, version)

    def version_run_metrics(self, model: str, version: str) -> dict[str, float]:
        """The latest value of every metric of the run that produced ``model`` version ``version``
        ({key: value}, e.g. the admission evidence wf_sharpe, dsr, pbo, trials); {} when the version
        has no run (registered from a path). A missing version or run raises :class:`RegistryError`.
        """
        run_id = self._version(model, version).get("run_id")
        if not run_id:
            return {}
        run = self._call("GET", "runs/get", params={"run_id": run_id})["run"]
        # protobuf JSON writes NaN and infinities as strings ("NaN", "Infinity"): float() reads both
        return {m["key"]: float(m["value"]) for m in run.get("data", {}).get("metrics", []) if "value" in m}

    def set_alias(self, model: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (idempotent)."""
        if self.alias_version(model, alias) != str(version):
            self._call("POST", "registered-models/alias", json={"name": model, "alias": alias, "version": str(version)})

    def remove_alias(self, model: str, alias: str) -> None:
        """Delete ``alias`` of ``model`` if it is set (idempotent)."""
        if self.alias_version(model, alias) is not None:
            self._call("DELETE", "registered-models/alias", json={"name": model, "alias": alias})

    def tag_version(self, model: str, version: str, tags: dict[str, str]) -> None:
        """Set each tag on the model version (idempotent)."""
        current = {t["key"]: t.get("value") for t in self._version(model, version).get("tags", [])}
        for key, value in tags.items():
            if current.get(key) != value:
                self._call("POST", "model-versions/set-tag",
                           json={"name": model, "version": str(version), "key": key, "value": value})

    def aliases(self, model: str) -> dict[str, str]:
        """All aliases of ``model`` as {alias: version}."""
        rm = self._call("GET", "registered-models/get", params={"name": model})["registered_model"]
        return {a["alias"]: str(a["version"]) for a in rm.get("aliases", [])}
