#!/usr/bin/env bash
# Run a command inside a private sandbox that holds the whole local cluster, so that nothing the
# node does reaches the machine:
#
#   hack/sandbox.sh [--dir DIR] -- COMMAND [ARGS...]
#
# - network namespace: only `lo` and the pod bridge `qr0` (10.244.0.1/24, the node's address);
#   the stack's servers, the CNI bridge, kube-proxy's iptables rules and pod interfaces exist only
#   here (ip_forward and bridge-nf-call-iptables are per-namespace sysctls and are set here only);
# - mount namespace: /var, /run and /etc are overlays whose writes land in DIR/overlay (the kubelet's
#   /var/log/containers, libcni's /var/lib/cni, containerd's /run/containerd), and the three
#   machine-wide sysctls the kubelet rewrites at start (kernel.panic, kernel.panic_on_oops,
#   vm.overcommit_memory) are bind-mounted from scratch files: its writes reach the files, not
#   the kernel; every mount disappears with the namespace;
# - PID namespace: when COMMAND ends, every process it left behind (daemons, pods) is killed by
#   the kernel, and this script then removes the empty cgroups the kubelet and runc made under
#   the cgroup root `quantramp-<id>` (the only thing outside DIR a node creates).
#
# COMMAND sees QR_SANDBOX=1, QR_SANDBOX_DIR=DIR, QR_NODE_IP=10.244.0.1, QR_CGROUP_ROOT=/quantramp-<id>.
# Exit code: COMMAND's. DIR defaults to <repo>/.local/sandbox-<id>; it is removed at the end unless
# QR_SANDBOX_KEEP=1. Needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN): run as root or under sudo.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
id="$$"
dir=""
while (($#)); do
  case "$1" in
    --dir) dir="$2"; shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
(($#)) || { echo "usage: $0 [--dir DIR] -- COMMAND [ARGS...]" >&2; exit 2; }
if [[ "${QR_SANDBOX:-}" == 1 ]]; then exec "$@"; fi  # already inside one
[[ $(id -u) -eq 0 ]] || exec sudo -E --preserve-env=PATH "$0" ${dir:+--dir "$dir"} -- "$@"

dir="${dir:-$REPO/.local/sandbox-$id}"
cgroot="quantramp-$id"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

# the kubelet wants its cgroup root in every v1 hierarchy before it starts
cgroup_dirs() { for h in /sys/fs/cgroup/*/; do [[ -d "$h" ]] && echo "${h%/}/$cgroot"; done; }
for c in $(cgroup_dirs); do mkdir -p "$c" 2>/dev/null || true; done

cleanup() {
  # every process of the sandbox is gone with its PID namespace; remove the (now empty) cgroups,
  # deepest first; retry briefly while the kernel finishes tearing tasks down
  local c left=""
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    left=""
    for c in $(cgroup_dirs); do
      [[ -d "$c" ]] || continue
      find "$c" -depth -type d -exec rmdir {} \; 2>/dev/null || true
      [[ -d "$c" ]] && left+=" $c"
    done
    [[ -z "$left" ]] && break
    sleep 0.5
  done
  [[ -z "$left" ]] || echo "[sandbox] cgroups left behind:$left" >&2
  if [[ "${QR_SANDBOX_KEEP:-}" != 1 ]]; then rm -rf "$dir"; fi
}
trap cleanup EXIT

export QR_SANDBOX_DIR="$dir" QR_CGROUP_ROOT="/$cgroot" QR_NODE_IP=10.244.0.1
rc=0
unshare --net --mount --pid --fork --mount-proc --propagation private -- bash -euo pipefail -c '
  d="$QR_SANDBOX_DIR"
  for top in var run etc; do
    mkdir -p "$d/overlay/$top/upper" "$d/overlay/$top/work"
    mount -t overlay "qr-$top" -o "lowerdir=/$top,upperdir=$d/overlay/$top/upper,workdir=$d/overlay/$top/work" "/$top"
  done
  mkdir -p "$d/sysctl"
  for s in kernel/panic kernel/panic_on_oops vm/overcommit_memory; do
    f="$d/sysctl/${s//\//.}"
    cat "/proc/sys/$s" > "$f"
    mount --bind "$f" "/proc/sys/$s"
  done
  ip link set lo up
  ip link add qr0 type bridge
  ip addr add "$QR_NODE_IP/24" dev qr0
  ip link set qr0 up
  echo 1 > /proc/sys/net/ipv4/ip_forward
  if [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables; fi
  export QR_SANDBOX=1
  # bash stays PID 1 (it reaps orphans and forwards nothing): the command runs as its child
  "$@" &
  child=$!
  trap "kill -TERM $child 2>/dev/null" TERM INT
  wait $child || exit $?
' sandbox "$@" || rc=$?
exit "$rc"
