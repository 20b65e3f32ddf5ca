#!/usr/bin/env bash
# Build the local Kubernetes binaries from the Go module proxy into a cache
# outside the repository, once per version:
#
#   etcd; kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy,
#   kubelet, kubectl (one k8s.io/kubernetes module dir); helm; coredns;
#   prometheus + promtool (kubernetes/file/http SD only); crictl; and the
#   Prometheus Operator CRDs (PodMonitor, PrometheusRule, ServiceMonitor) in
#   the sibling dir crds/.
#
#   hack/build-control-plane.sh            # build what is missing, print the bin dir
#
# Only the bin dir goes to stdout (last line); progress and per-component
# times go to stderr. Each component is built on its own: a failing one is
# named, the others are still built, and the script exits 1 at the end (no
# bin dir printed). A binary or CRD file that exists is kept: after changing
# a version knob delete the file (the CRDs are re-copied when their
# operator.prometheus.io/version annotation differs).
#
# Env: QR_K8S_VERSION (default v1.34.4), QR_ETCD_VERSION (v3.6.16),
#      QR_HELM_VERSION (v3.22.0), QR_COREDNS_VERSION (v1.15.0),
#      QR_PROMETHEUS_VERSION (v0.316.0, the Go module version of Prometheus 3.16.0),
#      QR_PROMETHEUS_TAGS (netgo,remove_all_sd,enable_kubernetes_sd),
#      QR_PROM_OPERATOR_VERSION (v0.88.0), QR_CRICTL_VERSION (v1.34.0),
#      QR_SKIP (components not to build, e.g. "crictl coredns"; names as in
#      the log: etcd k8s kube-apiserver ... kubelet helm coredns prometheus crds crictl),
#      QR_CACHE (~/.cache/quantramp).
set -euo pipefail

K8S_VERSION="${QR_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${QR_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${QR_HELM_VERSION:-v3.22.0}"
COREDNS_VERSION="${QR_COREDNS_VERSION:-v1.15.0}"
PROMETHEUS_VERSION="${QR_PROMETHEUS_VERSION:-v0.316.0}"
PROMETHEUS_TAGS="${QR_PROMETHEUS_TAGS:-netgo,remove_all_sd,enable_kubernetes_sd}"
PROM_OPERATOR_VERSION="${QR_PROM_OPERATOR_VERSION:-v0.88.0}"
CRICTL_VERSION="${QR_CRICTL_VERSION:-v1.34.0}"
CACHE="${QR_CACHE:-$HOME/.cache/quantramp}"
BIN="$CACHE/k8s-$K8S_VERSION/bin"
CRDS="$CACHE/k8s-$K8S_VERSION/crds"
K8S_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet kubectl)
CRD_FILES=(monitoring.coreos.com_podmonitors.yaml monitoring.coreos.com_prometheusrules.yaml monitoring.coreos.com_servicemonitors.yaml)
mkdir -p "$BIN"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

# stdout carries only the bin dir: everything else (go, python, our log) goes to stderr
exec 3>&1 1>&2

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
patch="${K8S_VERSION##*.}"

log() { echo "[build-control-plane] $*" >&2; }

# module_json MODULE@VERSION FIELD: a field of `go mod download -json` (Dir, Info, ...)
module_json() {
  go mod download -json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
sys.exit("go mod download " + sys.argv[1] + ": " + d["Error"]) if "Error" in d else print(d[sys.argv[2]])' "$1" "$2"
}

# ---------------------------------------------------------------- k8s.io/kubernetes

tools_go() {
  echo '//go:build tools'
  echo 'package tools'
  echo 'import ('
  local cmd
  for cmd in "${K8S_CMDS[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$cmd\""; done
  echo ')'
}

