"""The reference docs in docs/ are generated (``make docs``, hack/gendocs.py) from their sources of truth:
the chart's values.schema.json and values.yaml, the CRD, the kubectl plugin's typer app, the metric
definitions. A source edited without regenerating fails here with "run make docs" and the diff."""

from __future__ import annotations

import copy
import difflib
import json
import re
from pathlib import Path

import pytest

import gendocs  # hack/gendocs.py (tests/conftest.py puts hack/ on sys.path)

REPO = Path(__file__).resolve().parents[3]
DOCS = REPO / "docs"


def test_docs_match_their_sources(tmp_path):
    gendocs.write(tmp_path, REPO)
    stale = []
    for name in gendocs.FILES:
        new = (tmp_path / name).read_text()
        committed = DOCS / name
        old = committed.read_text() if committed.exists() else ""
        if new != old:
            diff = difflib.unified_diff(old.splitlines(True), new.splitlines(True), f"docs/{name}", f"regenerated/{name}")
            stale.append(f"docs/{name} differs from its sources:\n" + "".join(list(diff)[:40]))
    assert not stale, "run make docs\n" + "\n".join(stale)


def test_a_chart_value_without_a_description_is_refused():
    schema = json.loads((REPO / "charts" / "quantramp" / "values.schema.json").read_text())
    values = {"logLevel": "info"}
    bad = copy.deepcopy(schema)
    del bad["properties"]["logLevel"]["description"]
    with pytest.raises(gendocs.SourceError, match="add a description to logLevel"):
        gendocs.values_md(bad, values)
    with pytest.raises(gendocs.SourceError, match="values.yaml: noSuchValue is not in values.schema.json"):
        gendocs.values_md(schema, {"noSuchValue": 1})


def test_readme_links_only_to_files_in_the_repository():
    readme = (REPO / "README.md").read_text()
    targets = [t.split("#", 1)[0] for t in re.findall(r"\]\(([^)\s]+)\)", readme)]
    local = [t for t in targets if t and not re.match(r"[a-z]+:", t)]
    assert {"docs/values.md", "docs/tradingstrategy.md", "docs/plugin.md", "docs/metrics.md", "docs/runbook.md"} <= set(local)
    outside = [t for t in local if not (REPO / t).resolve().is_relative_to(REPO)]
    assert not outside and not [t for t in targets if re.match(r"https?:", t)], outside
