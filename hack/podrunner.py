#!/usr/bin/env python3
"""Dev pod runner: a stand-in kubelet (and scheduler) for one node of the local stack.

    python hack/podrunner.py --kubeconfig DIR/kubeconfig --dir DIR [--node-name quantramp-dev]

What it does, every ``--poll`` seconds (0.5 s):

* registers Node ``quantramp-dev`` (Ready) and heartbeats its status and its
  Lease in ``kube-node-lease`` every 10 s, so the node lifecycle controller
  never taints it or evicts its pods;
* binds pending, unscheduled pods to that node (there is no kube-scheduler);
* runs each container's ``command + args`` (``$(VAR)`` expanded) as a local
  process in its own session, with the container's env (literal values,
  fieldRef, configMapKeyRef, secretKeyRef, resourceFieldRef, envFrom) plus
  POD_IP, POD_NAME, POD_NAMESPACE, HOSTNAME and the runner's PATH, HOME,
  LANG, KUBECONFIG; cwd ``workingDir`` if it exists, else ``DIR/pods/<ns>_<pod>/``;
  stdout+stderr appended to ``DIR/pods/<ns>_<pod>.log`` (first container; further
  containers ``<ns>_<pod>.<container>.log``);
* gives each pod its own loopback address 127.0.0.N (N from 10, lowest free,
  freed when the pod ends) as status.podIP (``hostNetwork`` pods: 127.0.0.1,
  the hostIP);
* runs startup, readiness and liveness probes (httpGet, tcpSocket, exec) and
  patches the pod status (phase, conditions, containerStatuses) through the
  status subresource;
* restarts exited containers per restartPolicy with back-off (first restart
  at once, then 1 s doubling to 30 s; ``CrashLoopBackOff`` meanwhile) and
  bumps restartCount;
* writes Prometheus file_sd targets ``DIR/prometheus/targets/<ns>_<pod>.json``
  for pods annotated ``prometheus.io/scrape: "true"`` (port from
  ``prometheus.io/port``, else the first containerPort; path
  ``prometheus.io/path`` or /metrics) with labels namespace, pod and every pod
  label (sanitised to ``[a-zA-Z0-9_]``);
* stops the processes of pods marked for deletion (SIGTERM to the process
  group, SIGKILL after the grace period), removes their target, and deletes
  the pod with grace 0;
* on SIGTERM/SIGINT stops every pod process (up to 10 s) and exits.

Deliberate differences from a kubelet (dev speed, no containers):
readiness and startup probes run at least every ``--probe-period-cap`` s (1 s)
even if periodSeconds is larger (liveness keeps periodSeconds); init
containers, volumes, images, resources and security contexts are ignored
(a container without ``command`` waits with CreateContainerConfigError);
``kubectl logs/exec`` do not work: read the log files.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import logging
import math
import os
import platform
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

HACK = Path(__file__).resolve().parent
if str(HACK) not in sys.path:
    sys.path.insert(0, str(HACK))

import kubernetes  # noqa: E402
from kubernetes.client.exceptions import ApiException  # noqa: E402

import procs  # noqa: E402  (sibling module in hack/)

log = logging.getLogger("podrunner")

HOST_IP = "127.0.0.1"
FIRST_IP, LAST_IP = 10, 254          # pod addresses 127.0.0.10 .. 127.0.0.254
HEARTBEAT_S = 10.0                   # node status + lease renew interval
LEASE_DURATION_S = 40
API_TIMEOUT_S = 5.0                  # per API request
CONFIG_RETRY_S = 2.0                 # retry interval for a missing ConfigMap/Secret
ORPHAN_GRACE_S = 5.0                 # grace for processes of pods that vanished from the API
BACKOFF_RESET_S = 60.0               # a container that ran this long restarts without delay
DEFAULT_GRACE_S = 30                 # terminationGracePeriodSeconds default
PASS_THROUGH_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "USER", "KUBECONFIG")
EVENT_SOURCE = "quantramp-podrunner"


# --------------------------------------------------------------------------- small helpers


def rfc3339(t: float | None = None) -> str:
    """Kubernetes Time (seconds precision, UTC) of epoch seconds ``t`` (default now)."""
    return datetime.fromtimestamp(time.time() if t is None else t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(t: float | None = None) -> str:
    """Kubernetes MicroTime (microsecond precision, UTC) of epoch seconds ``t``."""
    return datetime.fromtimestamp(time.time() if t is None else t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def expand(text: str, mapping: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: defined names are replaced, undefined ones kept
    verbatim, ``$$`` is an escaped ``$``."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2 : end]
                    out.append(mapping[name] if name in mapping else text[i : end + 1])
                    i = end + 1
                    continue
        out.append(c)
        i += 1
    return "".join(out)


_QUANTITY_SUFFIX = {
    "": 1, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}


def parse_quantity(q: str | int | float) -> float:
    """Value of a Kubernetes resource quantity ("500m" -> 0.5, "1Gi" -> 1073741824.0)."""
    m = re.fullmatch(r"([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)([a-zA-Z]*)", str(q).strip())
    if not m or m.group(2) not in _QUANTITY_SUFFIX:
        raise ValueError(f"bad quantity {q!r}")
    return float(m.group(1)) * _QUANTITY_SUFFIX[m.group(2)]


def prometheus_label(name: str) -> str:
    """A pod label key as a Prometheus label name (``app.kubernetes.io/name`` -> ``app_kubernetes_io_name``)."""
    s = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    if s[:1].isdigit():
        s = "_" + s
    return "label" + s if s.startswith("__") else s


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


class ConfigError(Exception):
    """The container cannot be started yet (missing ConfigMap/Secret key, no command, ...)."""


# --------------------------------------------------------------------------- API access


class Kube:
    """Thin wrapper over the kubernetes client returning plain JSON dicts (camelCase keys)."""

    def __init__(self, kubeconfig: str):
        self.client = kubernetes.config.new_client_from_config(config_file=kubeconfig)
        self.core = kubernetes.client.CoreV1Api(self.client)
        self.coord = kubernetes.client.CoordinationV1Api(self.client)
        self.version = kubernetes.client.VersionApi(self.client)

    @staticmethod
    def _json(resp) -> dict:
        return json.loads(resp.data)

    def list_pods(self) -> list[dict]:
        resp = self.core.list_pod_for_all_namespaces(_preload_content=False, _request_timeout=API_TIMEOUT_S)
        return self._json(resp)["items"]

    def bind(self, pod: dict, node: str) -> None:
        md = pod["metadata"]
        body = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": md["name"], "uid": md["uid"]},
                "target": {"apiVersion": "v1", "kind": "Node", "name": node}}
        self.core.create_namespaced_pod_binding(md["name"], md["namespace"], body,
                                                _preload_content=False, _request_timeout=API_TIMEOUT_S)

    def patch_pod_status(self, ns: str, name: str, body: dict) -> None:
        self.core.patch_namespaced_pod_status(name, ns, body, _content_type="application/merge-patch+json",
                                              _preload_content=False, _request_timeout=API_TIMEOUT_S)

    def delete_pod_now(self, ns: str, name: str, uid: str) -> None:
        """Delete with grace 0 if the object still has ``uid``; a vanished pod is fine."""
        try:
            self.core.delete_namespaced_pod(name, ns, grace_period_seconds=0,
                                            body={"gracePeriodSeconds": 0, "preconditions": {"uid": uid}},
                                            _preload_content=False, _request_timeout=API_TIMEOUT_S)
        except ApiException as e:
            if e.status not in (404, 409):  # gone, or a new pod of the same name
                raise

    def get(self, kind: str, ns: str, name: str) -> dict | None:
        """A ConfigMap or Secret as JSON, or None if it does not exist."""
        fn = self.core.read_namespaced_config_map if kind == "ConfigMap" else self.core.read_namespaced_secret
        try:
            return self._json(fn(name, ns, _preload_content=False, _request_timeout=API_TIMEOUT_S))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def event(self, pod: dict, reason: str, message: str, node: str, type_: str = "Normal") -> None:
        """Record a core/v1 Event on ``pod`` (best effort: failures are logged, not raised)."""
        md = pod["metadata"]
        now = rfc3339()
        body = {
            "metadata": {"generateName": f"{md['name']}.", "namespace": md["namespace"]},
            "involvedObject": {"apiVersion": "v1", "kind": "Pod", "namespace": md["namespace"],
                               "name": md["name"], "uid": md["uid"]},
            "reason": reason, "message": message, "type": type_,
            "source": {"component": EVENT_SOURCE, "host": node},
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            self.core.create_namespaced_event(md["namespace"], body, _preload_content=False,
                                              _request_timeout=API_TIMEOUT_S)
        except Exception as e:  # noqa: BLE001 - events are nice to have
            log.debug("event %s on %s/%s failed: %s", reason, md["namespace"], md["name"], e)


# --------------------------------------------------------------------------- probes


@dataclass
class Probe:
    """Schedule and verdict of one probe of one container (times in monotonic seconds)."""

    kind: str                 # startup | readiness | liveness
    spec: dict
    period_s: float
    next_due: float
    result: bool              # current verdict (readiness starts False, the others True)
    successes: int = 0
    failures: int = 0
    future: Future | None = None
    message: str = ""

    @property
    def success_threshold(self) -> int:
        return int(self.spec.get("successThreshold") or 1)

    @property
    def failure_threshold(self) -> int:
        return int(self.spec.get("failureThreshold") or 3)

    def record(self, ok: bool, message: str) -> None:
        self.message = message
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.success_threshold:
                self.result = True
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.failures >= self.failure_threshold:
                self.result = False


def run_probe(spec: dict, pod_ip: str, ports: dict[str, int], env: dict[str, str],
              cwd: Path | None = None) -> tuple[bool, str]:
    """Execute one probe attempt (blocking, bounded by timeoutSeconds); (success, message).

    ``ports`` maps container port names to numbers; ``env``/``cwd`` are used by exec probes.
    """
    timeout_s = float(spec.get("timeoutSeconds") or 1)

    def port_of(p) -> int:
        if isinstance(p, int) or str(p).isdigit():
            return int(p)
        if p in ports:
            return ports[p]
        raise ValueError(f"unknown named port {p!r}")

    try:
        if "httpGet" in spec:
            g = spec["httpGet"]
            host, port = g.get("host") or pod_ip, port_of(g.get("port"))
            if (g.get("scheme") or "HTTP").upper() == "HTTPS":
                conn = http.client.HTTPSConnection(host, port, timeout=timeout_s,
                                                   context=ssl._create_unverified_context())  # as a kubelet
            else:
                conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
            headers = {"User-Agent": "kube-probe/quantramp-podrunner", "Accept": "*/*"}
            headers.update({h["name"]: h["value"] for h in g.get("httpHeaders") or []})
            try:
                conn.request("GET", g.get("path") or "/", headers=headers)
                status = conn.getresponse().status
            finally:
                conn.close()
            return 200 <= status < 400, f"HTTP probe {host}:{port}{g.get('path') or '/'} -> {status}"
        if "tcpSocket" in spec or "grpc" in spec:  # grpc: approximated by a TCP connect
            t = spec.get("tcpSocket") or spec["grpc"]
            host, port = t.get("host") or pod_ip, port_of(t.get("port"))
            with socket.create_connection((host, port), timeout=timeout_s):
                return True, f"TCP probe {host}:{port} connected"
        if "exec" in spec:
            cmd = spec["exec"].get("command") or []
            out = subprocess.run(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, timeout=timeout_s)
            return out.returncode == 0, f"exec probe exit {out.returncode}: {out.stdout[-200:]!r}"
        return True, "no probe handler"
    except (OSError, ValueError, subprocess.TimeoutExpired, http.client.HTTPException) as e:
        return False, f"probe failed: {type(e).__name__}: {e}"


# --------------------------------------------------------------------------- containers


class Container:
    """One container of a pod run as a local process group, with kubelet-like state.

    ``state`` is "waiting", "running" or "terminated". Times ending in ``_mono``
    are monotonic seconds; others are Kubernetes timestamps.
    """

    def __init__(self, pod: "PodRun", spec: dict, index: int, restart_count: int):
        self.pod = pod
        self.spec = spec
        self.name: str = spec["name"]
        suffix = "" if index == 0 else f".{self.name}"
        self.log_path = pod.runner.pods_dir / f"{pod.key}{suffix}.log"
        self.pid_path = pod.runner.pods_dir / f"{pod.key}.{self.name}.{pod.uid[:8]}.pid"
        self.restart_count = restart_count
        self.proc: subprocess.Popen | None = None
        self.state = "waiting"
        self.waiting_reason, self.waiting_message = "ContainerCreating", ""
        self.started_at = ""
        self.started_mono = 0.0
        self.terminated: dict | None = None
        self.last_terminated: dict | None = None
        self.next_start_mono = 0.0          # when a waiting container may (re)start
        self.backoff_s = 0.0
        self.stop_deadline_mono: float | None = None
        self.stop_reason = ""
        self.stopped_for_good = False       # deletion/shutdown: never restart
        self.started = False                # startup probe passed (or none)
        self.probes: dict[str, Probe] = {}
        self.env: dict[str, str] = {}
        self.cwd: Path | None = None
        ports = [p for p in spec.get("ports") or [] if p.get("containerPort")]
        self.ports = {p["name"]: int(p["containerPort"]) for p in ports if p.get("name")}

    # ---- lifecycle

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def ready(self) -> bool:
        if not self.running or not self.started or self.stop_deadline_mono is not None:
            return False
        probe = self.probes.get("readiness")
        return probe.result if probe else True

    def maybe_start(self, now_mono: float) -> None:
        """Start the process if it is waiting and its back-off has elapsed."""
        if self.state != "waiting" or self.stopped_for_good or now_mono < self.next_start_mono:
            return
        try:
            self.env, mapping = self.pod.runner.container_env(self.pod, self.spec)
            argv = [expand(a, mapping) for a in (self.spec.get("command") or []) + (self.spec.get("args") or [])]
            if not self.spec.get("command"):
                raise ConfigError("the dev pod runner has no images: set spec.containers[].command")
        except Exception as e:  # noqa: BLE001 - ConfigError, API errors, bad quantities: all retried
            msg = str(e) if isinstance(e, ConfigError) else f"{type(e).__name__}: {e}"
            if (self.waiting_reason, self.waiting_message) != ("CreateContainerConfigError", msg):
                self.pod.event("Failed", f"Error: {msg}", "Warning")
            self.waiting_reason, self.waiting_message = "CreateContainerConfigError", msg
            self.next_start_mono = now_mono + CONFIG_RETRY_S
            return
        workdir = Path(self.spec["workingDir"]) if self.spec.get("workingDir") else None
        if workdir is None or not workdir.is_dir():
            workdir = self.pod.workdir
            workdir.mkdir(parents=True, exist_ok=True)
        self.cwd = workdir
        self.started_at, self.started_mono = rfc3339(), now_mono
        with open(self.log_path, "ab") as out:
            out.write(f"=== {self.started_at} podrunner starts container {self.name} (restart "
                      f"{self.restart_count}) in {workdir}: {argv}\n".encode())
            out.flush()
            try:
                self.proc = subprocess.Popen(argv, env=self.env, cwd=workdir, stdin=subprocess.DEVNULL,
                                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as e:
                out.write(f"=== start failed: {e}\n".encode())
                self.pod.event("Failed", f"Error: failed to start container {self.name}: {e}", "Warning")
                self._exited(128, "StartError", str(e), now_mono)
                return
        procs.write_pidfile(self.pid_path, self.proc.pid)
        self.state, self.terminated = "running", None
        self.started = "startupProbe" not in self.spec
        self.stop_deadline_mono, self.stop_reason = None, ""
        self._init_probes(now_mono)
        self.pod.event("Started", f"Started container {self.name} (pid {self.proc.pid})")
        log.info("%s/%s: started %s pid %d: %s", self.pod.ns, self.pod.name, self.name, self.proc.pid, argv)

    def _init_probes(self, now_mono: float) -> None:
        cap = self.pod.runner.probe_period_cap_s
        self.probes = {}
        for kind, key, initial in (("startup", "startupProbe", True), ("readiness", "readinessProbe", False),
                                   ("liveness", "livenessProbe", True)):
            spec = self.spec.get(key)
            if not spec:
                continue
            period = float(spec.get("periodSeconds") or 10)
            if kind != "liveness":
                period = min(period, cap)
            delay = float(spec.get("initialDelaySeconds") or 0)
            self.probes[kind] = Probe(kind, spec, period, now_mono + delay, initial)

    def poll(self, now_mono: float) -> None:
        """Reap the process, escalate a pending stop to SIGKILL, advance probes."""
        if self.proc is None or not self.running:
            return
        rc = self.proc.poll()
        if rc is None:
            if self.stop_deadline_mono is not None and now_mono >= self.stop_deadline_mono:
                log.info("%s/%s: %s did not stop in time: SIGKILL", self.pod.ns, self.pod.name, self.name)
                self._signal(signal.SIGKILL)
                self.stop_deadline_mono = math.inf  # wait for the kernel; do not signal again
            elif self.stop_deadline_mono is None:
                self._probe_tick(now_mono)
            return
        self._signal(signal.SIGKILL)  # a container ends with its main process: no stragglers
        code = rc if rc >= 0 else 128 - rc
        reason = "Completed" if code == 0 else "Error"
        self._exited(code, reason, self.stop_reason, now_mono)

    def _exited(self, code: int, reason: str, message: str, now_mono: float) -> None:
        self.pid_path.unlink(missing_ok=True)
        for p in self.probes.values():
            if p.future:
                p.future.cancel()
        pid = self.proc.pid if self.proc else None
        self.terminated = {"exitCode": code, "reason": reason, "startedAt": self.started_at or rfc3339(),
                           "finishedAt": rfc3339(), "containerID": f"qrdev://{pid}" if pid else None}
        if message:
            self.terminated["message"] = message
        self.proc, self.started = None, False
        log.info("%s/%s: %s exited with %d (%s)", self.pod.ns, self.pod.name, self.name, code, reason)
        policy = self.pod.spec.get("restartPolicy") or "Always"
        restart = not self.stopped_for_good and (policy == "Always" or (policy == "OnFailure" and code != 0))
        if not restart:
            self.state = "terminated"
            return
        ran_s = now_mono - self.started_mono if self.started_mono else 0.0
        runner = self.pod.runner
        if ran_s >= BACKOFF_RESET_S:
            self.backoff_s = 0.0
        delay = self.backoff_s
        self.backoff_s = runner.backoff_initial_s if self.backoff_s == 0 else min(2 * self.backoff_s,
                                                                                  runner.backoff_max_s)
        self.last_terminated, self.terminated = self.terminated, None
        self.state = "waiting"
        self.restart_count += 1
        self.next_start_mono = now_mono + delay
        if delay > 0:
            self.waiting_reason = "CrashLoopBackOff"
            self.waiting_message = f"back-off {delay:g}s restarting failed container={self.name} pod={self.pod.name}"
            self.pod.event("BackOff", "Back-off restarting failed container " + self.name, "Warning")
        else:
            self.waiting_reason, self.waiting_message = "ContainerCreating", ""

    def stop(self, grace_s: float, reason: str, for_good: bool = True) -> None:
        """Ask the process group to stop (SIGTERM now, SIGKILL after ``grace_s`` seconds).

        ``for_good``: never restart it (deletion, shutdown); otherwise the
        restart policy applies when it exits (failed liveness probe).
        """
        self.stopped_for_good = self.stopped_for_good or for_good
        if self.state == "waiting" and for_good:
            self.state = "terminated"
            self.terminated = self.terminated or {"exitCode": 0, "reason": "Completed", "startedAt": rfc3339(),
                                                  "finishedAt": rfc3339()}
        if not self.running or self.stop_deadline_mono is not None:
            return
        self.stop_reason = reason
        self.stop_deadline_mono = time.monotonic() + max(0.0, grace_s)
        self._signal(signal.SIGTERM if grace_s > 0 else signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    # ---- probes

    def _probe_tick(self, now_mono: float) -> None:
        runner = self.pod.runner
        for kind in ("startup", "readiness", "liveness"):
            p = self.probes.get(kind)
            if p is None or (kind == "startup") == self.started:
                continue  # the startup probe runs until started; the others only after
            if p.future is not None and p.future.done():
                ok, message = p.future.result() if not p.future.cancelled() else (False, "cancelled")
                p.future = None
                was = p.result
                p.record(ok, message)
                if not ok:
                    log.info("%s/%s: %s %s probe failed (%d/%d): %s", self.pod.ns, self.pod.name, self.name,
                             kind, p.failures, p.failure_threshold, message)
                if was and not p.result and kind == "readiness":
                    self.pod.event("Unhealthy", f"Readiness probe failed: {message}", "Warning")
                if kind == "startup" and ok:
                    self.started = True  # successThreshold of a startup probe is always 1
                elif kind in ("startup", "liveness") and p.failures >= p.failure_threshold:
                    self.pod.event("Unhealthy", f"{kind.capitalize()} probe failed: {message}", "Warning")
                    self.pod.event("Killing", f"Container {self.name} failed {kind} probe, will be restarted")
                    grace = float(p.spec.get("terminationGracePeriodSeconds") or self.pod.grace_s)
                    self.stop(grace, f"{kind} probe failed: {message}", for_good=False)
                    return
            if p.future is None and now_mono >= p.next_due:
                p.next_due = now_mono + p.period_s
                p.future = runner.probe_pool.submit(run_probe, p.spec, self.pod.ip, self.ports, dict(self.env),
                                                    self.cwd)

    # ---- status

    def status(self) -> dict:
        """This container's entry of pod.status.containerStatuses."""
        if self.state == "running":
            state = {"running": {"startedAt": self.started_at}}
            cid = f"qrdev://{self.proc.pid}" if self.proc else None
        elif self.state == "terminated":
            state = {"terminated": {k: v for k, v in (self.terminated or {}).items() if v is not None}}
            cid = (self.terminated or {}).get("containerID")
        else:
            state = {"waiting": {"reason": self.waiting_reason, **({"message": self.waiting_message}
                                                                   if self.waiting_message else {})}}
            cid = (self.last_terminated or {}).get("containerID")
        last = {"terminated": {k: v for k, v in self.last_terminated.items() if v is not None}} \
            if self.last_terminated else {}
        st = {"name": self.name, "image": self.spec.get("image") or "", "imageID": "",
              "ready": self.ready, "started": self.running and self.started,
              "restartCount": self.restart_count, "state": state, "lastState": last}
        if cid:
            st["containerID"] = cid
        return st