# One module dir for all k8s components. A dir made by an older version of
# this script (tools.go without kubelet etc.) or left half-done gets a fresh
# tools.go and `go mod tidy -e`; .tidied marks a finished tidy for this tools.go.
build_k8s_module() {
  local work="$CACHE/src/k8s-$K8S_VERSION"
  mkdir -p "$work"
  cd "$work"
  if [[ ! -f go.mod ]]; then
    # go.mod is written in .init/ and moved in when complete: an interrupted
    # run never leaves a go.mod without its replace directives
    rm -rf .init .tidied
    mkdir .init
    (
      cd .init
      go mod init quantramp.local/k8sbuild >/dev/null 2>&1
      gomod="$(module_json "k8s.io/kubernetes@$K8S_VERSION" GoMod)"
      go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
      # every staging module k8s.io/<m> => ./staging/... becomes k8s.io/<m> v0.<minor>.<patch>
      grep -oE '^\s*k8s\.io/[A-Za-z0-9._/-]+ => \./staging' "$gomod" | awk '{print $1}' | sort -u | while read -r m; do
        go mod edit -replace="$m=$m@v0.$minor.$patch"
      done
    )
    mv .init/go.mod go.mod
    rm -rf .init
  fi
  local want
  want="$(tools_go)"
  if [[ ! -f .tidied || "$(cat tools.go 2>/dev/null)" != "$want" ]]; then
    log "k8s module: tools.go for ${K8S_CMDS[*]}; go mod tidy"
    rm -f .tidied
    printf '%s\n' "$want" > tools.go
    go mod tidy -e >/dev/null 2>&1 || true
    go get "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
    go mod tidy -e
    touch .tidied
  fi
}

build_k8s_cmd() {
  local cmd="$1"
  [[ -x "$BIN/$cmd" ]] && return
  cd "$CACHE/src/k8s-$K8S_VERSION"
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitTreeState=clean"
  log "building $cmd $K8S_VERSION"
  go build -tags tools -trimpath -ldflags "$ld" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
  mv "$BIN/$cmd.tmp" "$BIN/$cmd"
}

k8s_missing() {
  local cmd
  for cmd in "${K8S_CMDS[@]}"; do [[ -x "$BIN/$cmd" ]] || skipped "$cmd" || return 0; done
  return 1
}

# ---------------------------------------------------------------- the others

build_etcd() {
  [[ -x "$BIN/etcd" ]] && return
  local work="$CACHE/src/etcd-$ETCD_VERSION"
  mkdir -p "$work"
  cd "$work"
  if [[ ! -f go.mod ]]; then
    go mod init quantramp.local/etcdbuild >/dev/null 2>&1
    cat > main.go <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >/dev/null
    go mod tidy
  fi
  log "building etcd $ETCD_VERSION"
  go build -trimpath -ldflags "-s -w" -o "$BIN/etcd.tmp" .
  mv "$BIN/etcd.tmp" "$BIN/etcd"
}

build_helm() {
  [[ -x "$BIN/helm" ]] && return
  log "building helm $HELM_VERSION"
  local work="$CACHE/src/helm-$HELM_VERSION"
  mkdir -p "$work"
  GOBIN="$work" go install -trimpath -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=$minor" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  mv "$work/helm" "$BIN/helm"
}

# CoreDNS with its default plugin set (plugin.cfg of the release).
build_coredns() {
  [[ -x "$BIN/coredns" ]] && return
  log "building coredns $COREDNS_VERSION"
  local work="$CACHE/src/coredns-$COREDNS_VERSION"
  mkdir -p "$work"
  cd "$work"
  GOBIN="$work" go install -trimpath -ldflags "-s -w -X github.com/coredns/coredns/coremain.GitCommit=$COREDNS_VERSION" "github.com/coredns/coredns@$COREDNS_VERSION"
  mv "$work/coredns" "$BIN/coredns"
}

# Prometheus 3.x (Go module v0.3MM.P = Prometheus 3.MM.P) and promtool.
# remove_all_sd drops every optional service discovery (cloud SDs, consul, dns,
# ...), keeping static, file and http SD; enable_kubernetes_sd puts kubernetes
# SD back. No builtinassets tag: the web UI's assets are generated by an npm
# build, so the UI pages answer with an error while the HTTP API works.
build_prometheus() {
  [[ -x "$BIN/prometheus" && -x "$BIN/promtool" ]] && return
  log "building prometheus + promtool $PROMETHEUS_VERSION (tags $PROMETHEUS_TAGS)"
  local work="$CACHE/src/prometheus-$PROMETHEUS_VERSION"
  mkdir -p "$work"
  cd "$work"
  local mod="github.com/prometheus/prometheus" dir info version date
  dir="$(module_json "$mod@$PROMETHEUS_VERSION" Dir)"
  info="$(module_json "$mod@$PROMETHEUS_VERSION" Info)"
  version="$(cat "$dir/VERSION")"
  date="$(python3 -c 'import json,sys;t=json.load(open(sys.argv[1]))["Time"];print(t[0:4]+t[5:7]+t[8:10]+"-"+t[11:19])' "$info")"
  local v="github.com/prometheus/common/version"
  GOBIN="$work" go install -trimpath -tags "$PROMETHEUS_TAGS" \
    -ldflags "-s -w -X $v.Version=$version -X $v.Revision=$PROMETHEUS_VERSION -X $v.Branch=HEAD -X $v.BuildUser=quantramp -X $v.BuildDate=$date" \
    "$mod/cmd/prometheus@$PROMETHEUS_VERSION" "$mod/cmd/promtool@$PROMETHEUS_VERSION"
  mv "$work/promtool" "$BIN/promtool"
  mv "$work/prometheus" "$BIN/prometheus"
}

