"""hack/sandbox.sh keeps the node off the machine: the kernel settings the kubelet rewrites, links,
iptables rules, /var/log/containers, left-over processes and cgroups stay inside (or die with) the
sandbox. Each test starts a nested sandbox (a fresh one, whatever the test run itself is in) whose
command does what the kubelet, kube-proxy, CNI and a crashed pod would do, and then looks from the
outside."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SANDBOX = REPO / "hack" / "sandbox.sh"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="namespaces need root (CI and make test run as root)")


def _run_nested(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("QR_SANDBOX", "QR_SANDBOX_DIR", "QR_CGROUP_ROOT")}
    return subprocess.run([str(SANDBOX), "--dir", str(tmp_path / "sbx"), "--", "bash", "-c", script],
                          env=env, text=True, capture_output=True, timeout=60)


def _links() -> set[str]:
    return {ln.split()[0] for ln in subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout.splitlines()}


def _iptables() -> str:
    out = subprocess.run(["iptables-save"], capture_output=True, text=True)
    return "\n".join(ln for ln in out.stdout.splitlines() if not ln.startswith("#"))


def test_what_the_node_writes_stays_in_the_sandbox(tmp_path):
    sysctls = ("kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory")
    before = {s: Path("/proc/sys", s).read_text() for s in sysctls}
    had_containers_dir = Path("/var/log/containers").exists()
    # what the kubelet does at start (sysctls, /var/log/containers), what kube-proxy and CNI do (rules, links)
    out = _run_nested(
        "echo 10 > /proc/sys/kernel/panic && echo 1 > /proc/sys/kernel/panic_on_oops && "
        "echo 1 > /proc/sys/vm/overcommit_memory && cat /proc/sys/kernel/panic && "
        "mkdir -p /var/log/containers && touch /var/log/containers/x.log && "
        "ip link add qrtest0 type bridge && iptables -t nat -N QR-TEST && iptables -t nat -A QR-TEST -j RETURN && "
        "ip -br link", tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "10"  # inside, the write took effect ...
    assert "qrtest0" in out.stdout and "qr0" in out.stdout
    assert {s: Path("/proc/sys", s).read_text() for s in sysctls} == before  # ... outside it did not
    assert "qrtest0" not in _links()
    assert "QR-TEST" not in _iptables()
    assert Path("/var/log/containers").exists() == had_containers_dir
    assert not Path("/var/log/containers/x.log").exists()


def test_processes_left_behind_die_and_the_node_cgroups_are_removed(tmp_path):
    marker = f"qr-sandbox-orphan-{uuid.uuid4().hex[:8]}"
    # a daemon that outlives the command (as a kubelet or a container would) and a pod cgroup
    out = _run_nested(
        f"(exec -a {marker} sleep 300) & disown; "
        'mkdir -p /sys/fs/cgroup/pids$QR_CGROUP_ROOT/kubepods/pod1 && echo $QR_CGROUP_ROOT', tmp_path)
    assert out.returncode == 0, out.stderr
    cgroot = out.stdout.strip().splitlines()[-1]
    assert cgroot.startswith("/quantramp-")
    left = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True).stdout.split()
    assert left == [], f"processes left behind by the sandbox: {left}"
    assert not any(Path(h, cgroot.lstrip("/")).exists() for h in Path("/sys/fs/cgroup").iterdir())
    assert not (tmp_path / "sbx").exists()  # the scratch dir goes too


def test_the_commands_exit_code_is_the_sandboxs(tmp_path):
    assert _run_nested("exit 7", tmp_path).returncode == 7
