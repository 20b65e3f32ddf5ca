"""The local stack's PostgreSQL (hack/localstack.py): a password made once per stack directory (0600), never on
a command line nor in a DSN; a cluster made once (as ``nobody`` when root), started, checked by the stack's own
health check, and stopped by ``down`` with a client still connected (run here on 127.0.0.1 and a free port)."""

from __future__ import annotations

import glob
import socket
import stat
import tempfile
import time
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_database_is_made_once_served_checked_and_stopped(localstack, monkeypatch):
    if not glob.glob("/usr/lib/postgresql/*/bin/postgres"):
        pytest.skip("PostgreSQL is not installed")
    port = _free_port()
    monkeypatch.setattr(localstack, "PG_PORT", port)
    monkeypatch.setattr(localstack, "ANY", "127.0.0.1")  # not every address of this machine
    root = Path(tempfile.mkdtemp(prefix="qr-stack-pg-"))
    root.chmod(0o755)  # the server's user (nobody, when root) reaches its data dir
    s = localstack.Stack(root / "stack", log=None)
    s._bin_dir = root / "bin"  # env() names it; no binary from there is run
    part = localstack.Part("postgres", port, "postgres")
    monkeypatch.setattr(localstack, "PARTS", (part,))
    try:
        for d in (s.root, s.run_dir, s.logs, s.root / "postgres"):
            d.mkdir(parents=True, exist_ok=True)
        s._ensure_postgres()
        pw = s.pg_password()
        assert len(pw) == 32 and stat.S_IMODE((s.root / "postgres" / "password").stat().st_mode) == 0o600
        assert not (s.root / "postgres" / "initdb.pw").exists()
        s._ensure_postgres()
        assert s.pg_password() == pw  # up again: the same password, the same cluster
        env = s.env()
        assert env["QR_MARKET_DB_PASSWORD"] == pw
        assert env["QR_MARKET_DB_DSN"] == f"postgresql://quantramp@127.0.0.1:{port}/market"
        assert env["QR_POD_MARKET_DB_DSN"] == f"postgresql://quantramp@{localstack.NODE_IP}:{port}/market"
        assert not [a for a in s._argv(part) if pw in a]
        pid = s._launch(part)
        deadline = time.monotonic() + 30
        while (reason := s._health(part)) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert reason is None, reason
        psycopg = pytest.importorskip("psycopg")
        with psycopg.connect(env["QR_MARKET_DB_DSN"], password=pw):  # held open while the stack stops
            assert [(p.name, p.result) for p in s.down()] == [("postgres", "stopped")]
        assert not localstack.procs.group_members(pid)
        (s.root / "postgres" / "password").write_text("wrong\n")
        assert s._health(part) is not None
    finally:
        s.down()
        import shutil

        shutil.rmtree(root, ignore_errors=True)
