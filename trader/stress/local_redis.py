"""A private redis-server for the Redis scenarios (never port 6379).
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from .base import REDIS_SERVER, RESERVED_PORTS


# -- Redis -------------------------------------------------------------------------------------------------
def free_port() -> int:
    """A free TCP port on 127.0.0.1 outside :data:`RESERVED_PORTS`."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port

class LocalRedis:
    """A private redis-server (AOF, fsync always) on a free port in ``dir``; ``kill()`` is a crash."""

    def __init__(self, dir: Path, port: int | None = None, binary: str = REDIS_SERVER) -> None:
        self.dir = Path(dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.binary = binary
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        if self.proc is not None:
            return
        with open(self.dir / "redis.log", "ab") as logf:
            self.proc = subprocess.Popen(
                [self.binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.dir),
                 "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no",
                 "--protected-mode", "yes"],
                stdout=logf, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise RuntimeError(f"redis-server exited: {(self.dir / 'redis.log').read_text(errors='replace')[-500:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        self.stop(kill=True)
        raise RuntimeError(f"redis-server did not answer on port {self.port}")

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        (self.proc.kill if kill else self.proc.terminate)()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def kill(self) -> None:
        self.stop(kill=True)
