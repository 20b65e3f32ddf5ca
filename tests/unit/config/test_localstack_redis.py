"""The local stack's Redis has a password (hack/localstack.py): made once per stack directory, kept out of
redis-server's command line and of the pods' Redis URL, and required by the stack's own health check
(run here against a real redis-server started with the stack's config)."""

from __future__ import annotations

import shutil
import socket
import stat
import subprocess
import time

import pytest


@pytest.fixture
def stack(localstack, tmp_path):
    s = localstack.Stack(tmp_path / "stack", log=None)
    (s.root / "redis").mkdir(parents=True)
    s._bin_dir = tmp_path / "bin"  # env() names it; no binary is run
    s._ensure_redis_config()
    return s


def test_the_password_is_made_once_private_and_only_in_the_sandbox_clients_url(stack, localstack):
    pw = stack.redis_password()
    assert len(pw) == 32
    for f in (stack.root / "redis" / "password", stack.redis_conf):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    assert stack.redis_conf.read_text() == f"requirepass {pw}\n"
    stack._ensure_redis_config()
    assert stack.redis_password() == pw  # up again: the same password (Redis and its AOF keep it)
    env = stack.env()
    assert env["REDIS_URL"] == f"redis://:{pw}@127.0.0.1:6379/0" and env["QR_REDIS_PASSWORD"] == pw
    assert pw not in env["QR_POD_REDIS_URL"]
    argv = stack._argv(localstack.PARTS_BY_NAME["redis"])
    assert str(stack.redis_conf) in argv and not [a for a in argv if pw in a]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_health_check_logs_in_and_says_when_redis_has_no_password(stack, localstack, monkeypatch, tmp_path):
    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server")
    port = _free_port()
    monkeypatch.setattr(localstack, "REDIS_PORT", port)

    def serve(*conf: str) -> subprocess.Popen:
        p = subprocess.Popen(["redis-server", *conf, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--dir", str(tmp_path)], stdout=subprocess.DEVNULL)
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                return p
            except OSError:
                time.sleep(0.05)
        p.kill()
        raise RuntimeError("redis-server did not start")

    for conf, expected in (((str(stack.redis_conf),), None), ((), "without the stack's password")):
        p = serve(*conf)
        try:
            reason = stack._health_redis()
            assert reason is None if expected is None else expected in reason, reason
        finally:
            p.terminate()
            p.wait(10)