# The Prometheus Operator's CRDs (apiextensions.k8s.io/v1) from its Go module's
# example/prometheus-operator-crd/. Each is < 80 kB, so even client-side
# `kubectl apply` fits the 256 kB annotation limit (the Prometheus/Alertmanager
# CRDs, not copied, need --server-side).
build_crds() {
  local want="operator.prometheus.io/version: ${PROM_OPERATOR_VERSION#v}" f ok=1
  for f in "${CRD_FILES[@]}"; do
    grep -qF "$want" "$CRDS/$f" 2>/dev/null || ok=0
  done
  [[ $ok == 1 ]] && return
  log "copying prometheus-operator $PROM_OPERATOR_VERSION CRDs to $CRDS"
  local work="$CACHE/src/prometheus-operator-$PROM_OPERATOR_VERSION" dir
  mkdir -p "$work" "$CRDS"
  cd "$work"
  dir="$(module_json "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" Dir)"
  for f in "${CRD_FILES[@]}"; do
    grep -qF "$want" "$dir/example/prometheus-operator-crd/$f"
    install -m 0644 "$dir/example/prometheus-operator-crd/$f" "$CRDS/$f.tmp"
    mv "$CRDS/$f.tmp" "$CRDS/$f"
  done
}

build_crictl() {
  [[ -x "$BIN/crictl" ]] && return
  log "building crictl $CRICTL_VERSION"
  local work="$CACHE/src/crictl-$CRICTL_VERSION"
  mkdir -p "$work"
  cd "$work"
  GOBIN="$work" go install -trimpath -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=${CRICTL_VERSION#v}" "sigs.k8s.io/cri-tools/cmd/crictl@$CRICTL_VERSION"
  mv "$work/crictl" "$BIN/crictl"
}

# ---------------------------------------------------------------- driver

failed=()
skipped() { local s=" ${QR_SKIP:-} "; s="${s//,/ }"; [[ "$s" == *" $1 "* ]]; }

# step NAME FUNC [ARGS]: run FUNC in a subshell with errexit; a failure is
# logged with NAME and remembered, and the next component is built.
step() {
  local name="$1" t0=$SECONDS rc
  shift
  if skipped "$name"; then log "$name: skipped (QR_SKIP)"; return 0; fi
  set +e
  ( set -e; "$@" )
  rc=$?
  set -e
  if (( rc != 0 )); then
    failed+=("$name")
    log "FAILED: $name (exit $rc after $(( SECONDS - t0 ))s)"
    return 0
  fi
  (( SECONDS - t0 > 1 )) && log "$name: $(( SECONDS - t0 ))s"
  return 0
}

start=$SECONDS
step etcd build_etcd
if skipped k8s; then
  log "k8s: skipped (QR_SKIP)"
elif k8s_missing; then
  n_failed=${#failed[@]}
  step "k8s module" build_k8s_module
  if (( ${#failed[@]} == n_failed )); then
    for cmd in "${K8S_CMDS[@]}"; do step "$cmd" build_k8s_cmd "$cmd"; done
  else
    failed+=("${K8S_CMDS[@]}")
  fi
fi
step helm build_helm
step coredns build_coredns
step prometheus build_prometheus
step crds build_crds
step crictl build_crictl

if (( ${#failed[@]} )); then
  log "failed after $(( SECONDS - start ))s: ${failed[*]}"
  exit 1
fi
log "done in $(( SECONDS - start ))s: $BIN"
echo "$BIN" >&3