# --------------------------------------------------------------------------- pods


class PodRun:
    """A pod bound to our node whose containers this runner runs."""

    def __init__(self, runner: "Runner", pod: dict, ip: str):
        md = pod["metadata"]
        self.runner = runner
        self.pod = pod
        self.uid: str = md["uid"]
        self.ns: str = md["namespace"]
        self.name: str = md["name"]
        self.key = f"{self.ns}_{self.name}"
        self.ip = ip
        self.workdir = runner.pods_dir / self.key
        self.target_path = runner.targets_dir / f"{self.key}.json"
        self.target_text: str | None = None
        self.deleting = False           # stopping for good; then the API object is deleted
        self.delete_in_api = True       # False when the object is already gone from the API
        self.terminal_phase: str | None = None
        self.last_patch = ""
        status = pod.get("status") or {}
        self.start_time = status.get("startTime") or rfc3339()
        self.transitions = {c["type"]: (c["status"], c.get("lastTransitionTime") or rfc3339())
                            for c in status.get("conditions") or []}
        previous = {c["name"]: c for c in status.get("containerStatuses") or []}
        if self.spec.get("initContainers"):
            self.event("InitContainersIgnored", "the dev pod runner does not run init containers", "Warning")
        self.containers = []
        for i, spec in enumerate(self.spec.get("containers") or []):
            prev = previous.get(spec["name"], {})
            # adopted after a runner restart: the old process is gone, count it as a restart
            count = int(prev.get("restartCount") or 0) + (1 if prev.get("started") or "running" in
                                                          (prev.get("state") or {}) else 0)
            self.containers.append(Container(self, spec, i, count))

    @property
    def spec(self) -> dict:
        return self.pod.get("spec") or {}

    @property
    def grace_s(self) -> float:
        g = self.spec.get("terminationGracePeriodSeconds")
        return float(DEFAULT_GRACE_S if g is None else g)

    def event(self, reason: str, message: str, type_: str = "Normal") -> None:
        self.runner.kube.event(self.pod, reason, message, self.runner.node_name, type_)

    def begin_delete(self, grace_s: float, delete_in_api: bool = True) -> None:
        """Stop all containers for good; the API object is deleted once they have exited."""
        if self.deleting:
            return
        self.deleting, self.delete_in_api = True, delete_in_api
        log.info("%s/%s: deleting (grace %g s)", self.ns, self.name, grace_s)
        for c in self.containers:
            if c.running:
                self.event("Killing", f"Stopping container {c.name}")
            c.stop(grace_s, "pod deleted")
        self.remove_target()

    def tick(self, now_mono: float) -> None:
        for c in self.containers:
            c.poll(now_mono)
            c.maybe_start(now_mono)
        if self.terminal_phase is None and not self.deleting and \
                all(c.state == "terminated" for c in self.containers):
            self.terminal_phase = "Succeeded" if all(c.terminated and c.terminated["exitCode"] == 0
                                                     for c in self.containers) else "Failed"
            log.info("%s/%s: %s", self.ns, self.name, self.terminal_phase)
            self.remove_target()
            self.runner.release_ip(self)
        if not self.deleting and self.terminal_phase is None:
            self.sync_target()

    @property
    def stopped(self) -> bool:
        return not any(c.running for c in self.containers)

    # ---- status

    def _condition(self, type_: str, ok: bool) -> dict:
        status = "True" if ok else "False"
        prev = self.transitions.get(type_)
        if prev is None or prev[0] != status:
            self.transitions[type_] = (status, rfc3339())
        return {"type": type_, "status": status, "lastTransitionTime": self.transitions[type_][1]}

    def status_patch(self) -> dict:
        """Merge patch for pod.status (our conditions replace theirs; foreign ones are kept)."""
        ready = bool(self.containers) and all(c.ready for c in self.containers)
        ours = [self._condition("PodReadyToStartContainers", self.terminal_phase is None),
                self._condition("Initialized", True), self._condition("Ready", ready),
                self._condition("ContainersReady", ready), self._condition("PodScheduled", True)]
        types = {c["type"] for c in ours}
        foreign = [c for c in (self.pod.get("status") or {}).get("conditions") or [] if c["type"] not in types]
        if self.terminal_phase:
            phase = self.terminal_phase
        else:
            phase = "Running" if any(c.running or c.terminated or c.last_terminated for c in self.containers) \
                else "Pending"
        return {"status": {
            "phase": phase, "conditions": ours + foreign,
            "hostIP": HOST_IP, "hostIPs": [{"ip": HOST_IP}],
            "podIP": self.ip, "podIPs": [{"ip": self.ip}],
            "startTime": self.start_time,
            "containerStatuses": [c.status() for c in self.containers],
        }}

    def push_status(self) -> None:
        """Patch the status subresource if it differs from what we last sent."""
        body = self.status_patch()
        text = json.dumps(body, sort_keys=True)
        if text != self.last_patch:
            self.runner.kube.patch_pod_status(self.ns, self.name, body)
            self.last_patch = text

    # ---- Prometheus file_sd target

    def sync_target(self) -> None:
        ann = self.pod["metadata"].get("annotations") or {}
        if ann.get("prometheus.io/scrape") != "true" or not any(c.running for c in self.containers):
            self.remove_target()
            return
        port = ann.get("prometheus.io/port")
        if not port:
            declared = [p["containerPort"] for c in self.containers for p in c.spec.get("ports") or []]
            port = declared[0] if declared else None
        if not port:
            log.warning("%s/%s: prometheus.io/scrape without a port annotation or containerPort", self.ns, self.name)
            return
        labels = {prometheus_label(k): v for k, v in (self.pod["metadata"].get("labels") or {}).items()}
        labels.update({"namespace": self.ns, "pod": self.name,
                       "__metrics_path__": ann.get("prometheus.io/path") or "/metrics"})
        if ann.get("prometheus.io/scheme"):
            labels["__scheme__"] = ann["prometheus.io/scheme"]
        text = json.dumps([{"targets": [f"{self.ip}:{port}"], "labels": labels}], indent=1, sort_keys=True)
        if text != self.target_text:
            write_atomic(self.target_path, text + "\n")
            self.target_text = text

    def remove_target(self) -> None:
        if self.target_text is not None:
            self.target_path.unlink(missing_ok=True)
            self.target_text = None


