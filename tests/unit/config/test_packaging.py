"""The wheel (and so the image) holds every package of the source tree: pyproject's explicit
``packages`` list once left out ``quantramp.trader.certification`` and ``quantramp.trader.stress``,
so ``quantramp-trader stress`` failed with ImportError in an installed copy while it worked in
the editable dev install."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def _source_packages() -> set[str]:
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in cfg["package-dir"].items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            rel = init.parent.relative_to(root).parts
            found.add(".".join((name, *rel)))
    return found


def test_every_source_package_is_listed_in_pyproject():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(cfg["packages"])
    found = _source_packages()
    assert {"quantramp.operator", "quantramp.trader", "quantramp.trader.stress.scenarios"} <= found
    assert found - listed == set(), f"packages missing from [tool.setuptools] packages: {sorted(found - listed)}"
    assert listed - found == set(), f"listed packages without a source folder: {sorted(listed - found)}"
