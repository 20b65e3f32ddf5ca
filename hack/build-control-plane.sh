#!/usr/bin/env bash
# Build the local control plane binaries (etcd, kube-apiserver,
# kube-controller-manager, kubectl, helm) from the Go module proxy into a
# cache outside the repository, once per version.
#
#   hack/build-control-plane.sh            # build what is missing, print the bin dir
#
# Env: QR_K8S_VERSION (default v1.34.4), QR_ETCD_VERSION (v3.6.16),
#      QR_HELM_VERSION (v3.22.0), QR_CACHE (~/.cache/quantramp).
set -euo pipefail

K8S_VERSION="${QR_K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${QR_ETCD_VERSION:-v3.6.16}"
HELM_VERSION="${QR_HELM_VERSION:-v3.22.0}"
CACHE="${QR_CACHE:-$HOME/.cache/quantramp}"
BIN="$CACHE/k8s-$K8S_VERSION/bin"
mkdir -p "$BIN"
export CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false

minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
patch="${K8S_VERSION##*.}"

log() { echo "[build-control-plane] $*" >&2; }

build_k8s() {
  local work="$CACHE/src/k8s-$K8S_VERSION"
  mkdir -p "$work"
  cd "$work"
  if [[ ! -f go.mod ]]; then
    go mod init quantramp.local/k8sbuild >/dev/null 2>&1
    local gomod
    gomod="$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')"
    go mod edit -require="k8s.io/kubernetes@$K8S_VERSION"
    # every staging module k8s.io/<m> => ./staging/... becomes k8s.io/<m> v0.<minor>.<patch>
    grep -oE '^\s*k8s\.io/[A-Za-z0-9._/-]+ => \./staging' "$gomod" | awk '{print $1}' | sort -u | while read -r m; do
      go mod edit -replace="$m=$m@v0.$minor.$patch"
    done
    cat > tools.go <<'GO'
//go:build tools
package tools
import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
    go mod tidy -e >/dev/null 2>&1 || true
    go get "k8s.io/kubernetes@$K8S_VERSION" >/dev/null
    go mod tidy -e 
  fi
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitTreeState=clean"
  for cmd in kube-apiserver kube-controller-manager kubectl; do
    if [[ ! -x "$BIN/$cmd" ]]; then
      log "building $cmd $K8S_VERSION"
      go build -tags tools -trimpath -ldflags "$ld" -o "$BIN/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"
      mv "$BIN/$cmd.tmp" "$BIN/$cmd"
    fi
  done
}

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

start=$(date +%s)
build_etcd
build_k8s
build_helm
log "done in $(( $(date +%s) - start ))s: $BIN"
echo "$BIN"