class IpPool:
    """Loopback pod addresses 127.0.0.FIRST_IP..LAST_IP; the lowest free one is handed out."""

    def __init__(self):
        self.used: set[int] = set()

    def allocate(self, wanted: str | None = None) -> str:
        """An address; ``wanted`` (a pod's previous podIP) if it is in range and free."""
        if wanted and wanted.startswith("127.0.0."):
            n = int(wanted.rsplit(".", 1)[1])
            if FIRST_IP <= n <= LAST_IP and n not in self.used:
                self.used.add(n)
                return wanted
        for n in range(FIRST_IP, LAST_IP + 1):
            if n not in self.used:
                self.used.add(n)
                return f"127.0.0.{n}"
        raise RuntimeError("no free pod address left in 127.0.0.0/24")

    def release(self, ip: str) -> None:
        self.used.discard(int(ip.rsplit(".", 1)[1]))


# --------------------------------------------------------------------------- the runner


@dataclass
class Options:
    """Tunables; seconds everywhere."""

    poll_s: float = 0.5
    probe_period_cap_s: float = 1.0
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 30.0
    shutdown_grace_s: float = 10.0
    node_labels: dict[str, str] = field(default_factory=dict)


class Runner:
    """The kubelet stand-in: one node, many pods, one loop."""

    def __init__(self, kube: Kube, stack_dir: Path, node_name: str, opts: Options, ready_file: Path | None = None):
        self.kube = kube
        self.node_name = node_name
        self.opts = opts
        self.probe_period_cap_s = opts.probe_period_cap_s
        self.backoff_initial_s = opts.backoff_initial_s
        self.backoff_max_s = opts.backoff_max_s
        self.pods_dir = stack_dir / "pods"
        self.targets_dir = stack_dir / "prometheus" / "targets"
        self.ready_file = ready_file
        self.pods: dict[str, PodRun] = {}
        self.ips = IpPool()
        self.probe_pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="probe")
        self.stop_event = threading.Event()
        self.node_uid = ""
        self.next_heartbeat = 0.0
        self.ready_since = rfc3339()
        self.node_labels = {"kubernetes.io/hostname": node_name, "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": {"x86_64": "amd64", "aarch64": "arm64"}.get(
                                platform.machine(), platform.machine()),
                            "quantramp.dev/pod-runner": "true", **opts.node_labels}
        self.unschedulable_logged: set[str] = set()

    # ---- startup / shutdown

    def clean_leftovers(self) -> None:
        """Kill processes and targets a previous runner left behind (it was SIGKILLed)."""
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        for pidfile in self.pods_dir.glob("*.pid"):
            pid = procs.read_pidfile(pidfile)
            if pid is not None:
                log.info("stopping leftover pod process %d (%s)", pid, pidfile.name)
                procs.stop_group(pid, 5.0)
            pidfile.unlink(missing_ok=True)
        for target in self.targets_dir.glob("*.json"):
            target.unlink()

    def run(self) -> None:
        """Register the node, then loop until SIGTERM/SIGINT; then stop every pod process."""
        self.clean_leftovers()
        while not self.stop_event.is_set():
            try:
                self.register_node()
                break
            except Exception as e:  # noqa: BLE001 - the apiserver may still be starting
                log.warning("node registration failed (%s); retrying", e)
                self.stop_event.wait(1.0)
        while not self.stop_event.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - keep running through API hiccups
                log.exception("tick failed")
            self.stop_event.wait(self.opts.poll_s)
        self.shutdown()

    def shutdown(self) -> None:
        """Stop all pod processes in parallel (SIGTERM, SIGKILL after shutdown_grace_s)."""
        log.info("shutting down: stopping %d pods", len(self.pods))
        for pr in self.pods.values():
            for c in pr.containers:
                c.stop(min(pr.grace_s, self.opts.shutdown_grace_s), "pod runner stopped")
        deadline = time.monotonic() + self.opts.shutdown_grace_s + 5
        while time.monotonic() < deadline and not all(pr.stopped for pr in self.pods.values()):
            for pr in self.pods.values():
                for c in pr.containers:
                    c.poll(time.monotonic())
            time.sleep(0.1)
        for pr in self.pods.values():
            pr.remove_target()
        self.probe_pool.shutdown(wait=False, cancel_futures=True)
        if self.ready_file:
            self.ready_file.unlink(missing_ok=True)
        log.info("stopped")

    # ---- node

    def register_node(self) -> None:
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node_name, "labels": self.node_labels}}
        try:
            resp = self.kube.core.create_node(body, _preload_content=False, _request_timeout=API_TIMEOUT_S)
        except ApiException as e:
            if e.status != 409:
                raise
            resp = self.kube.core.patch_node(self.node_name, {"metadata": {"labels": self.node_labels}},
                                             _content_type="application/merge-patch+json",
                                             _preload_content=False, _request_timeout=API_TIMEOUT_S)
        self.node_uid = Kube._json(resp)["metadata"]["uid"]
        self.heartbeat()
        log.info("node %s registered", self.node_name)

    def heartbeat(self) -> None:
        """Post node status (Ready) and renew the node Lease; touch the ready file."""
        now = rfc3339()
        cond = [("Ready", "True", "KubeletReady", "quantramp dev pod runner is posting ready status"),
                ("MemoryPressure", "False", "KubeletHasSufficientMemory", "no memory pressure"),
                ("DiskPressure", "False", "KubeletHasNoDiskPressure", "no disk pressure"),
                ("PIDPressure", "False", "KubeletHasSufficientPID", "enough PIDs")]
        mem_kib = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                        if line.startswith("MemTotal:")), 0)
        resources = {"cpu": str(os.cpu_count() or 1), "memory": f"{mem_kib}Ki", "pods": str(LAST_IP - FIRST_IP + 1),
                     "ephemeral-storage": "100Gi"}
        status = {"status": {
            "conditions": [{"type": t, "status": s, "reason": r, "message": m, "lastHeartbeatTime": now,
                            "lastTransitionTime": self.ready_since} for t, s, r, m in cond],
            "addresses": [{"type": "InternalIP", "address": HOST_IP}, {"type": "Hostname", "address": self.node_name}],
            "capacity": resources, "allocatable": resources,
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {"machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": platform.release(),
                         "osImage": "quantramp dev pod runner", "containerRuntimeVersion": "qrdev://1",
                         "kubeletVersion": self._server_version(), "kubeProxyVersion": "",
                         "operatingSystem": "linux", "architecture": self.node_labels["kubernetes.io/arch"]},
        }}
        self.kube.core.patch_node_status(self.node_name, status, _content_type="application/merge-patch+json",
                                         _preload_content=False, _request_timeout=API_TIMEOUT_S)
        lease_spec = {"holderIdentity": self.node_name, "leaseDurationSeconds": LEASE_DURATION_S,
                      "renewTime": micro_time()}
        try:
            self.kube.coord.patch_namespaced_lease(self.node_name, "kube-node-lease", {"spec": lease_spec},
                                                   _content_type="application/merge-patch+json",
                                                   _preload_content=False, _request_timeout=API_TIMEOUT_S)
        except ApiException as e:
            if e.status != 404:
                raise
            lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                     "metadata": {"name": self.node_name, "namespace": "kube-node-lease",
                                  "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.node_name,
                                                       "uid": self.node_uid}]},
                     "spec": lease_spec}
            self.kube.coord.create_namespaced_lease("kube-node-lease", lease, _preload_content=False,
                                                    _request_timeout=API_TIMEOUT_S)
        if self.ready_file:
            write_atomic(self.ready_file, f"{os.getpid()} {now}\n")
        self.next_heartbeat = time.monotonic() + HEARTBEAT_S

    _version: str = ""

    def _server_version(self) -> str:
        if not self._version:
            try:
                self._version = self.kube.version.get_code(_request_timeout=API_TIMEOUT_S).git_version
            except Exception:  # noqa: BLE001
                return "unknown"
        return self._version

    # ---- the loop

    def tick(self) -> None:
        """One reconciliation pass over all pods."""
        now_mono = time.monotonic()
        if now_mono >= self.next_heartbeat:
            try:
                self.heartbeat()
            except Exception as e:  # noqa: BLE001 - retried next pass; pods still get served
                log.warning("node heartbeat failed: %s", e)
        pods = self.kube.list_pods()
        listed = {p["metadata"]["uid"] for p in pods}
        # vanished from the API (force-deleted): stop first, so a same-named successor is not disturbed
        for uid, pr in list(self.pods.items()):
            if uid not in listed:
                pr.begin_delete(min(pr.grace_s, ORPHAN_GRACE_S), delete_in_api=False)
        for pod in pods:
            spec, md = pod.get("spec") or {}, pod["metadata"]
            try:
                if not spec.get("nodeName"):
                    self.maybe_bind(pod)
                elif spec["nodeName"] == self.node_name:
                    self.sync_pod(pod)
            except Exception:  # noqa: BLE001 - one bad pod must not stall the others
                log.exception("%s/%s: sync failed", md.get("namespace"), md.get("name"))
        for pr in list(self.pods.values()):
            try:
                pr.tick(now_mono)
                if pr.deleting:
                    if pr.stopped:
                        self.forget(pr)
                    continue
                pr.push_status()
            except ApiException as e:
                if e.status != 404:
                    log.warning("%s/%s: API error %s %s", pr.ns, pr.name, e.status, e.reason)
            except Exception:  # noqa: BLE001
                log.exception("%s/%s: tick failed", pr.ns, pr.name)

    def maybe_bind(self, pod: dict) -> None:
        md, spec = pod["metadata"], pod.get("spec") or {}
        if md.get("deletionTimestamp") or (pod.get("status") or {}).get("phase", "Pending") != "Pending":
            return
        selector = spec.get("nodeSelector") or {}
        if any(self.node_labels.get(k) != v for k, v in selector.items()):
            if md["uid"] not in self.unschedulable_logged:
                self.unschedulable_logged.add(md["uid"])
                log.warning("%s/%s: nodeSelector %s does not match node %s", md["namespace"], md["name"],
                            selector, self.node_name)
            return
        try:
            self.kube.bind(pod, self.node_name)
        except ApiException as e:
            if e.status not in (404, 409):
                raise
            return
        log.info("%s/%s: bound to %s", md["namespace"], md["name"], self.node_name)
        self.kube.event(pod, "Scheduled", f"Successfully assigned {md['namespace']}/{md['name']} to "
                                          f"{self.node_name}", self.node_name)

    def sync_pod(self, pod: dict) -> None:
        """Track a pod of our node: start it, refresh its spec view, or begin its deletion."""
        md = pod["metadata"]
        pr = self.pods.get(md["uid"])
        if pr is None:
            phase = (pod.get("status") or {}).get("phase")
            if md.get("deletionTimestamp") or phase in ("Succeeded", "Failed"):
                if md.get("deletionTimestamp"):  # nothing runs for it here: let it go
                    self.kube.delete_pod_now(md["namespace"], md["name"], md["uid"])
                return
            host_network = bool((pod.get("spec") or {}).get("hostNetwork"))
            ip = HOST_IP if host_network else self.ips.allocate((pod.get("status") or {}).get("podIP"))
            pr = PodRun(self, pod, ip)
            self.pods[pr.uid] = pr
            log.info("%s/%s: new pod, ip %s", pr.ns, pr.name, pr.ip)
        pr.pod = pod
        if md.get("deletionTimestamp") and not pr.deleting:
            g = md.get("deletionGracePeriodSeconds")
            pr.begin_delete(float(pr.grace_s if g is None else g))

    def release_ip(self, pr: PodRun) -> None:
        if pr.ip != HOST_IP:  # hostNetwork pods share the node address
            self.ips.release(pr.ip)

    def forget(self, pr: PodRun) -> None:
        """All processes of a deleted pod are gone: release its address and delete the object."""
        if pr.delete_in_api:
            self.kube.delete_pod_now(pr.ns, pr.name, pr.uid)
        if pr.terminal_phase is None:
            self.release_ip(pr)
        del self.pods[pr.uid]
        log.info("%s/%s: gone", pr.ns, pr.name)

    # ---- environment

    def container_env(self, pr: PodRun, spec: dict) -> tuple[dict[str, str], dict[str, str]]:
        """(process env, expansion mapping) for a container; raises ConfigError if a source is missing."""
        mapping: dict[str, str] = {"POD_IP": pr.ip, "POD_NAME": pr.name, "POD_NAMESPACE": pr.ns}
        cache: dict[tuple[str, str], dict | None] = {}

        def source(kind: str, name: str) -> dict | None:
            if (kind, name) not in cache:
                obj = self.kube.get(kind, pr.ns, name)
                if obj is not None and kind == "Secret":
                    obj = {"data": {k: base64.b64decode(v).decode(errors="replace")
                                    for k, v in (obj.get("data") or {}).items()}}
                cache[(kind, name)] = obj
            return cache[(kind, name)]

        for src in spec.get("envFrom") or []:
            kind, ref = ("ConfigMap", src["configMapRef"]) if "configMapRef" in src else ("Secret", src["secretRef"])
            obj = source(kind, ref["name"])
            if obj is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f"{kind.lower()} {ref['name']!r} not found")
            for k, v in (obj.get("data") or {}).items():
                mapping[src.get("prefix", "") + k] = v

        for e in spec.get("env") or []:
            name = e["name"]
            if "valueFrom" not in e:
                mapping[name] = expand(e.get("value", ""), mapping)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                mapping[name] = self._field(pr, vf["fieldRef"]["fieldPath"])
            elif "configMapKeyRef" in vf or "secretKeyRef" in vf:
                kind, ref = ("ConfigMap", vf["configMapKeyRef"]) if "configMapKeyRef" in vf \
                    else ("Secret", vf["secretKeyRef"])
                obj = source(kind, ref["name"])
                value = None if obj is None else (obj.get("data") or {}).get(ref["key"])
                if value is None:
                    if ref.get("optional"):
                        continue
                    raise ConfigError(f"{kind.lower()} {ref['name']!r} key {ref['key']!r} not found")
                mapping[name] = value
            elif "resourceFieldRef" in vf:
                mapping[name] = self._resource(pr, spec, vf["resourceFieldRef"])
        env = {k: os.environ[k] for k in PASS_THROUGH_ENV if k in os.environ}
        env.update({"HOSTNAME": pr.name, "PYTHONUNBUFFERED": "1"})
        env.update(mapping)
        return env, mapping

    def _field(self, pr: PodRun, path: str) -> str:
        md = pr.pod["metadata"]
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return (md.get(m.group(1)) or {}).get(m.group(2), "")
        values = {
            "metadata.name": pr.name, "metadata.namespace": pr.ns, "metadata.uid": pr.uid,
            "spec.nodeName": self.node_name, "spec.serviceAccountName": pr.spec.get("serviceAccountName", ""),
            "status.podIP": pr.ip, "status.podIPs": pr.ip, "status.hostIP": HOST_IP, "status.hostIPs": HOST_IP,
        }
        if path not in values:
            raise ConfigError(f"unsupported fieldRef {path!r}")
        return values[path]

    def _resource(self, pr: PodRun, spec: dict, ref: dict) -> str:
        target = spec
        if ref.get("containerName"):
            target = next((c for c in pr.spec.get("containers") or [] if c["name"] == ref["containerName"]), spec)
        kind, _, res = ref["resource"].partition(".")
        value = ((target.get("resources") or {}).get(kind) or {}).get(res)
        if value is None:  # unset limits default to the node's allocatable
            value = str(os.cpu_count() or 1) if res == "cpu" else "100Gi" if "storage" in res else \
                f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')}"
        divisor = parse_quantity(ref.get("divisor") or "1") or 1.0  # the API defaults an unset divisor to "0"
        return str(max(1, math.ceil(parse_quantity(value) / divisor)))


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="podrunner.py", description="dev pod runner (a kubelet stand-in)")
    ap.add_argument("--kubeconfig", required=True)
    ap.add_argument("--dir", required=True, help="stack directory (pods/ and prometheus/targets/ live here)")
    ap.add_argument("--node-name", default="quantramp-dev")
    ap.add_argument("--ready-file", default=None, help="written with our pid after each node heartbeat")
    ap.add_argument("--poll", type=float, default=0.5, help="seconds between passes")
    ap.add_argument("--probe-period-cap", type=float, default=1.0,
                    help="max seconds between readiness/startup probe attempts")
    ap.add_argument("--backoff-initial", type=float, default=1.0, help="seconds; doubles per crash")
    ap.add_argument("--backoff-max", type=float, default=30.0, help="seconds")
    ap.add_argument("--shutdown-grace", type=float, default=10.0, help="seconds for pod processes on SIGTERM")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stdout)
    logging.getLogger("urllib3").setLevel(logging.ERROR)
    opts = Options(poll_s=args.poll, probe_period_cap_s=args.probe_period_cap, backoff_initial_s=args.backoff_initial,
                   backoff_max_s=args.backoff_max, shutdown_grace_s=args.shutdown_grace)
    runner = Runner(Kube(args.kubeconfig), Path(args.dir).resolve(), args.node_name, opts,
                    Path(args.ready_file) if args.ready_file else None)

    def on_signal(signum, _frame):
        log.info("signal %d: stopping", signum)
        runner.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
