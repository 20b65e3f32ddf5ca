"""The model loader child (``python -m quantramp.trader.modelfetch``) must not import modules from
the trader's working directory: a folder ``operator/`` there (the source tree, as in an image
built with WORKDIR /app) shadowed the standard library's ``operator`` and the child crashed
before it could load anything."""

from __future__ import annotations

import socket

import pytest

from quantramp.trader import model as M


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def poisoned_cwd(tmp_path, monkeypatch):
    for name in ("operator", "numpy", "mlflow"):
        pkg = tmp_path / name
        pkg.mkdir()
        (pkg / "__init__.py").write_text(f"raise RuntimeError('shadowed: {name} imported from the cwd')\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_loader_child_ignores_modules_in_the_cwd(poisoned_cwd):
    tracking = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(M.ModelLoadError) as err:
        M.load_model("models:/m/1", tracking, timeout_s=120)
    # the child ran: it answered that the server is unreachable, it did not crash on an import
    assert "unreachable" in str(err.value), str(err.value)
    assert "shadowed" not in str(err.value)


def test_the_loader_command_runs_python_in_safe_path_mode():
    cmd = M.loader_command("models:/m/1", "http://x", "/tmp/out")
    assert cmd[1:4] == ["-P", "-m", "quantramp.trader.modelfetch"]
