"""Generate the TradingStrategy CustomResourceDefinition from the pydantic models.

``python -m quantramp.operator.crdgen [--check]`` writes
``crds/tradingstrategies.quantramp.io.yaml`` and the Helm chart's copy; ``--check`` exits 1
when a file on disk differs from what the models generate.

Kubernetes wants a *structural* OpenAPI v3 schema: no ``$ref``, no ``anyOf`` with ``null``
(``nullable: true`` instead), a ``type`` on every node.  :func:`structural` turns pydantic's
JSON Schema into that; cross-field rules travel as ``x-kubernetes-validations`` (CEL).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from .models import GROUP, KIND, MAX_NAME_LENGTH, PLURAL, SPEC_RULES, VERSION, TradingStrategySpec, TradingStrategyStatus

_REPO = Path(__file__).resolve().parent.parent
CRD_PATH = _REPO / "crds" / f"{PLURAL}.{GROUP}.yaml"
CHART_CRD_PATH = _REPO / "charts" / "quantramp" / "crds" / f"{PLURAL}.{GROUP}.yaml"

_DROP = {"title", "discriminator"}


def structural(node: Any, defs: dict[str, Any]) -> Any:
    """Return a structural copy of JSON Schema ``node``, resolving ``$ref`` against ``defs``."""
    if isinstance(node, list):
        return [structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        nullable = len(options) < len(node["anyOf"])
        if len(options) != 1:
            raise ValueError(f"cannot express anyOf {node['anyOf']!r} structurally")
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        out = structural({**options[0], **rest}, defs)
        if nullable:
            out["nullable"] = True
        return out
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or key == "$defs":
            continue
        if key == "properties":
            out[key] = {k: structural(v, defs) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = value
    if "exclusiveMinimum" in out and not isinstance(out["exclusiveMinimum"], bool):
        out["minimum"], out["exclusiveMinimum"] = out["exclusiveMinimum"], True
    if "exclusiveMaximum" in out and not isinstance(out["exclusiveMaximum"], bool):
        out["maximum"], out["exclusiveMaximum"] = out["exclusiveMaximum"], True
    if "default" in out and out["default"] is None:
        del out["default"]
    if out.get("format") == "date-time":
        out["type"] = "string"
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("type") == "object" and out.get("additionalProperties") is True:
        del out["additionalProperties"]
        out["x-kubernetes-preserve-unknown-fields"] = True
    if out.get("additionalProperties") is False:
        del out["additionalProperties"]
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    return out


def _without_rules(node: Any) -> Any:
    """``node`` without ``x-kubernetes-validations`` anywhere."""
    if isinstance(node, list):
        return [_without_rules(n) for n in node]
    if isinstance(node, dict):
        return {k: _without_rules(v) for k, v in node.items() if k != "x-kubernetes-validations"}
    return node


def _schema(model: type) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="serialization")
    return structural(raw, raw.get("$defs", {}))


def build_crd() -> dict[str, Any]:
    """Return the CRD manifest as a dict (apiextensions.k8s.io/v1)."""
    spec = _schema(TradingStrategySpec)
    # Server-side defaults for the nested blocks, so `kubectl get -o yaml` shows the effective ramp.
    defaults = TradingStrategySpec.model_validate(
        {"model": {"name": "x", "version": "1"}, "capitalUsd": 1e6}
    ).model_dump(by_alias=True, mode="json", exclude_none=True)
    for key in ("symbols", "stages", "analysis", "risk", "trader", "killSwitch", "stopLoss"):
        spec["properties"][key]["default"] = defaults[key]
    spec["x-kubernetes-validations"] = SPEC_RULES
    spec["description"] = "Desired ramp: the model, capital, stages, analysis criteria, risk limits and trader pod."
    # the status is written by the operator alone: no CEL rules there (they cost the API server's budget)
    status = _without_rules(_schema(TradingStrategyStatus))
    status["description"] = "Observed state of the ramp, written by the operator."
    columns = [
        ("Stage", "string", ".status.stage", "Current stage"),
        ("Capital", "number", ".status.capitalPercent", "Challenger's share of capital, percent"),
        ("Champion", "string", ".status.championVersion", "Champion model version"),
        ("Challenger", "string", ".status.challengerVersion", "Challenger model version"),
        ("Phase", "string", ".status.phase", "Ramp phase"),
        ("Killed", "boolean", ".status.killSwitch.engaged", "Kill switch engaged (no orders that add risk)"),
    ]
    printer = [{"name": n, "type": t, "jsonPath": p, "description": d} for n, t, p, d in columns]
    printer.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/name": "quantramp", "app.kubernetes.io/component": "crd"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": "tradingstrategy",
                "shortNames": ["ts", "tstrat"],
                "categories": ["quantramp"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": printer,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A trading model ramped from shadow to production on live evidence.",
                            "required": ["spec"],
                            "x-kubernetes-validations": [{
                                "rule": f"self.metadata.name.size() <= {MAX_NAME_LENGTH}",
                                "message": f"metadata.name may have at most {MAX_NAME_LENGTH} characters: the operator "
                                           "names Deployments <name>-champion and <name>-challenger (63 at most)",
                            }],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    """The CRD as YAML text, with a header saying it is generated."""
    header = "# Generated by `python -m quantramp.operator.crdgen` from operator/models.py. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(), sort_keys=False, width=120)


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns the process exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    text = render()
    stale = 0
    for out in (CRD_PATH, CHART_CRD_PATH):
        if "--check" in args:
            if not out.exists() or out.read_text() != text:
                print(f"{out} is stale: run `python -m quantramp.operator.crdgen`", file=sys.stderr)
                stale = 1
            continue
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")
    return stale


if __name__ == "__main__":
    sys.exit(main())
