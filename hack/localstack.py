#!/usr/bin/env python3
"""Local dev stack: a real Kubernetes control plane plus the services quantramp uses.

    python hack/localstack.py up     [--dir DIR]   # start (or reuse) everything, write DIR/env
    python hack/localstack.py status [--dir DIR]   # table; exit 0 only if every part is healthy
    python hack/localstack.py down   [--dir DIR] [--purge]

DIR defaults to ``<repo>/.local/stack``. Everything binds to 127.0.0.1:

=========================  ==========================================
etcd                       http://127.0.0.1:2379 (peer 2380)
kube-apiserver             https://127.0.0.1:6443 (RBAC, token auth)
kube-controller-manager    https://127.0.0.1:10257 (all controllers, GC)
podrunner                  Node ``quantramp-dev`` (hack/podrunner.py)
redis                      redis://127.0.0.1:6379/0 (AOF on)
prometheus                 http://127.0.0.1:9090 (1 s scrape/eval)
mlflow                     http://127.0.0.1:5000 (sqlite, 1 worker)
=========================  ==========================================

Each part runs in its own session with ``DIR/run/<part>.pid`` and
``DIR/logs/<part>.log``. ``up`` is idempotent: a part whose recorded process
is alive and healthy is reused. A part that does not become healthy in time
makes ``up`` fail loudly with the tail of its log (the other parts are left
running for inspection; ``down`` stops them).

Importable API (tests put hack/ on sys.path)::

    import localstack
    stack = localstack.Stack("/tmp/qr-stack")   # or Stack() for the default dir
    stack.up()          # -> list[PartResult]; raises StackError on failure
    stack.env()         # -> dict of KUBECONFIG, MLFLOW_TRACKING_URI, REDIS_URL, ...
    stack.status()      # -> list[PartStatus]
    stack.down()        # -> list[PartStop]

This module uses only the standard library (it runs under any Python 3.11);
the pod runner it starts needs the repo venv (``kubernetes`` client).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import json
import os
import secrets
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

HACK = Path(__file__).resolve().parent
if str(HACK) not in sys.path:
    sys.path.insert(0, str(HACK))

import procs  # noqa: E402  (sibling module in hack/)

REPO = HACK.parent
DEFAULT_DIR = REPO / ".local" / "stack"
# Prometheus alert rules; QR_ALERT_RULES overrides (tests); omitted from the config while missing
ALERT_RULES = Path(os.environ.get("QR_ALERT_RULES") or REPO / "config" / "prometheus" / "alerts.yaml")
BUILD_SCRIPT = HACK / "build-control-plane.sh"

HOST = "127.0.0.1"
ETCD_PORT, ETCD_PEER_PORT = 2379, 2380
APISERVER_PORT = 6443
KCM_PORT = 10257
REDIS_PORT = 6379
PROMETHEUS_PORT = 9090
MLFLOW_PORT = 5000
#: fakes of the services no real server can run here (their real client libraries talk to them)
SLACK_PORT, JIRA_PORT = 5101, 5102
SLACK_TOKEN, SLACK_CHANNEL = "xoxb-quantramp-fake", "trading-alerts"
JIRA_TOKEN, JIRA_PROJECT = "jira-quantramp-fake-token", "QR"
NODE_NAME = "quantramp-dev"
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")
NODE_HEARTBEAT_MAX_AGE_S = 45.0
LOG_TAIL_LINES = 40
POLL_S = 0.2

# Popen objects of parts started by this interpreter: kept so they are reaped (no
# zombies, no ResourceWarning) when the stack is used as a library, e.g. from pytest.
_CHILDREN: dict[int, subprocess.Popen] = {}


def _reap() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            del _CHILDREN[pid]


@dataclass(frozen=True)
class Part:
    """One process of the stack.

    ``port``: TCP port it owns on 127.0.0.1 (checked free before a start).
    ``deps``: parts that must be healthy before it starts.
    ``timeout_s``: seconds from launch to healthy before ``up`` gives up.
    ``stop_grace_s``: seconds between SIGTERM and SIGKILL in ``down``.
    """

    name: str
    port: int | None
    endpoint: str
    deps: tuple[str, ...] = ()
    timeout_s: float = 60.0
    stop_grace_s: float = 10.0


# Start order when dependencies allow; ``down`` stops in reverse order.
PARTS: tuple[Part, ...] = (
    Part("etcd", ETCD_PORT, f"http://{HOST}:{ETCD_PORT}", timeout_s=30),
    Part("redis", REDIS_PORT, f"redis://{HOST}:{REDIS_PORT}/0", timeout_s=15),
    Part("prometheus", PROMETHEUS_PORT, f"http://{HOST}:{PROMETHEUS_PORT}", timeout_s=60),
    Part("mlflow", MLFLOW_PORT, f"http://{HOST}:{MLFLOW_PORT}", timeout_s=180),
    Part("fake-slack", SLACK_PORT, f"http://{HOST}:{SLACK_PORT}/api/", timeout_s=30),
    Part("fake-jira", JIRA_PORT, f"http://{HOST}:{JIRA_PORT}", timeout_s=30),
    Part("kube-apiserver", APISERVER_PORT, f"https://{HOST}:{APISERVER_PORT}", ("etcd",), timeout_s=90),
    Part("kube-controller-manager", KCM_PORT, f"https://{HOST}:{KCM_PORT}", ("kube-apiserver",), timeout_s=60),
    # the runner stops pod processes on SIGTERM (up to 10 s each, in parallel)
    Part("podrunner", None, f"node/{NODE_NAME}", ("kube-apiserver",), timeout_s=60, stop_grace_s=30),
)
PARTS_BY_NAME = {p.name: p for p in PARTS}


@dataclass
class PartResult:
    """Outcome of ``up`` for one part: action is "started" or "reused"; seconds from launch to healthy."""

    name: str
    action: str
    pid: int
    seconds: float
    endpoint: str


@dataclass
class PartStatus:
    """State of one part: healthy, or why not (``detail``); pid None when not running."""

    name: str
    pid: int | None
    healthy: bool
    detail: str
    endpoint: str


@dataclass
class PartStop:
    """Outcome of ``down`` for one part: result is "stopped", "killed" or "not running"."""

    name: str
    pid: int | None
    result: str


class StackError(RuntimeError):
    """A part failed to start or become healthy; ``log_tail`` holds the end of its log."""

    def __init__(self, part: str, message: str, log_tail: str = ""):
        super().__init__(f"{part}: {message}")
        self.part = part
        self.log_tail = log_tail


# --------------------------------------------------------------------------- binaries


def find_bin_dir(build: bool = True, log: Callable[[str], None] = print) -> Path:
    """Directory holding etcd, kube-apiserver, kube-controller-manager, kubectl (and helm).

    Order: ``$QR_BIN``; the cache ``$QR_CACHE/k8s-$QR_K8S_VERSION/bin`` (default
    ``~/.cache/quantramp/k8s-v1.34.4/bin``) if complete; else, if ``build``,
    run hack/build-control-plane.sh (tens of minutes the first time) under a
    lock so two callers never build at once, and use the bin dir it prints.
    """
    if os.environ.get("QR_BIN"):
        bin_dir = Path(os.environ["QR_BIN"])
        if _has_binaries(bin_dir):
            return bin_dir
        raise StackError("binaries", f"QR_BIN={bin_dir} lacks one of {', '.join(REQUIRED_BINARIES)}")
    cache = Path(os.environ.get("QR_CACHE", Path.home() / ".cache" / "quantramp"))
    version = os.environ.get("QR_K8S_VERSION", "v1.34.4")
    bin_dir = cache / f"k8s-{version}" / "bin"
    if _has_binaries(bin_dir):
        return bin_dir
    if not build:
        raise StackError("binaries", f"{bin_dir} is incomplete; run {BUILD_SCRIPT}")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "build.lock", "w") as lock:
        log(f"building the control plane into {bin_dir} (first time: 20-40 min on 2 cores) ...")
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits for a concurrent build by another caller
        if not _has_binaries(bin_dir):
            out = subprocess.run(["bash", str(BUILD_SCRIPT)], stdout=subprocess.PIPE, text=True)
            if out.returncode != 0:
                raise StackError("binaries", f"{BUILD_SCRIPT} failed with exit code {out.returncode}")
            lines = out.stdout.strip().splitlines()
            bin_dir = Path(lines[-1]) if lines else bin_dir
    if not _has_binaries(bin_dir):
        raise StackError("binaries", f"{bin_dir} still lacks binaries after the build")
    return bin_dir


def _has_binaries(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / b, os.X_OK) for b in REQUIRED_BINARIES)


def _venv_bin() -> Path:
    """Directory of the Python that has the repo's dependencies (the venv's bin)."""
    here = Path(sys.executable).parent  # not resolved: a venv's python is a symlink
    if (here / "mlflow").exists():
        return here
    return REPO / ".venv" / "bin"


# --------------------------------------------------------------------------- small helpers


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write_if_changed(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` to ``path`` atomically unless it already holds it; True if written."""
    with contextlib.suppress(FileNotFoundError):
        if path.read_text() == text:
            return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


