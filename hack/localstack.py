#!/usr/bin/env python3
"""Local stack: a real single-node Kubernetes cluster plus the services quantramp uses.

    hack/sandbox.sh -- python hack/localstack.py up     [--dir DIR]   # start (or reuse) everything
    python hack/localstack.py status [--dir DIR]   # table; exit 0 only if every part is healthy
    python hack/localstack.py down   [--dir DIR] [--purge]

Everything runs inside the private network, mount and PID namespaces of ``hack/sandbox.sh``
(``up`` refuses to start outside one): the node's address is the sandbox's pod bridge
10.244.0.1 (``NODE_IP``); servers that pods must reach listen on every address of that private
namespace, and clients in the sandbox use 127.0.0.1. DIR defaults to ``<repo>/.local/stack``.

=========================  ==========================================
etcd                       http://127.0.0.1:2379 (peer 2380)
kube-apiserver             https://127.0.0.1:6443 = https://10.244.0.1:6443 (Node,RBAC; tokens)
kube-controller-manager    https://127.0.0.1:10257 (all controllers, GC)
kube-scheduler             https://127.0.0.1:10259
containerd 1.6 (CRI)       unix://DIR/containerd/containerd.sock (CNI bridge qr0, 10.244.0.0/24)
kubelet                    Node ``quantramp-node``, InternalIP 10.244.0.1
kube-proxy                 iptables mode, inside the sandbox only
coredns                    10.244.0.1:53, zone cluster.local (the kubelet's clusterDNS)
redis                      redis://10.244.0.1:6379/0 (AOF on; password DIR/redis/password, made once)
postgres                   postgresql://quantramp@10.244.0.1:5432/market (password DIR/postgres/password, made once)
prometheus 3               http://10.244.0.1:9090 (1 s scrape/eval; pods found by kubernetes_sd)
mlflow                     http://10.244.0.1:5000 (sqlite, 1 worker)
fake Slack / fake JIRA     http://10.244.0.1:5101/api/, http://10.244.0.1:5102
=========================  ==========================================

Images: ``up`` imports the project image and the pause image built by hack/build-image.sh into
containerd (``ctr -n k8s.io images import``), unless containerd already has that build.

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

This module uses only the standard library (it runs under any Python 3.11).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import fcntl
import glob
import grp
import hashlib
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
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
# Prometheus alert rules (the chart's file); QR_ALERT_RULES overrides (tests); omitted from the config while missing.
# Prometheus loads a copy in DIR/prometheus/alerts.yaml with RUNBOOK_PLACEHOLDER replaced by RUNBOOK_BASE.
ALERT_RULES = Path(os.environ.get("QR_ALERT_RULES") or REPO / "charts" / "quantramp" / "files" / "alerts.yaml")
#: every rule's runbook_url starts with this placeholder (the chart replaces it with a value)
RUNBOOK_PLACEHOLDER = "__RUNBOOK_BASE__"
#: the local stack's runbook links: docs/runbook.md of this checkout
RUNBOOK_BASE = REPO.as_uri()
BUILD_SCRIPT = HACK / "build-control-plane.sh"
IMAGE_SCRIPT = Path(os.environ.get("QR_IMAGE_SCRIPT") or HACK / "build-image.sh")

HOST = "127.0.0.1"  # where clients in the sandbox (tests, the demo, kubectl) reach the stack
#: the node's address: the pod bridge qr0 made by hack/sandbox.sh; pods reach the stack's servers here
NODE_IP = os.environ.get("QR_NODE_IP", "10.244.0.1")
POD_CIDR = "10.244.0.0/24"
ANY = "0.0.0.0"  # servers pods must reach listen on every address of the sandbox's private network namespace
ETCD_PORT, ETCD_PEER_PORT = 2379, 2380
APISERVER_PORT = 6443
KCM_PORT = 10257
REDIS_PORT = 6379
#: the market-data database (the demo's bars): role, database; its server runs as PG_RUN_AS when started by root
PG_PORT, PG_USER, PG_DB, PG_RUN_AS = 5432, "quantramp", "market", "nobody"
PROMETHEUS_PORT = 9090
MLFLOW_PORT = 5000
#: fakes of the services no real server can run here (their real client libraries talk to them)
SLACK_PORT, JIRA_PORT = 5101, 5102
SLACK_TOKEN, SLACK_CHANNEL = "xoxb-quantramp-fake", "trading-alerts"
JIRA_TOKEN, JIRA_PROJECT = "jira-quantramp-fake-token", "QR"
SCHEDULER_PORT, KUBELET_HEALTHZ_PORT, PROXY_HEALTHZ_PORT, COREDNS_HEALTH_PORT = 10259, 10248, 10256, 8181
NODE_NAME = "quantramp-node"
#: token users besides admin, kubelet and kube-proxy: {name: (user, group)}; each gets DIR/<name>.kubeconfig
#: (the admission-policy e2e tests: a developer, and a risk officer who may release a kill switch)
EXTRA_USERS = {"trader-dev": ("trader-dev", "quantramp:developers"), "risk-officer": ("risk-officer", "quantramp:risk-officers")}
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # first address of SERVICE_CIDR: the `kubernetes` Service
CLUSTER_DOMAIN = "cluster.local"
REQUIRED_BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy",
                     "kubectl", "helm", "coredns", "prometheus")
PAUSE_IMAGE = "docker.io/quantramp/pause:3.10"
CNI_BIN_DIR = "/usr/lib/cni"  # Debian's containernetworking-plugins
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
    Part("containerd", None, "unix://DIR/containerd/containerd.sock", timeout_s=30),
    Part("redis", REDIS_PORT, f"redis://{NODE_IP}:{REDIS_PORT}/0", timeout_s=15),
    Part("postgres", PG_PORT, f"postgresql://{PG_USER}@{NODE_IP}:{PG_PORT}/{PG_DB}", timeout_s=30),
    Part("mlflow", MLFLOW_PORT, f"http://{NODE_IP}:{MLFLOW_PORT}", timeout_s=180),
    Part("fake-slack", SLACK_PORT, f"http://{NODE_IP}:{SLACK_PORT}/api/", timeout_s=30),
    Part("fake-jira", JIRA_PORT, f"http://{NODE_IP}:{JIRA_PORT}", timeout_s=30),
    Part("kube-apiserver", APISERVER_PORT, f"https://{NODE_IP}:{APISERVER_PORT}", ("etcd",), timeout_s=90),
    Part("kube-controller-manager", KCM_PORT, f"https://{HOST}:{KCM_PORT}", ("kube-apiserver",), timeout_s=60),
    Part("kube-scheduler", SCHEDULER_PORT, f"https://{HOST}:{SCHEDULER_PORT}", ("kube-apiserver",), timeout_s=60),
    Part("kube-proxy", PROXY_HEALTHZ_PORT, f"http://{HOST}:{PROXY_HEALTHZ_PORT}/healthz", ("kube-apiserver",), timeout_s=60),
    Part("coredns", None, f"dns://{NODE_IP}:53", ("kube-apiserver",), timeout_s=60),
    Part("prometheus", PROMETHEUS_PORT, f"http://{NODE_IP}:{PROMETHEUS_PORT}", ("kube-apiserver",), timeout_s=60),
    # the kubelet stops its pods' containers on SIGTERM; whatever is left is killed through containerd
    Part("kubelet", KUBELET_HEALTHZ_PORT, f"node/{NODE_NAME}", ("kube-apiserver", "containerd"), timeout_s=90,
         stop_grace_s=20),
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
    """State of one part: healthy, or why not (``detail``); pid None when not running; ``rss_mb``:
    resident memory of its process group (MiB; the kubelet's excludes the pods' containers)."""

    name: str
    pid: int | None
    healthy: bool
    detail: str
    endpoint: str
    rss_mb: float = 0.0


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


def render_alert_rules(text: str, base: str = RUNBOOK_BASE) -> str:
    """The shipped alert rules as the local Prometheus loads them: every ``__RUNBOOK_BASE__``
    replaced by ``base`` (default: this checkout as a file:// URL), so runbook_url points at
    docs/runbook.md here."""
    return text.replace(RUNBOOK_PLACEHOLDER, base)


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


def _pg_bin() -> Path:
    """Debian's PostgreSQL server binaries (the newest installed major version; hack/install-system-packages.sh)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[4]))
    if not found:
        raise StackError("postgres", "PostgreSQL is not installed: run hack/install-system-packages.sh")
    return Path(found[-1]).parent


def _as_pg_user() -> dict:
    """Popen arguments that run a PostgreSQL binary as PG_RUN_AS when we are root (postgres refuses root)."""
    return {"user": PG_RUN_AS, "group": grp.getgrgid(pwd.getpwnam(PG_RUN_AS).pw_gid).gr_name,
            "extra_groups": []} if os.geteuid() == 0 else {}


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
    tmp.unlink(missing_ok=True)
    with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), "w") as f:  # never readable by others, even briefly
        f.write(text)
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
        self.targets_dir = self.prom_dir / "targets"  # file_sd targets of exporters run by tests in the sandbox
        self.ctrd = self.root / "containerd"
        self.ctrd_sock = self.ctrd / "containerd.sock"
        self.kubelet_dir = self.root / "kubelet"
        self.cni_dir = self.root / "cni"
        self._bin_dir: Path | None = None

    # ------------------------------------------------------------------ public API

    def up(self) -> list[PartResult]:
        """Start every part that is not already running and healthy; wait until all are healthy.

        Returns one PartResult per part (in the order they became healthy).
        Raises StackError (with the part's log tail) on the first failure.
        """
        t_begin = time.monotonic()
        if os.environ.get("QR_SANDBOX") != "1":
            raise StackError("sandbox", "the node must run inside hack/sandbox.sh (a private network, mount and PID "
                                        "namespace): run `hack/sandbox.sh -- python hack/localstack.py up`, or "
                                        "`make stack-shell`")
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

        self._import_images()
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
            out.append(PartStatus(part.name, pid, reason is None, reason or "healthy", part.endpoint,
                                  procs.group_rss_mb(pid)))
        return out

    def down(self, purge: bool = False) -> list[PartStop]:
        """Stop every part (reverse start order) and any pod process left behind.

        ``purge`` also deletes the stack directory (etcd, Redis, PostgreSQL, MLflow data).
        """
        stops = []
        for part in reversed(PARTS):
            pidfile = self._pidfile(part)
            pid = procs.read_pidfile(pidfile)
            if part.name == "containerd" and pid is not None:
                self._kill_pod_containers()  # the kubelet is already stopped: nothing restarts them
            if part.name == "postgres" and pid is not None:  # SIGTERM (smart) would wait for clients to leave
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGINT)  # fast shutdown: ends the sessions, checkpoints, exits
            if pid is None:
                stops.append(PartStop(part.name, None, "not running"))
            else:
                t0 = time.monotonic()
                graceful = procs.stop_group(pid, part.stop_grace_s, reap=_reap)
                stops.append(PartStop(part.name, pid, "stopped" if graceful else "killed"))
                self.log(f"  {part.name:<24} {stops[-1].result:<8} pid {pid:<7} {time.monotonic() - t0:5.1f} s")
            pidfile.unlink(missing_ok=True)
        self._stop_leftover_containers()
        self._unmount_under_root()
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
            # clients in the sandbox (tests, the plugin, an operator run in-process) log in as the default user
            "REDIS_URL": f"redis://:{self.redis_password()}@{HOST}:{REDIS_PORT}/0" if self.redis_password()
                         else f"redis://{HOST}:{REDIS_PORT}/0",
            "QR_REDIS_PASSWORD": self.redis_password(),
            # the market-data database (the demo's bars): password-free DSNs, the password apart (libpq's
            # PGPASSWORD; pods get it from Secret market-db, which the harness makes)
            "QR_MARKET_DB_DSN": f"postgresql://{PG_USER}@{HOST}:{PG_PORT}/{PG_DB}",
            "QR_MARKET_DB_PASSWORD": self.pg_password(),
            # the key each strategy's Redis password is derived from (quantramp.operator.redisacl), for an
            # operator run in-process and, through Secret quantramp-redis-acl, the chart's: derived from the
            # stack's Redis password, so it needs no file of its own and changes when the stack is purged
            "QR_REDIS_ACL_KEY": hashlib.sha256(b"quantramp-redis-acl-key:" + self.redis_password().encode()).hexdigest()
                                if self.redis_password() else "",
            "PROMETHEUS_URL": f"http://{HOST}:{PROMETHEUS_PORT}",
            # the same servers as pods (and an operator run as a pod) reach them: the node's address
            "QR_POD_MLFLOW_TRACKING_URI": f"http://{NODE_IP}:{MLFLOW_PORT}",
            # no credentials: the operator's come from a Secret (the harness makes quantramp-redis), each
            # strategy's pods log in as their own ACL user (quantramp.operator.redisacl)
            "QR_POD_REDIS_URL": f"redis://{NODE_IP}:{REDIS_PORT}/0",
            "QR_POD_MARKET_DB_DSN": f"postgresql://{PG_USER}@{NODE_IP}:{PG_PORT}/{PG_DB}",
            "QR_POD_PROMETHEUS_URL": f"http://{NODE_IP}:{PROMETHEUS_PORT}",
            "QR_POD_SLACK_BASE_URL": f"http://{NODE_IP}:{SLACK_PORT}/api/",
            "QR_POD_JIRA_URL": f"http://{NODE_IP}:{JIRA_PORT}",
            "QR_NODE_IP": NODE_IP,
            "CONTAINERD_ADDRESS": str(self.ctrd_sock),
            "CONTAINERD_NAMESPACE": "k8s.io",
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
        for d in (self.root, self.pki, self.run_dir, self.logs, self.root / "etcd", self.root / "redis", self.root / "postgres",
                  self.prom_dir / "data", self.prom_dir / "rules", self.targets_dir, self.root / "coredns", self.root / "mlflow" / "artifacts",
                  self.root / "kcm", self.root / "apiserver", self.root / "scheduler", self.ctrd / "root",
                  self.ctrd / "state", self.kubelet_dir / "root", self.kubelet_dir / "manifests",
                  self.kubelet_dir / "logs", self.cni_dir / "net.d", self.cni_dir / "ipam", self.cni_dir / "cache"):
            d.mkdir(parents=True, exist_ok=True)
        self._bin_dir = find_bin_dir(log=self.log)
        self._ensure_redis_config()
        self._ensure_postgres()
        self._ensure_pki()
        self._write_kubeconfig()
        self._write_node_configs()

    @property
    def redis_conf(self) -> Path:
        return self.root / "redis" / "redis.conf"

    def redis_password(self) -> str:
        """The stack's Redis password (the default user's, which the operator logs in as), "" before ``up``
        made it."""
        with contextlib.suppress(FileNotFoundError):
            return (self.root / "redis" / "password").read_text().strip()
        return ""

    def _ensure_redis_config(self) -> None:
        """A random Redis password, made once per stack directory (0600), and a redis.conf (0600) requiring it:
        kept out of redis-server's command line, so that no process listing shows it."""
        pw_file = self.root / "redis" / "password"
        if not pw_file.exists():
            _write_if_changed(pw_file, secrets.token_hex(16) + "\n", mode=0o600)
        _write_if_changed(self.redis_conf, f"requirepass {self.redis_password()}\n", mode=0o600)

    def pg_password(self) -> str:
        """The password of the stack's PostgreSQL role ``quantramp``, "" before ``up`` made it."""
        with contextlib.suppress(FileNotFoundError):
            return (self.root / "postgres" / "password").read_text().strip()
        return ""

    def _ensure_postgres(self) -> None:
        """A random password (DIR/postgres/password, 0600, made once) and, once, a cluster in DIR/postgres/data
        (initdb, scram-sha-256, superuser ``quantramp`` with that password, database ``market``), owned by
        PG_RUN_AS when we are root; the password reaches initdb in a file, never on a command line.
        pg_hba.conf admits the sandbox's clients and the pods, by password."""
        pg = self.root / "postgres"
        pw_file, data = pg / "password", pg / "data"
        if not pw_file.exists():
            _write_if_changed(pw_file, secrets.token_hex(16) + "\n", mode=0o600)
        as_user = _as_pg_user()
        chown = (lambda p: shutil.chown(p, as_user["user"], as_user["group"])) if as_user else (lambda p: None)
        if not (data / "PG_VERSION").exists():
            shutil.rmtree(data, ignore_errors=True)  # a half-made one (initdb interrupted)
            data.mkdir(mode=0o700)
            chown(data)
            init_pw = pg / "initdb.pw"
            _write_if_changed(init_pw, self.pg_password() + "\n", mode=0o600)
            chown(init_pw)
            b = _pg_bin()
            try:
                for argv, stdin in (([str(b / "initdb"), "-D", str(data), "-U", PG_USER, "-A", "scram-sha-256",
                                      f"--pwfile={init_pw}", "-E", "UTF8", "--no-sync"], None),
                                    ([str(b / "postgres"), "--single", "-D", str(data), "postgres"],
                                     f"CREATE DATABASE {PG_DB}\n")):
                    out = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True, cwd=pg, **as_user)
                    if out.returncode != 0 or "ERROR" in out.stdout:
                        raise StackError("postgres", f"{Path(argv[0]).name} failed in {data}", out.stdout[-3000:])
            finally:
                init_pw.unlink(missing_ok=True)
        hba = data / "pg_hba.conf"
        _write_if_changed(hba, "# generated by hack/localstack.py\n"
                               "host all all 127.0.0.1/32 scram-sha-256\n"
                               f"host all all {POD_CIDR} scram-sha-256\n", mode=0o600)
        chown(hba)

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
            sans = ",".join([f"IP:{HOST}", f"IP:{NODE_IP}", f"IP:{SERVICE_IP}", "DNS:localhost", "DNS:kubernetes",
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
        # token,user,uid,"group1,group2": the admin, the kubelet (Node authorizer), kube-proxy, and two people
        # for the admission-policy tests (no RBAC of their own: tests grant what they need); a token is made
        # once and kept, and a user added here later joins an existing stack's file (read at apiserver start)
        rows = {"admin": ("admin", "system:masters"), "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
                "kube-proxy": ("system:kube-proxy", "system:node-proxier"), **EXTRA_USERS}
        lines = []
        for name, (user, group) in rows.items():
            if not (p / f"{name}.token").exists():
                _write_if_changed(p / f"{name}.token", secrets.token_hex(24) + "\n", 0o600)
            token = (p / f"{name}.token").read_text().strip()
            lines.append(f'{token},{user},{user},"{group}"\n')
        _write_if_changed(p / "tokens.csv", "".join(lines), 0o600)
        for key in p.glob("*.key"):
            key.chmod(0o600)

    def _write_kubeconfig(self) -> None:
        _write_if_changed(self.kubeconfig, self._kubeconfig_text("admin"), 0o600)
        for user in ("kubelet", "kube-proxy", *EXTRA_USERS):
            _write_if_changed(self.root / f"{user}.kubeconfig", self._kubeconfig_text(user), 0o600)

    def _kubeconfig_text(self, user: str) -> str:
        ca = base64.b64encode((self.pki / "ca.crt").read_bytes()).decode()
        token = (self.pki / f"{user}.token").read_text().strip()
        return f"""apiVersion: v1
kind: Config
clusters:
- name: quantramp-dev
  cluster:
    server: https://{HOST}:{APISERVER_PORT}
    certificate-authority-data: {ca}
users:
- name: {user}
  user:
    token: {token}
contexts:
- name: quantramp-dev
  context:
    cluster: quantramp-dev
    user: {user}
    namespace: default
current-context: quantramp-dev
"""

    def _write_prometheus_config(self) -> bool:
        """Write DIR/prometheus/prometheus.yml; True if its content changed."""
        # the shipped rules, and DIR/prometheus/rules/*.yaml for local additions (tests drop rules there, then reload)
        # (the shipped ones as a copy with their runbook links resolved: the chart's file has a placeholder)
        shipped = self.prom_dir / "alerts.yaml"
        if ALERT_RULES.exists():
            _write_if_changed(shipped, render_alert_rules(ALERT_RULES.read_text()))
        else:
            shipped.unlink(missing_ok=True)
        rules = "rule_files:\n" + (f"  - {json.dumps(str(shipped))}\n" if ALERT_RULES.exists() else "") + \
            f"  - {json.dumps(str(self.prom_dir / 'rules' / '*.yaml'))}\n"
        text = f"""# generated by hack/localstack.py -- edits are overwritten
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
{rules}scrape_configs:
  # pods annotated prometheus.io/scrape: "true", found on the API server (kubernetes_sd, role pod);
  # the pod's labels become target labels (app.kubernetes.io/name -> app_kubernetes_io_name), plus
  # namespace and pod; the trader's own labels win (honor_labels)
  - job_name: kubernetes-pods
    honor_labels: true
    kubernetes_sd_configs:
      - role: pod
        api_server: https://{HOST}:{APISERVER_PORT}
        tls_config: {{ca_file: {json.dumps(str(self.pki / "ca.crt"))}}}
        authorization: {{credentials_file: {json.dumps(str(self.pki / "admin.token"))}}}
    relabel_configs:
      - {{source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], regex: "true", action: keep}}
      - {{source_labels: [__meta_kubernetes_pod_phase], regex: "Pending|Succeeded|Failed", action: drop}}
      - {{source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_path], regex: "(.+)", target_label: __metrics_path__}}
      - source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port]
        regex: '([^:]+)(?::\\d+)?;(\\d+)'
        replacement: "$1:$2"
        target_label: __address__
      - {{action: labelmap, regex: "__meta_kubernetes_pod_label_(.+)"}}
      - {{source_labels: [__meta_kubernetes_namespace], target_label: namespace}}
      - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}
  # exporters that tests run as plain processes in the sandbox write DIR/prometheus/targets/*.json
  - job_name: file-targets
    honor_labels: true
    file_sd_configs:
      - files:
          - {json.dumps(str(self.targets_dir / "*.json"))}
        refresh_interval: 1s
"""
        return _write_if_changed(self.prom_dir / "prometheus.yml", text)

    def _write_node_configs(self) -> None:
        """containerd's config, the CNI bridge network, the kubelet's config and CoreDNS's Corefile."""
        c, k, cni = self.ctrd, self.kubelet_dir, self.cni_dir
        _write_if_changed(c / "config.toml", f"""# generated by hack/localstack.py
version = 2
root = {json.dumps(str(c / "root"))}
state = {json.dumps(str(c / "state"))}
[grpc]
  address = {json.dumps(str(self.ctrd_sock))}
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = {json.dumps(str(c / "opt"))}
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    netns_mounts_under_state_dir = true
    # this machine's root lacks CAP_SYS_RESOURCE: no negative oom_score_adj (reviews/local-node-probe.md)
    restrict_oom_score_adj = true
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{CNI_BIN_DIR}"
      conf_dir = {json.dumps(str(cni / "net.d"))}
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
""")
        _write_if_changed(cni / "net.d" / "10-quantramp.conflist", json.dumps({
            "cniVersion": "0.4.0", "name": "quantramp",
            "plugins": [
                {"type": "bridge", "bridge": "qr0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
                 "ipam": {"type": "host-local", "dataDir": str(cni / "ipam"),
                          "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]], "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "portmap", "capabilities": {"portMappings": True}},
                {"type": "loopback"},
            ],
        }, indent=2) + "\n")
        cgroup_root = os.environ.get("QR_CGROUP_ROOT", "/quantramp")
        _write_if_changed(k / "config.yaml", f"""# generated by hack/localstack.py
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# the API server reaches the kubelet only inside the sandbox's private network namespace
authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}
authorization: {{mode: AlwaysAllow}}
address: {NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: {HOST}
healthzPort: {KUBELET_HEALTHZ_PORT}
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
failCgroupV1: false
failSwapOn: false
# no CAP_SYS_RESOURCE here (reviews/local-node-probe.md): pod OOM scores are clamped to 0
oomScoreAdj: 0
containerRuntimeEndpoint: unix://{self.ctrd_sock}
staticPodPath: {k / "manifests"}
podLogsDir: {k / "logs"}
volumePluginDir: {k / "volume-plugins"}
clusterDNS: [{NODE_IP}]
clusterDomain: {CLUSTER_DOMAIN}
resolvConf: {k / "resolv.conf"}
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {{memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}}
syncFrequency: 5s
nodeStatusUpdateFrequency: 5s
""")
        # pods resolve through CoreDNS only: the machine's resolver is unreachable from the sandbox
        _write_if_changed(k / "resolv.conf", "")
        _write_if_changed(self.root / "coredns" / "Corefile", f"""# generated by hack/localstack.py
.:53 {{
    bind {NODE_IP}
    errors
    health {HOST}:{COREDNS_HEALTH_PORT}
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        endpoint https://{HOST}:{APISERVER_PORT}
        kubeconfig {self.kubeconfig} quantramp-dev
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
""")

    # ------------------------------------------------------------------ images and node teardown

    def _import_images(self) -> None:
        """Build (or reuse) the project and pause images with hack/build-image.sh and import each image
        tarball into containerd's k8s.io namespace once (a marker per tarball, whose name carries the
        build's content hash)."""
        out = subprocess.run(["bash", str(IMAGE_SCRIPT)], stdout=subprocess.PIPE, text=True)
        if out.returncode != 0:
            raise StackError("images", f"{IMAGE_SCRIPT} failed with exit code {out.returncode}")
        tarballs = [Path(w) for ln in out.stdout.splitlines() for w in ln.split() if w.endswith(".tar") and Path(w).exists()]
        if not tarballs:
            raise StackError("images", f"{IMAGE_SCRIPT} printed no image tarball:\n{out.stdout[-2000:]}")
        for tar in tarballs:
            marker = self.ctrd / "imported" / tar.name
            if marker.exists():
                continue
            t0 = time.monotonic()
            imp = subprocess.run(["ctr", "--address", str(self.ctrd_sock), "-n", "k8s.io", "images", "import",
                                  str(tar)],
                                 capture_output=True, text=True)
            if imp.returncode != 0:
                raise StackError("images", f"ctr images import {tar} failed: {imp.stderr.strip()[-1000:]}")
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(imp.stdout)
            self.log(f"  {'image ' + tar.name:<24} imported {time.monotonic() - t0:5.1f} s")

    def _ctr(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ctr", "--address", str(self.ctrd_sock), "-n", "k8s.io", *args],
                              capture_output=True, text=True, timeout=30)

    def _kill_pod_containers(self) -> None:
        """SIGKILL every container task in containerd (the kubelet, already stopped, leaves them running)."""
        if not self.ctrd_sock.exists():
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            tasks = self._ctr("tasks", "ls", "-q").stdout.split()
            for task in tasks:
                self._ctr("tasks", "kill", "--all", "-s", "SIGKILL", task)
            deadline = time.monotonic() + 10
            while tasks and time.monotonic() < deadline:
                time.sleep(0.2)
                running = [ln.split()[0] for ln in self._ctr("tasks", "ls").stdout.splitlines()[1:]
                           if ln.split() and ln.split()[-1] == "RUNNING"]
                if not running:
                    break
            for task in tasks:
                self._ctr("tasks", "delete", task)

    def _stop_leftover_containers(self) -> None:
        """Kill any process still in the node's pod cgroups (containers of a containerd that died) and
        the containerd shims serving this stack's socket."""
        cgroot = os.environ.get("QR_CGROUP_ROOT", "")
        pids: set[int] = set()
        if cgroot:
            for procs_file in Path("/sys/fs/cgroup/pids", cgroot.lstrip("/")).rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(x) for x in procs_file.read_text().split())
        sock = str(self.ctrd_sock)
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit():
                with contextlib.suppress(OSError):
                    cmd = (proc / "cmdline").read_bytes().split(b"\0")
                    if cmd and b"containerd-shim" in cmd[0] and sock.encode() in b" ".join(cmd):
                        pids.add(int(proc.name))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, 9)

    def _unmount_under_root(self) -> None:
        """Lazily unmount whatever the node mounted under the stack dir (the kubelet's root-dir bind
        mount, pod volumes, container root filesystems), deepest first."""
        root = str(self.root) + "/"
        points = []
        with contextlib.suppress(OSError):
            for ln in Path("/proc/self/mountinfo").read_text().splitlines():
                point = ln.split()[4].encode().decode("unicode_escape")
                if point.startswith(root):
                    points.append(point)
        for point in sorted(set(points), key=lambda x: x.count("/"), reverse=True):
            subprocess.run(["umount", "-l", point], capture_output=True)

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
                    f"--bind-address={ANY}", f"--advertise-address={NODE_IP}", f"--secure-port={APISERVER_PORT}",
                    f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
                    f"--client-ca-file={p / 'ca.crt'}", f"--cert-dir={r / 'apiserver'}",
                    f"--token-auth-file={p / 'tokens.csv'}", "--authorization-mode=Node,RBAC",
                    # kubectl logs/exec: reach the kubelet at its InternalIP (the node name resolves nowhere)
                    "--kubelet-preferred-address-types=InternalIP",
                    "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                    f"--service-account-key-file={p / 'sa.pub'}",
                    f"--service-account-signing-key-file={p / 'sa.key'}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
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
        if part.name == "kube-scheduler":
            kc = str(self.kubeconfig)
            return [str(b / "kube-scheduler"), f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
                    f"--authorization-kubeconfig={kc}", "--authentication-skip-lookup=true", "--leader-elect=false",
                    f"--bind-address={HOST}", f"--secure-port={SCHEDULER_PORT}", f"--cert-dir={r / 'scheduler'}",
                    "--profiling=false"]
        if part.name == "kube-proxy":
            # conntrack settings 0: kube-proxy leaves the machine-wide conntrack sysctls alone
            return [str(b / "kube-proxy"), f"--kubeconfig={r / 'kube-proxy.kubeconfig'}", "--proxy-mode=iptables",
                    f"--cluster-cidr={POD_CIDR}", f"--hostname-override={NODE_NAME}",
                    f"--healthz-bind-address={HOST}:{PROXY_HEALTHZ_PORT}", f"--metrics-bind-address={HOST}:10249",
                    "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0",
                    "--conntrack-tcp-timeout-close-wait=0"]
        if part.name == "coredns":
            return [str(b / "coredns"), "-conf", str(r / "coredns" / "Corefile")]
        if part.name == "containerd":
            return ["containerd", "--config", str(self.ctrd / "config.toml")]
        if part.name == "kubelet":
            k = self.kubelet_dir
            return [str(b / "kubelet"), f"--config={k / 'config.yaml'}", f"--kubeconfig={r / 'kubelet.kubeconfig'}",
                    f"--root-dir={k / 'root'}", f"--cert-dir={k / 'pki'}", f"--hostname-override={NODE_NAME}",
                    f"--node-ip={NODE_IP}", "--v=1"]
        if part.name == "redis":
            # every address of the sandbox's private namespace (pods connect at NODE_IP): protected mode off
            return ["redis-server", str(self.redis_conf), "--bind", ANY, "--port", str(REDIS_PORT), "--dir", str(r / "redis"),
                    "--appendonly", "yes", "--daemonize", "no", "--protected-mode", "no"]
        if part.name == "postgres":  # no Unix socket: TCP only, every address (pods connect at NODE_IP)
            return [str(_pg_bin() / "postgres"), "-D", str(r / "postgres" / "data"), "-p", str(PG_PORT),
                    "-c", f"listen_addresses={ANY}", "-c", "unix_socket_directories=", "-c", "shared_buffers=32MB",
                    "-c", "max_connections=50", "-c", "fsync=off"]  # dev only, as etcd's --unsafe-no-fsync
        if part.name == "prometheus":
            return [str(b / "prometheus"), f"--config.file={self.prom_dir / 'prometheus.yml'}",
                    f"--storage.tsdb.path={self.prom_dir / 'data'}",
                    f"--web.listen-address={ANY}:{PROMETHEUS_PORT}",
                    "--web.enable-lifecycle", "--web.enable-admin-api"]
        if part.name == "mlflow":
            m = r / "mlflow"
            return [str(_venv_bin() / "mlflow"), "server",
                    "--backend-store-uri", f"sqlite:///{m / 'mlflow.db'}",
                    "--artifacts-destination", str(m / "artifacts"),
                    "--host", ANY, "--port", str(MLFLOW_PORT), "--workers", "1",
                    "--allowed-hosts", f"{HOST}:{MLFLOW_PORT},localhost:{MLFLOW_PORT},{NODE_IP}:{MLFLOW_PORT}"]
        if part.name == "fake-slack":
            return [str(_venv_bin() / "python"), str(HACK / "fake_slack.py"), "--host", ANY, "--port", str(SLACK_PORT),
                    "--token", SLACK_TOKEN, "--channel", SLACK_CHANNEL]
        if part.name == "fake-jira":
            return [str(_venv_bin() / "python"), str(HACK / "fake_jira.py"), "--host", ANY, "--port", str(JIRA_PORT),
                    "--token", JIRA_TOKEN, "--project", JIRA_PROJECT]
        raise KeyError(part.name)

    def _part_env(self, part: Part) -> dict[str, str]:
        env = dict(os.environ)
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
                                    cwd=self.root, env=self._part_env(part), start_new_session=True,
                                    **(_as_pg_user() if part.name == "postgres" else {}))
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
        except (OSError, ValueError, ssl.SSLError, subprocess.TimeoutExpired) as e:
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

    def _insecure_get(self, url: str) -> tuple[int, bytes]:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # components serving a self-signed cert from their cert dir
        return _http_get(url, context=ctx)

    def _health_kube_scheduler(self) -> str | None:
        status, body = self._insecure_get(f"https://{HOST}:{SCHEDULER_PORT}/healthz")
        return None if status == 200 else f"/healthz {status} {body[-300:]!r}"

    def _health_kube_proxy(self) -> str | None:
        status, body = _http_get(f"http://{HOST}:{PROXY_HEALTHZ_PORT}/healthz")
        return None if status == 200 else f"/healthz {status} {body[-300:]!r}"

    def _health_coredns(self) -> str | None:
        status, body = _http_get(f"http://{HOST}:{COREDNS_HEALTH_PORT}/health")
        return None if status == 200 else f"/health {status} {body[-300:]!r}"

    def _health_containerd(self) -> str | None:
        if not self.ctrd_sock.exists():
            return "no socket yet"
        out = subprocess.run(["ctr", "--address", str(self.ctrd_sock), "plugins", "ls"], capture_output=True,
                             text=True, timeout=10)
        if out.returncode != 0:
            return f"ctr plugins ls: {out.stderr.strip()[-300:]}"
        cri = [ln.split() for ln in out.stdout.splitlines() if ln.split()[:2] == ["io.containerd.grpc.v1", "cri"]]
        return None if cri and cri[0][-1] == "ok" else f"CRI plugin not ok: {cri}"

    def _health_kubelet(self) -> str | None:
        status, body = _http_get(f"http://{HOST}:{KUBELET_HEALTHZ_PORT}/healthz")
        if status != 200:
            return f"kubelet /healthz {status} {body[-200:]!r}"
        status, body = self._api_get(f"/api/v1/nodes/{NODE_NAME}")
        if status != 200:
            return f"node/{NODE_NAME}: {status}"
        node = json.loads(body)
        ready = next((c for c in node.get("status", {}).get("conditions", []) if c["type"] == "Ready"), None)
        if not ready or ready.get("status") != "True":
            return f"node/{NODE_NAME} not Ready: {(ready or {}).get('message', 'no Ready condition yet')}"
        beat = datetime.fromisoformat(ready["lastHeartbeatTime"].replace("Z", "+00:00"))
        age = (datetime.now(timezone.utc) - beat).total_seconds()
        return None if age < NODE_HEARTBEAT_MAX_AGE_S else f"node heartbeat {age:.0f} s old"

    def _health_redis(self) -> str | None:
        with socket.create_connection((HOST, REDIS_PORT), timeout=2) as s:
            s.sendall(f"AUTH {self.redis_password()}\r\nPING\r\n".encode())
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = s.recv(256)
                if not chunk:
                    break
                reply += chunk
        if reply.startswith(b"-ERR AUTH") or b"without any password" in reply:
            return "redis runs without the stack's password (started before it had one): localstack.py down, then up"
        return None if reply.startswith(b"+OK\r\n+PONG") else f"AUTH, PING -> {reply[:120]!r}"

    def _health_postgres(self) -> str | None:
        out = subprocess.run([str(_pg_bin() / "psql"), "-XtAc", "SELECT 1",
                              f"host={HOST} port={PG_PORT} user={PG_USER} dbname={PG_DB} connect_timeout=2"],
                             capture_output=True, text=True, timeout=10,
                             env={**os.environ, "PGPASSWORD": self.pg_password(), "PGPASSFILE": os.devnull})
        return None if out.returncode == 0 and out.stdout.strip() == "1" else f"psql SELECT 1: {out.stderr.strip()[-300:]}"

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
        print(f"{'PART':<24} {'PID':<8} {'HEALTH':<8} {'RSS MiB':>8}  {'ENDPOINT':<32} DETAIL")
        for r in rows:
            print(f"{r.name:<24} {r.pid or '-':<8} {'ok' if r.healthy else 'FAIL':<8} {r.rss_mb:8.0f}  {r.endpoint:<32} {r.detail}")
        print(f"{'total':<24} {'':<8} {'':<8} {sum(r.rss_mb for r in rows):8.0f}")
        return 0 if all(r.healthy for r in rows) else 1
    except StackError as e:
        print(f"\nERROR {e}", file=sys.stderr)
        if e.log_tail:
            print(f"---- last {LOG_TAIL_LINES} log lines of {e.part} ----\n{e.log_tail}\n----", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
