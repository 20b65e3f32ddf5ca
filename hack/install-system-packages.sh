#!/usr/bin/env bash
# Install the Debian packages the local stack needs (Redis 7, Prometheus 2.42, openssl),
# only when something is missing. Uses sudo when not root.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v prometheus >/dev/null || need+=(prometheus)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]} == 0)); then exit 0; fi
SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO=sudo
echo "[install-system-packages] installing ${need[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian starts the services on install where an init system runs; the local stack runs its own.
$SUDO service redis-server stop >/dev/null 2>&1 || true
$SUDO service prometheus stop >/dev/null 2>&1 || true