def _port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def _http_get(url: str, *, headers: dict | None = None, context: ssl.SSLContext | None = None,
              timeout_s: float = 2.0, method: str = "GET") -> tuple[int, bytes]:
    """(status, body) of a request; raises OSError on connection problems."""
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=context) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            return "\n".join(f.read().decode(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return f"(no log at {path})"


def _openssl(*args: str) -> None:
    out = subprocess.run(["openssl", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if out.returncode != 0:
        raise StackError("pki", f"openssl {' '.join(args[:2])} failed:\n{out.stdout}")


# --------------------------------------------------------------------------- the stack


class Stack:
    """The local stack rooted at ``root`` (see the module docstring for the layout)."""

    def __init__(self, root: str | os.PathLike | None = None, log: Callable[[str], None] | None = print):
        self.root = Path(root or os.environ.get("QR_STACK_DIR") or DEFAULT_DIR).resolve()
        self.log = log or (lambda _msg: None)
        self.pki = self.root / "pki"
        self.run_dir = self.root / "run"
        self.logs = self.root / "logs"
        self.kubeconfig = self.root / "kubeconfig"
        self.env_file = self.root / "env"
        self.prom_dir = self.root / "prometheus"
        self.targets_dir = self.prom_dir / "targets"
        self.pods_dir = self.root / "pods"
        self._bin_dir: Path | None = None

    # ------------------------------------------------------------------ public API

    def up(self) -> list[PartResult]:
        """Start every part that is not already running and healthy; wait until all are healthy.

        Returns one PartResult per part (in the order they became healthy).
        Raises StackError (with the part's log tail) on the first failure.
        """
        t_begin = time.monotonic()
        self._prepare()
        self._write_prometheus_config()
        done: dict[str, PartResult] = {}
        waiting: dict[str, tuple[int, float, str]] = {}  # name -> (pid, t_launch, action)

        for part in PARTS:  # adopt what is already running
            pid = procs.read_pidfile(self._pidfile(part))
            if pid is None:
                continue
            if self._health(part) is None:
                done[part.name] = PartResult(part.name, "reused", pid, 0.0, part.endpoint)
                self._report(done[part.name])
            else:  # alive but not (yet) healthy: give it the part's timeout
                waiting[part.name] = (pid, time.monotonic(), "reused")

        if "prometheus" in done:  # picks up edits of the config and of the alert rules file
            self._reload_prometheus()

        while len(done) < len(PARTS):
            for part in PARTS:
                if part.name in done or part.name in waiting:
                    continue
                if all(d in done for d in part.deps):
                    waiting[part.name] = (self._launch(part), time.monotonic(), "started")
            for name, (pid, t0, action) in list(waiting.items()):
                part = PARTS_BY_NAME[name]
                reason = self._health(part)
                if reason is None:
                    done[name] = PartResult(name, action, pid, time.monotonic() - t0, part.endpoint)
                    del waiting[name]
                    self._report(done[name])
                elif not procs.is_running(pid):
                    self._fail(part, f"exited before becoming healthy (last check: {reason})")
                elif time.monotonic() - t0 > part.timeout_s:
                    self._fail(part, f"not healthy after {part.timeout_s:.0f} s (last check: {reason})")
            if len(done) < len(PARTS):
                time.sleep(POLL_S)

        self._write_env_file()
        self.log(f"stack up in {time.monotonic() - t_begin:.1f} s; source {self.env_file}")
        return list(done.values())

    def status(self) -> list[PartStatus]:
        """Health of every part (no side effects)."""
        if self.kubeconfig.exists():
            with contextlib.suppress(StackError):
                self._bin_dir = find_bin_dir(build=False)
        out = []
        for part in PARTS:
            pid = procs.read_pidfile(self._pidfile(part))
            if pid is None:
                out.append(PartStatus(part.name, None, False, "not running", part.endpoint))
                continue
            reason = self._health(part)
            out.append(PartStatus(part.name, pid, reason is None, reason or "healthy", part.endpoint))
        return out

    def down(self, purge: bool = False) -> list[PartStop]:
        """Stop every part (reverse start order) and any pod process left behind.

        ``purge`` also deletes the stack directory (etcd, Redis, MLflow data).
        """
        stops = []
        for part in reversed(PARTS):
            pidfile = self._pidfile(part)
            pid = procs.read_pidfile(pidfile)
            if pid is None:
                stops.append(PartStop(part.name, None, "not running"))
            else:
                t0 = time.monotonic()
                graceful = procs.stop_group(pid, part.stop_grace_s, reap=_reap)
                stops.append(PartStop(part.name, pid, "stopped" if graceful else "killed"))
                self.log(f"  {part.name:<24} {stops[-1].result:<8} pid {pid:<7} {time.monotonic() - t0:5.1f} s")
            pidfile.unlink(missing_ok=True)
        # pod processes whose runner died without cleaning up (pid files from podrunner)
        for pidfile in sorted(self.pods_dir.glob("*.pid")) if self.pods_dir.exists() else []:
            pid = procs.read_pidfile(pidfile)
            if pid is not None:
                procs.stop_group(pid, 5.0)
                stops.append(PartStop(f"pod process {pidfile.stem}", pid, "stopped"))
                self.log(f"  {'pod ' + pidfile.stem:<24} stopped  pid {pid}")
            pidfile.unlink(missing_ok=True)
        (self.run_dir / "podrunner.ready").unlink(missing_ok=True)
        if self.targets_dir.exists():
            for target in self.targets_dir.glob("*.json"):
                target.unlink()
        if purge and self.root.exists():
            shutil.rmtree(self.root)
            self.log(f"  removed {self.root}")
        return stops

    def env(self) -> dict[str, str]:
        """Environment for clients of the stack (what DIR/env exports, PATH included)."""
        bin_dir = str(self._bin_dir or find_bin_dir(build=False))
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "MLFLOW_TRACKING_URI": f"http://{HOST}:{MLFLOW_PORT}",
            "REDIS_URL": f"redis://{HOST}:{REDIS_PORT}/0",
            "PROMETHEUS_URL": f"http://{HOST}:{PROMETHEUS_PORT}",
            # the operator's Slack and JIRA (the fakes; a real install takes them from Secrets)
            "QR_SLACK_BOT_TOKEN": SLACK_TOKEN,
            "QR_SLACK_CHANNEL": SLACK_CHANNEL,
            "QR_SLACK_BASE_URL": f"http://{HOST}:{SLACK_PORT}/api/",
            "QR_JIRA_URL": f"http://{HOST}:{JIRA_PORT}",
            "QR_JIRA_TOKEN": JIRA_TOKEN,
            "QR_JIRA_PROJECT": JIRA_PROJECT,
            "QR_BIN": bin_dir,
            "QR_STACK_DIR": str(self.root),
            "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}",
        }

    @property
    def token(self) -> str:
        """Bearer token of the ``admin`` user (group system:masters)."""
        return (self.pki / "admin.token").read_text().strip()

    # ------------------------------------------------------------------ preparation

    def _prepare(self) -> None:
        for d in (self.root, self.pki, self.run_dir, self.logs, self.root / "etcd", self.root / "redis",
                  self.prom_dir / "data", self.prom_dir / "rules", self.targets_dir, self.root / "mlflow" / "artifacts",
                  self.root / "kcm", self.root / "apiserver", self.pods_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._bin_dir = find_bin_dir(log=self.log)
        self._ensure_pki()
        self._write_kubeconfig()

    def _ensure_pki(self) -> None:
        """CA, apiserver serving cert, service-account key, admin token (created once, then reused)."""
        p = self.pki
        if not (p / "ca.crt").exists():
            _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650",
                     "-keyout", str(p / "ca.key"), "-out", str(p / "ca.crt"),
                     "-subj", "/CN=quantramp-dev-ca",
                     "-addext", "basicConstraints=critical,CA:TRUE",
                     "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature")
            (p / "apiserver.crt").unlink(missing_ok=True)
        if not (p / "apiserver.crt").exists():
            sans = ",".join([f"IP:{HOST}", f"IP:{SERVICE_IP}", "DNS:localhost", "DNS:kubernetes",
                             "DNS:kubernetes.default", "DNS:kubernetes.default.svc",
                             "DNS:kubernetes.default.svc.cluster.local"])
            ext = p / "apiserver.ext"
            ext.write_text(f"subjectAltName={sans}\nextendedKeyUsage=serverAuth\n"
                           "keyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=CA:FALSE\n")
            _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(p / "apiserver.key"),
                     "-out", str(p / "apiserver.csr"), "-subj", "/CN=kube-apiserver")
            _openssl("x509", "-req", "-in", str(p / "apiserver.csr"), "-CA", str(p / "ca.crt"),
                     "-CAkey", str(p / "ca.key"), "-CAcreateserial", "-days", "3650",
                     "-extfile", str(ext), "-out", str(p / "apiserver.crt"))
        if not (p / "sa.key").exists():
            _openssl("genrsa", "-out", str(p / "sa.key"), "2048")
            _openssl("rsa", "-in", str(p / "sa.key"), "-pubout", "-out", str(p / "sa.pub"))
        if not (p / "admin.token").exists():
            token = secrets.token_hex(24)
            _write_if_changed(p / "admin.token", token + "\n", 0o600)
            # token,user,uid,"group1,group2"
            _write_if_changed(p / "tokens.csv", f'{token},admin,admin,"system:masters"\n', 0o600)
        for key in p.glob("*.key"):
            key.chmod(0o600)

    def _write_kubeconfig(self) -> None:
        ca = base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()
        text = f"""apiVersion: v1
kind: Config
clusters:
- name: quantramp-dev
  cluster:
    server: https://{HOST}:{APISERVER_PORT}
    certificate-authority-data: {ca}
users:
- name: admin
  user:
    token: {self.token}
contexts:
- name: quantramp-dev
  context:
    cluster: quantramp-dev
    user: admin
    namespace: default
current-context: quantramp-dev
"""
        _write_if_changed(self.kubeconfig, text, 0o600)

    def _write_prometheus_config(self) -> bool:
        """Write DIR/prometheus/prometheus.yml; True if its content changed."""
        # the shipped rules, and DIR/prometheus/rules/*.yaml for local additions (tests drop rules there, then reload)
        rules = "rule_files:\n" + (f"  - {json.dumps(str(ALERT_RULES))}\n" if ALERT_RULES.exists() else "") + \
            f"  - {json.dumps(str(self.prom_dir / 'rules' / '*.yaml'))}\n"
        text = f"""# generated by hack/localstack.py -- edits are overwritten
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
{rules}scrape_configs:
  # pods annotated prometheus.io/scrape: "true"; targets written by hack/podrunner.py
  - job_name: kubernetes-pods
    honor_labels: true
    file_sd_configs:
      - files:
          - {json.dumps(str(self.targets_dir / "*.json"))}
        refresh_interval: 1s
"""
        return _write_if_changed(self.prom_dir / "prometheus.yml", text)

    def _reload_prometheus(self) -> None:
        status, body = _http_get(f"http://{HOST}:{PROMETHEUS_PORT}/-/reload", method="POST", timeout_s=10)
        if status != 200:
            raise StackError("prometheus", f"config reload failed ({status}): {body.decode(errors='replace')}",
                             _tail(self._logfile(PARTS_BY_NAME["prometheus"])))
        self.log(f"  {'prometheus':<24} reloaded config and rules ({ALERT_RULES.name if ALERT_RULES.exists() else 'no rules file'})")

    def _write_env_file(self) -> None:
        env = self.env()
        lines = ["# generated by hack/localstack.py up: source this file"]
        for key, value in env.items():
            if key == "PATH":
                lines.append(f'export PATH={shlex.quote(str(self._bin_dir))}:"$PATH"')
            else:
                lines.append(f"export {key}={shlex.quote(value)}")
        _write_if_changed(self.env_file, "\n".join(lines) + "\n")

    # ------------------------------------------------------------------ processes

    def _pidfile(self, part: Part) -> Path:
        return self.run_dir / f"{part.name}.pid"

    def _logfile(self, part: Part) -> Path:
        return self.logs / f"{part.name}.log"

    def _argv(self, part: Part) -> list[str]:
        b, p, r = self._bin_dir, self.pki, self.root
        if part.name == "etcd":
            peer = f"http://{HOST}:{ETCD_PEER_PORT}"
            client = f"http://{HOST}:{ETCD_PORT}"
            return [str(b / "etcd"), "--name=quantramp-dev", f"--data-dir={r / 'etcd'}",
                    f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                    f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                    f"--initial-cluster=quantramp-dev={peer}", "--log-level=warn",
                    # dev only: a power cut may lose the last writes; process restarts lose nothing
                    "--unsafe-no-fsync"]
        if part.name == "kube-apiserver":
            return [str(b / "kube-apiserver"),
                    f"--etcd-servers=http://{HOST}:{ETCD_PORT}",
                    f"--bind-address={HOST}", f"--advertise-address={HOST}", f"--secure-port={APISERVER_PORT}",
                    f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
                    f"--client-ca-file={p / 'ca.crt'}", f"--cert-dir={r / 'apiserver'}",
                    f"--token-auth-file={p / 'tokens.csv'}", "--authorization-mode=RBAC",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={p / 'sa.pub'}",
                    f"--service-account-signing-key-file={p / 'sa.key'}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    # a loopback address may not be a Service endpoint: do not reconcile `kubernetes`
                    "--endpoint-reconciler-type=none",
                    "--allow-privileged=true", "--profiling=false"]
        if part.name == "kube-controller-manager":
            kc = str(self.kubeconfig)
            return [str(b / "kube-controller-manager"),
                    f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}", f"--authorization-kubeconfig={kc}",
                    # no front-proxy in this cluster: do not look up requestheader CAs (log noise)
                    "--authentication-skip-lookup=true", f"--client-ca-file={p / 'ca.crt'}",
                    "--leader-elect=false", "--controllers=*",
                    f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={p / 'ca.crt'}",
                    f"--cluster-signing-cert-file={p / 'ca.crt'}", f"--cluster-signing-key-file={p / 'ca.key'}",
                    f"--bind-address={HOST}", f"--secure-port={KCM_PORT}", f"--cert-dir={r / 'kcm'}",
                    "--profiling=false"]
        if part.name == "podrunner":
            return [str(_venv_bin() / "python"), str(HACK / "podrunner.py"),
                    f"--kubeconfig={self.kubeconfig}", f"--dir={r}", f"--node-name={NODE_NAME}",
                    f"--ready-file={self.run_dir / 'podrunner.ready'}"]
        if part.name == "redis":
            return ["redis-server", "--bind", HOST, "--port", str(REDIS_PORT), "--dir", str(r / "redis"),
                    "--appendonly", "yes", "--daemonize", "no", "--protected-mode", "yes"]
        if part.name == "prometheus":
            return ["prometheus", f"--config.file={self.prom_dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.prom_dir / 'data'}",
                    f"--web.listen-address={HOST}:{PROMETHEUS_PORT}",
                    "--web.enable-lifecycle", "--web.enable-admin-api"]
        if part.name == "mlflow":
            m = r / "mlflow"
            return [str(_venv_bin() / "mlflow"), "server",
                    "--backend-store-uri", f"sqlite:///{m / 'mlflow.db'}",
                    "--artifacts-destination", str(m / "artifacts"),
                    "--host", HOST, "--port", str(MLFLOW_PORT), "--workers", "1",
                    "--allowed-hosts", f"{HOST}:{MLFLOW_PORT},localhost:{MLFLOW_PORT}"]
        if part.name == "fake-slack":
            return [str(_venv_bin() / "python"), str(HACK / "fake_slack.py"), "--host", HOST, "--port", str(SLACK_PORT),
                    "--token", SLACK_TOKEN, "--channel", SLACK_CHANNEL]
        if part.name == "fake-jira":
            return [str(_venv_bin() / "python"), str(HACK / "fake_jira.py"), "--host", HOST, "--port", str(JIRA_PORT),
                    "--token", JIRA_TOKEN, "--project", JIRA_PROJECT]
        raise KeyError(part.name)

    def _part_env(self, part: Part) -> dict[str, str]:
        env = dict(os.environ)
        if part.name == "podrunner":
            # pods run with the runner's PATH: venv console scripts first, then the k8s binaries
            env["PATH"] = f"{_venv_bin()}:{self._bin_dir}:{env.get('PATH', '/usr/bin:/bin')}"
            env["KUBECONFIG"] = str(self.kubeconfig)
            env["PYTHONUNBUFFERED"] = "1"
        if part.name == "mlflow":
            # the GenAI job runner (7 huey consumer processes) is not used by quantramp: 2 cores are precious
            env.setdefault("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
        return env

    def _launch(self, part: Part) -> int:
        if part.port is not None and _port_in_use(part.port):
            raise StackError(part.name, f"port {HOST}:{part.port} is taken by a process this stack "
                                        f"({self.root}) did not start; stop it first")
        argv = self._argv(part)
        logfile = self._logfile(part)
        with open(logfile, "ab") as log:
            log.write(f"\n=== {_now()} localstack starts: {shlex.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                    cwd=self.root, env=self._part_env(part), start_new_session=True)
        procs.write_pidfile(self._pidfile(part), proc.pid)
        _CHILDREN[proc.pid] = proc
        return proc.pid

    def _fail(self, part: Part, message: str):
        tail = _tail(self._logfile(part))
        raise StackError(part.name, f"{message}; log {self._logfile(part)}", tail)

    def _report(self, r: PartResult) -> None:
        self.log(f"  {r.name:<24} {r.action:<8} pid {r.pid:<7} {r.seconds:5.1f} s  {r.endpoint}")

    # ------------------------------------------------------------------ health checks

    def _health(self, part: Part) -> str | None:
        """None if ``part`` answers its health check, else a short reason."""
        try:
            return getattr(self, "_health_" + part.name.replace("-", "_"))()
        except (OSError, ValueError, ssl.SSLError) as e:
            return f"{type(e).__name__}: {e}"

    def _health_etcd(self) -> str | None:
        status, body = _http_get(f"http://{HOST}:{ETCD_PORT}/health")
        ok = status == 200 and json.loads(body).get("health") == "true"
        return None if ok else f"/health {status} {body[:200]!r}"

    def _api_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.pki / "ca.crt"))

    def _api_get(self, path: str) -> tuple[int, bytes]:
        return _http_get(f"https://{HOST}:{APISERVER_PORT}{path}", context=self._api_context(),
                         headers={"Authorization": f"Bearer {self.token}"})

    def _health_kube_apiserver(self) -> str | None:
        status, body = self._api_get("/readyz")
        return None if status == 200 else f"/readyz {status} {body[-300:]!r}"

    def _health_kube_controller_manager(self) -> str | None:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # serves a self-signed cert from DIR/kcm
        status, body = _http_get(f"https://{HOST}:{KCM_PORT}/healthz", context=ctx)
        return None if status == 200 else f"/healthz {status} {body[-300:]!r}"

    def _health_podrunner(self) -> str | None:
        try:
            ready_pid = int((self.run_dir / "podrunner.ready").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return "node not registered yet"
        if ready_pid != procs.read_pidfile(self._pidfile(PARTS_BY_NAME["podrunner"])):
            return "ready file is from another runner process"
        status, body = self._api_get(f"/api/v1/nodes/{NODE_NAME}")
        if status != 200:
            return f"node/{NODE_NAME}: {status}"
        node = json.loads(body)
        ready = next((c for c in node.get("status", {}).get("conditions", []) if c["type"] == "Ready"), None)
        if not ready or ready.get("status") != "True":
            return f"node/{NODE_NAME} not Ready"
        beat = datetime.fromisoformat(ready["lastHeartbeatTime"].replace("Z", "+00:00"))
        age = (datetime.now(timezone.utc) - beat).total_seconds()
        return None if age < NODE_HEARTBEAT_MAX_AGE_S else f"node heartbeat {age:.0f} s old"

    def _health_redis(self) -> str | None:
        with socket.create_connection((HOST, REDIS_PORT), timeout=2) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
        return None if reply.startswith(b"+PONG") else f"PING -> {reply!r}"

    def _health_prometheus(self) -> str | None:
        status, body = _http_get(f"http://{HOST}:{PROMETHEUS_PORT}/-/ready")
        return None if status == 200 else f"/-/ready {status} {body[:200]!r}"

    def _health_fake_slack(self) -> str | None:
        status, body = _http_get(f"http://{HOST}:{SLACK_PORT}/_messages")
        return None if status == 200 else f"/_messages {status} {body[:200]!r}"

    def _health_fake_jira(self) -> str | None:
        status, body = _http_get(f"http://{HOST}:{JIRA_PORT}/_tickets")
        return None if status == 200 else f"/_tickets {status} {body[:200]!r}"

    def _health_mlflow(self) -> str | None:
        status, body = _http_get(f"http://{HOST}:{MLFLOW_PORT}/health")
        return None if status == 200 else f"/health {status} {body[:200]!r}"


# --------------------------------------------------------------------------- module-level API


def up(root: str | os.PathLike | None = None, log: Callable[[str], None] | None = print) -> list[PartResult]:
    """``Stack(root).up()``."""
    return Stack(root, log).up()


def down(root: str | os.PathLike | None = None, purge: bool = False,
         log: Callable[[str], None] | None = print) -> list[PartStop]:
    """``Stack(root).down(purge)``."""
    return Stack(root, log).down(purge)


def status(root: str | os.PathLike | None = None) -> list[PartStatus]:
    """``Stack(root).status()``."""
    return Stack(root, None).status()


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="localstack.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=("up", "down", "status"))
    ap.add_argument("--dir", default=None, help=f"stack directory (default $QR_STACK_DIR or {DEFAULT_DIR})")
    ap.add_argument("--purge", action="store_true", help="down: also delete the stack directory")
    args = ap.parse_args(argv)
    stack = Stack(args.dir)
    try:
        if args.command == "up":
            print(f"stack dir {stack.root}")
            stack.up()
            return 0
        if args.command == "down":
            print(f"stopping stack in {stack.root}")
            stack.down(purge=args.purge)
            return 0
        rows = stack.status()
        print(f"{'PART':<24} {'PID':<8} {'HEALTH':<10} {'ENDPOINT':<28} DETAIL")
        for r in rows:
            print(f"{r.name:<24} {r.pid or '-':<8} {'ok' if r.healthy else 'FAIL':<10} {r.endpoint:<28} {r.detail}")
        return 0 if all(r.healthy for r in rows) else 1
    except StackError as e:
        print(f"\nERROR {e}", file=sys.stderr)
        if e.log_tail:
            print(f"---- last {LOG_TAIL_LINES} log lines of {e.part} ----\n{e.log_tail}\n----", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
