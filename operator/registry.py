"""MLflow model registry adapter: read the champion alias, move aliases, tag versions.

Thin and idempotent: setting an alias or a tag to the value it already has is a no-op on
the server.  Errors from MLflow propagate as ``mlflow.exceptions.MlflowException``.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient


class Registry:
    """The operator's view of the MLflow registry at ``tracking_uri``."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def alias_version(self, model: str, alias: str) -> str | None:
        """Version number (as a string) that ``alias`` points at, or None if the alias is unset."""
        try:
            return str(self.client.get_model_version_by_alias(model, alias).version)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            raise

    def check_version(self, model: str, version: str) -> None:
        """Raise ``MlflowException`` unless ``model`` version ``version`` is registered."""
        self.client.get_model_version(model, version)

    def set_alias(self, model: str, alias: str, version: str) -> None:
        """Point ``alias`` at ``version`` (idempotent)."""
        if self.alias_version(model, alias) != str(version):
            self.client.set_registered_model_alias(model, alias, str(version))

    def remove_alias(self, model: str, alias: str) -> None:
        """Delete ``alias`` of ``model`` if it is set (idempotent)."""
        if self.alias_version(model, alias) is not None:
            self.client.delete_registered_model_alias(model, alias)

    def tag_version(self, model: str, version: str, tags: dict[str, str]) -> None:
        """Set each tag on the model version (idempotent)."""
        current = self.client.get_model_version(model, version).tags or {}
        for key, value in tags.items():
            if current.get(key) != value:
                self.client.set_model_version_tag(model, version, key, value)

    def aliases(self, model: str) -> dict[str, str]:
        """All aliases of ``model`` as {alias: version}."""
        rm = self.client.get_registered_model(model)
        return {a: str(v) for a, v in (rm.aliases or {}).items()}
