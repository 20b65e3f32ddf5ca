#!/usr/bin/env bash
# Install the Debian packages the local stack needs (Redis 7, openssl, PostgreSQL for the bar source
# tests (tests/integration/test_postgres_bars.py runs its own server); for the node containerd 1.6
# with its CRI plugin, runc, the CNI plugins, iptables and conntrack for kube-proxy, iproute2 and
# util-linux's unshare for hack/sandbox.sh; Prometheus is built from the Go module proxy) and
# those hack/build-image.sh needs (docker.io: dockerd 20.10 with containerd and runc;
# debootstrap and the Debian archive keyring; gcc and libc6-dev for the static pause binary),
# only when something is missing. Uses sudo when not root. Starts no service.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
[[ -x $(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | head -1) ]] || need+=(postgresql)
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local ]] || need+=(containernetworking-plugins)
command -v iptables >/dev/null || need+=(iptables)
command -v conntrack >/dev/null || need+=(conntrack)
command -v ip >/dev/null || need+=(iproute2)
command -v unshare >/dev/null || need+=(util-linux)
command -v openssl >/dev/null || need+=(openssl)
# the image build (hack/build-image.sh); a docker CLI alone is not enough, it needs dockerd
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || need+=(debian-archive-keyring)
command -v gcc >/dev/null || need+=(gcc)
[[ -f /usr/lib/$(uname -m)-linux-gnu/libc.a ]] || need+=(libc6-dev)
if ((${#need[@]} == 0)); then exit 0; fi
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
echo "[install-system-packages] installing ${need[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the services on install where an init system runs; the local stack runs its own.
$SUDO service redis-server stop >/dev/null 2>&1 || true
$SUDO service postgresql stop >/dev/null 2>&1 || true
$SUDO service containerd stop >/dev/null 2>&1 || true
# hack/build-image.sh runs its own dockerd; stop what the package started, only if we installed it
if [[ " ${need[*]} " == *" docker.io "* ]]; then
  $SUDO service docker stop >/dev/null 2>&1 || true
  $SUDO service containerd stop >/dev/null 2>&1 || true
fi
