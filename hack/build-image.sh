#!/usr/bin/env bash
# Build the quantramp container image offline and save it as a tarball for
# `ctr -n k8s.io images import` (or `docker load`). Also builds the pause image for the
# kubelet's pod sandboxes. Idempotent and cached; see hack/README.md.
#
#   bash hack/build-image.sh            # as root (debootstrap, dockerd); QR_PYTHON = the project venv's python
#   bash hack/build-image.sh --check    # ... and check the image's real code paths (below)
#
# Output (stdout), last two lines:
#   pause: <pause tarball> quantramp/pause:3.10
#   <image tarball> quantramp:<content hash>      (the tarball also holds the tag quantramp:dev)
#
# Steps (each skipped when its cached result exists):
#   base      debootstrap bookworm minbase + python3, python3-venv, ca-certificates, tini;
#             stripped; `docker import` -> quantramp/base:bookworm-py3.11 (+ a date tag);
#             saved to $QR_CACHE/images/base-<key>.tar
#   wheels    the venv's versions of the runtime dependency closure (hack/image_deps.py),
#             `pip download --only-binary=:all:` for cp311 manylinux x86_64 into
#             $QR_CACHE/wheels/<hash of that list>/, pinned with sha256 in requirements.txt
#   project   `pip wheel --no-deps` of a clean copy of the sources (every run that builds)
#   image     build context in .local/image/ctx (Dockerfile, hard-linked wheels, project wheel),
#             `docker build --network none`, smoke checks, `docker save` to
#             $QR_CACHE/images/quantramp-<content hash>.tar
#   pause     hack/pause.c, gcc -static -Os, FROM scratch -> $QR_CACHE/images/pause-3.10-<key>.tar
# The content hash covers the Dockerfile, this script, the pinned wheel set (names and sha256),
# the base image id and the project sources: an unchanged tree prints the cached tarball at
# once, without starting dockerd.
#
# dockerd runs only while something must be built, as a child of this script, with its own
# dirs under $QR_CACHE/docker, inside private network and mount namespaces (no bridge, no
# iptables, /run and /etc/docker private), and is stopped on exit.
#
# --check (after building, or on the cached tarball): a throwaway MLflow server from the venv in
# dockerd's private network namespace; in the image (uid 10001, read-only root, tmpfs /tmp):
# `quantramp-trader train` of a logistic and a forest model, then hack/image_check.py (every
# module imported, both models loaded as the trader loads them, a backtest, SciPy, matplotlib,
# CEL); prints its JSON on stderr and keeps it in .local/image/check/.
#
# Environment: QR_CACHE (default ~/.cache/quantramp), QR_PYTHON (default .venv/bin/python),
# QR_DEBIAN_MIRROR (default http://deb.debian.org/debian), QR_IMAGE_KEEP (tarballs kept, 3),
# QR_IMAGE_SMOKE=0 skips the smoke checks.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${QR_CACHE:-$HOME/.cache/quantramp}
IMAGES=$CACHE/images
WHEELS=$CACHE/wheels
DOCKER_DIR=$CACHE/docker
CTX=$REPO/.local/image
PY=${QR_PYTHON:-$REPO/.venv/bin/python}
MIRROR=${QR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
KEEP=${QR_IMAGE_KEEP:-3}

SUITE=bookworm
BASE_INCLUDE=python3,python3-venv,ca-certificates,tini
BASE_RECIPE=1 # bump when the strip steps below change
BASE_REF=quantramp/base:bookworm-py3.11
IMAGE_PYTHON=3.11.2 # bookworm's python3.11 (Debian stable keeps it); checked against the base
IMAGE_REPO=quantramp
PAUSE_REF=quantramp/pause:3.10
# the build backend for the project wheel (pyproject's build-system), from a cached wheelhouse
BUILD_TOOLS=(setuptools==80.9.0 wheel==0.45.1)
# wheel tags of the image: CPython 3.11 on Debian bookworm (glibc 2.36), x86_64
PLATFORMS=()
for v in $(seq 36 -1 17); do PLATFORMS+=(--platform "manylinux_2_${v}_x86_64"); done
PLATFORMS+=(--platform manylinux2014_x86_64 --platform linux_x86_64)
WHEEL_TARGET=(--python-version 3.11 --implementation cp --abi cp311 "${PLATFORMS[@]}")

log() { printf '[build-image] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
sha() { sha256sum | cut -c1-"${1:-64}"; }

CHECK=0
for arg in "$@"; do
  case $arg in
    --check) CHECK=1 ;;
    -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown argument $arg (--check, --help)" ;;
  esac
done

mkdir -p "$IMAGES" "$WHEELS" "$CTX"
exec 9>"$IMAGES/.build.lock"
flock 9 || die "cannot lock $IMAGES/.build.lock"

[[ -x $PY ]] || die "no project venv python at $PY (make setup, or set QR_PYTHON)"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_NO_CACHE_DIR=1 # the wheelhouses are the cache
unset PIP_FIND_LINKS # wheels come from the index (or the wheelhouse), nowhere else

# ---------------------------------------------------------------------------------------------
# 1. inputs and keys (no root, no daemon)

REQS=$CTX/requirements.pinned
"$PY" "$REPO/hack/image_deps.py" --python-full-version "$IMAGE_PYTHON" "$REPO/pyproject.toml" >"$REQS.tmp"
mv "$REQS.tmp" "$REQS"
DEPS_KEY=$( { cat "$REQS"; printf '%s\n' "${WHEEL_TARGET[@]}"; } | sha 16)
WHEELHOUSE=$WHEELS/$DEPS_KEY
TOOLS_KEY=$(printf '%s\n' "${BUILD_TOOLS[@]}" | sha 16)
TOOLHOUSE=$WHEELS/buildtools-$TOOLS_KEY

BASE_KEY=$(printf '%s\n' "$SUITE" minbase "$BASE_INCLUDE" "$BASE_RECIPE" | sha 16)
BASE_TAR=$IMAGES/base-$BASE_KEY.tar
BASE_META=$IMAGES/base-$BASE_KEY.env # BASE_ID=..., BASE_DATE_REF=..., BASE_SIZE=...

PAUSE_KEY=$( { cat "$REPO/hack/pause.c"; gcc --version | head -1; echo "recipe 1"; } | sha 12)
PAUSE_TAR=$IMAGES/pause-3.10-$PAUSE_KEY.tar

VERSION=$("$PY" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$REPO/pyproject.toml")
REVISION=$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ $REVISION != unknown && -n $(git -C "$REPO" status --porcelain -- Dockerfile pyproject.toml README.md operator trader 2>/dev/null) ]]; then
  REVISION+=-dirty
fi

source_files() { # the project sources that go into the wheel, NUL-separated, sorted
  (cd "$REPO" && find pyproject.toml README.md operator trader -type f \
    ! -path '*/__pycache__/*' ! -name '*.pyc' -print0 | LC_ALL=C sort -z)
}

content_hash() { # needs the wheelhouse (SHA256SUMS) and the base id
  {
    echo "Dockerfile"; sha256sum <"$REPO/Dockerfile"
    echo "build-image.sh"; sha256sum <"$REPO/hack/build-image.sh"
    echo "image_deps.py"; sha256sum <"$REPO/hack/image_deps.py"
    echo "wheels"; cat "$WHEELHOUSE/SHA256SUMS"
    echo "build tools"; printf '%s\n' "${BUILD_TOOLS[@]}"
    echo "base"; echo "$BASE_ID"
    echo "sources"; (cd "$REPO" && source_files | xargs -0 sha256sum)
  } | sha 12
}

# ---------------------------------------------------------------------------------------------
# 2. wheelhouses (network: PyPI; no root)

fetch_wheelhouse() { # dir, pip download args...
  local dir=$1; shift
  local tmp=$dir.tmp.$$
  rm -rf "$tmp"; mkdir -p "$tmp"
  "$PY" -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "$@" >&2
  (cd "$tmp" && sha256sum -- *.whl >SHA256SUMS)
  rm -rf "$dir"; mv "$tmp" "$dir"
}

offline_refuse() { # what: the step that needs the registries; the sandbox has no route out
  [[ ${QR_SANDBOX:-} == 1 ]] || return 0
  die "$1 needs PyPI/Debian, and hack/sandbox.sh's network namespace has no route out: run \`make image\` (or \`make setup\`) outside the sandbox first"
}

if [[ ! -f $WHEELHOUSE/SHA256SUMS ]]; then
  offline_refuse "downloading the wheelhouse"
  t=$(now)
  log "wheelhouse $WHEELHOUSE: downloading $(wc -l <"$REQS") wheels (cp311, manylinux x86_64)"
  grep '==' "$REQS" >"$CTX/requirements.pins" || true
  grep -v '==' "$REQS" >"$CTX/requirements.image-only" || true
  # the venv's pins as they are; what only the image's Python needs resolved within those pins
  fetch_wheelhouse "$WHEELHOUSE" "${WHEEL_TARGET[@]}" -r "$CTX/requirements.pins"
  if [[ -s $CTX/requirements.image-only ]]; then
    "$PY" -m pip download -q --only-binary=:all: "${WHEEL_TARGET[@]}" -d "$WHEELHOUSE" \
      -c "$CTX/requirements.pins" -r "$CTX/requirements.image-only" >&2
    (cd "$WHEELHOUSE" && sha256sum -- *.whl >SHA256SUMS.tmp && mv SHA256SUMS.tmp SHA256SUMS)
  fi
  # requirements.txt: every wheel of the house, pinned by version and sha256 (pip --require-hashes)
  sed -E 's/^([0-9a-f]{64}) +\*?(([^-]+)-([^-]+)-.*\.whl)$/\3==\4 --hash=sha256:\1/' \
    "$WHEELHOUSE/SHA256SUMS" >"$WHEELHOUSE/requirements.txt"
  log "wheelhouse: $(find "$WHEELHOUSE" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEELHOUSE" | cut -f1), $(since "$t") s"
fi
if [[ ! -f $TOOLHOUSE/SHA256SUMS ]]; then
  log "build tools wheelhouse $TOOLHOUSE: ${BUILD_TOOLS[*]}"
  fetch_wheelhouse "$TOOLHOUSE" "${BUILD_TOOLS[@]}"
fi

# ---------------------------------------------------------------------------------------------
# 3. the cache check: an unchanged tree reuses the tarballs without a daemon

BASE_ID=""
if [[ -f $BASE_META && -f $BASE_TAR ]]; then
  # shellcheck disable=SC1090
  source "$BASE_META"
fi
if [[ -n $BASE_ID ]]; then
  HASH=$(content_hash)
  IMAGE_TAR=$IMAGES/quantramp-$HASH.tar
  if [[ -f $IMAGE_TAR && -f $PAUSE_TAR && $CHECK == 0 ]]; then
    log "up to date: content hash $HASH ($(du -h "$IMAGE_TAR" | cut -f1))"
    echo "pause: $PAUSE_TAR $PAUSE_REF"
    echo "$IMAGE_TAR $IMAGE_REPO:$HASH"
    exit 0
  fi
fi

[[ $(id -u) -eq 0 ]] || die "building needs root (debootstrap, dockerd); cached tarballs are used without it"
for tool in debootstrap dockerd docker unshare gcc; do
  command -v "$tool" >/dev/null || die "$tool is missing (bash hack/install-system-packages.sh)"
done

# ---------------------------------------------------------------------------------------------
# 4. dockerd: our own, in private net + mount namespaces, stopped on exit

DOCKERD_PID=""
DOCKERD_NS=""
CGROUP_PARENT=quantramp-image-build
CGROUPS_BEFORE=$(ls -d /sys/fs/cgroup/*/"$CGROUP_PARENT" 2>/dev/null || true)
ROOTFS=$IMAGES/rootfs.tmp

stop_dockerd() {
  [[ -n $DOCKERD_PID ]] || return 0
  local pid=$DOCKERD_PID i
  DOCKERD_PID=""
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then log "dockerd $pid did not stop in 30 s: SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  wait "$pid" 2>/dev/null || true
  # anything still in dockerd's private mount namespace was started by it (containerd, shims)
  if [[ -n $DOCKERD_NS ]]; then
    local p left=()
    for p in /proc/[0-9]*; do
      [[ $(readlink "$p/ns/mnt" 2>/dev/null) == "$DOCKERD_NS" ]] && left+=("${p#/proc/}")
    done
    if ((${#left[@]})); then log "stopping leftover processes of dockerd's namespace: ${left[*]}"; kill -KILL "${left[@]}" 2>/dev/null || true; fi
  fi
  if [[ -z $CGROUPS_BEFORE ]]; then # the cgroup parent dirs our containers made
    local d
    for d in /sys/fs/cgroup/*/"$CGROUP_PARENT"; do [[ -d $d ]] && rmdir "$d" 2>/dev/null || true; done
  fi
  rm -f "$DOCKER_DIR/docker.sock"
  log "dockerd stopped"
}

MLFLOW_PID=""
stop_mlflow() {
  [[ -n $MLFLOW_PID ]] || return 0
  local pid=$MLFLOW_PID i
  MLFLOW_PID=""
  kill -TERM -- -"$pid" 2>/dev/null || true # its own process group (setsid): the server and its workers
  for ((i = 0; i < 100; i++)); do kill -0 -- -"$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- -"$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  stop_mlflow
  stop_dockerd
  if [[ -d $ROOTFS ]] && ! grep -q " $ROOTFS" /proc/mounts; then rm -rf "$ROOTFS"; fi
  rm -rf "$WHEELHOUSE".tmp.* "$TOOLHOUSE".tmp.* 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_dockerd() {
  mkdir -p "$DOCKER_DIR"/{data,exec,etc,cli}
  local old
  old=$(cat "$DOCKER_DIR/dockerd.pid" 2>/dev/null || true)
  if [[ -n $old && $(readlink "/proc/$old/exe" 2>/dev/null) == */dockerd ]]; then
    die "a dockerd of an earlier run is still running (pid $old, $DOCKER_DIR): stop it with kill $old"
  fi
  echo '{}' >"$DOCKER_DIR/daemon.json"
  rm -f "$DOCKER_DIR/docker.sock"
  export DOCKER_HOST=unix://$DOCKER_DIR/docker.sock DOCKER_CONFIG=$DOCKER_DIR/cli DOCKER_BUILDKIT=0
  local t; t=$(now)
  # unshare execs sh, sh execs dockerd: $! is dockerd's own pid. In the new mount namespace,
  # /run (containerd's shim sockets) is a private tmpfs and /etc/docker (20.10 writes key.json
  # there) a private bind of $DOCKER_DIR/etc; every mount dockerd makes dies with the namespace.
  # shellcheck disable=SC2016 # $1, $@ are the inner shell's
  unshare --net --mount --propagation private -- /bin/sh -c '
    set -e
    mount -t tmpfs -o mode=0755 quantramp-run /run
    if [ -d /etc/docker ]; then mount --bind "$1/etc" /etc/docker; fi
    ip link set lo up 2>/dev/null || true
    shift
    exec dockerd "$@"' sh "$DOCKER_DIR" \
    --iptables=false --ip-forward=false --ip-masq=false --bridge=none --userland-proxy=false \
    --storage-driver=overlay2 --data-root "$DOCKER_DIR/data" --exec-root "$DOCKER_DIR/exec" \
    --pidfile "$DOCKER_DIR/dockerd.pid" -H "$DOCKER_HOST" --config-file "$DOCKER_DIR/daemon.json" \
    --cgroup-parent "/$CGROUP_PARENT" --shutdown-timeout 5 \
    >>"$DOCKER_DIR/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  local i
  for ((i = 0; i < 300; i++)); do
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -20 "$DOCKER_DIR/dockerd.log" >&2; die "dockerd exited"; }
    docker version >/dev/null 2>&1 && break
    sleep 0.1
  done
  docker version >/dev/null 2>&1 || { tail -20 "$DOCKER_DIR/dockerd.log" >&2; die "dockerd did not answer in 30 s"; }
  [[ $(cat "$DOCKER_DIR/dockerd.pid") == "$DOCKERD_PID" ]] || die "dockerd pidfile $(cat "$DOCKER_DIR/dockerd.pid") != $DOCKERD_PID"
  DOCKERD_NS=$(readlink "/proc/$DOCKERD_PID/ns/mnt")
  log "dockerd $DOCKERD_PID up in $(since "$t") s ($DOCKER_HOST, log $DOCKER_DIR/dockerd.log)"
}

# ---------------------------------------------------------------------------------------------
# 5. the base image

make_base() {
  local t date_ref
  t=$(now)
  [[ -d $ROOTFS ]] && ! grep -q " $ROOTFS" /proc/mounts && rm -rf "$ROOTFS"
  mkdir -p "$IMAGES/debootstrap-debs"
  log "debootstrap $SUITE minbase +$BASE_INCLUDE from $MIRROR (about 2 min)"
  # a private mount namespace: debootstrap's /proc, /sys mounts in the target vanish with it
  unshare --mount --propagation private -- \
    debootstrap --variant=minbase --include="$BASE_INCLUDE" --cache-dir="$IMAGES/debootstrap-debs" \
    "$SUITE" "$ROOTFS" "$MIRROR" >"$IMAGES/debootstrap.log" 2>&1 \
    || { tail -20 "$IMAGES/debootstrap.log" >&2; die "debootstrap failed (log $IMAGES/debootstrap.log)"; }
  log "debootstrap: $(since "$t") s, $(du -sh "$ROOTFS" | cut -f1)"
  # strip: apt caches and lists, docs (copyright files kept), man/info pages, translations, logs,
  # the host's resolv.conf/hostname that debootstrap copied in (the runtime provides them)
  rm -rf "$ROOTFS"/var/cache/apt/* "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/* \
    "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/lintian \
    "$ROOTFS"/var/cache/debconf/*-old "$ROOTFS"/var/lib/dpkg/*-old "$ROOTFS"/tmp/* "$ROOTFS"/root/.cache
  find "$ROOTFS"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  find "$ROOTFS"/usr/share/doc -type f ! -name copyright -delete
  find "$ROOTFS"/usr/share/doc -type l -delete
  find "$ROOTFS"/usr/share/doc -mindepth 1 -type d -empty -delete
  : >"$ROOTFS/etc/resolv.conf"
  : >"$ROOTFS/etc/hostname"
  dpkg-query --admindir="$ROOTFS/var/lib/dpkg" -W -f '${Package} ${Version}\n' >"$IMAGES/base-$BASE_KEY.packages"
  log "stripped: $(du -sh "$ROOTFS" | cut -f1), $(wc -l <"$IMAGES/base-$BASE_KEY.packages") packages"

  date_ref=$BASE_REF-$(date -u +%Y%m%d)
  t=$(now)
  tar --numeric-owner --sort=name -C "$ROOTFS" -cf - . \
    | docker import \
      --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["/bin/bash"]' \
      --message "debootstrap --variant=minbase --include=$BASE_INCLUDE $SUITE (recipe $BASE_RECIPE)" \
      - "$BASE_REF" >/dev/null
  docker tag "$BASE_REF" "$date_ref"
  rm -rf "$ROOTFS"
  docker save -o "$BASE_TAR.tmp" "$BASE_REF" "$date_ref"
  mv "$BASE_TAR.tmp" "$BASE_TAR"
  BASE_ID=$(docker image inspect -f '{{.Id}}' "$BASE_REF")
  printf 'BASE_ID=%s\nBASE_DATE_REF=%s\nBASE_SIZE=%s\nBASE_PYTHON=%q\n' "$BASE_ID" "$date_ref" \
    "$(docker image inspect -f '{{.Size}}' "$BASE_REF")" \
    "$(docker run --rm --network none "$BASE_REF" python3 --version)" >"$BASE_META"
  # shellcheck disable=SC1090
  source "$BASE_META"
  log "base $BASE_REF = $date_ref = $BASE_ID: import+save $(since "$t") s, tarball $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1))"
}

ensure_base() {
  local have
  [[ -n $BASE_ID ]] || { offline_refuse "debootstrap of the base"; make_base; }
  have=$(docker image inspect -f '{{.Id}}' "$BASE_REF" 2>/dev/null || true)
  [[ $BASE_PYTHON == "Python $IMAGE_PYTHON" ]] || die "the base has $BASE_PYTHON, the wheel set was chosen for $IMAGE_PYTHON: set IMAGE_PYTHON"
  if [[ $have != "$BASE_ID" ]]; then
    log "loading the cached base $BASE_TAR"
    docker load -q -i "$BASE_TAR" >/dev/null
    have=$(docker image inspect -f '{{.Id}}' "$BASE_REF")
    [[ $have == "$BASE_ID" ]] || die "base tarball holds $have, expected $BASE_ID"
  fi
}

# ---------------------------------------------------------------------------------------------
# 6. the project wheel and the build context

build_context() {
  local t; t=$(now)
  rm -rf "$CTX/src" "$CTX/ctx"
  mkdir -p "$CTX/src" "$CTX/ctx/wheels" "$CTX/ctx/dist"
  # a clean copy: no stale build/ or egg-info leaks into the wheel
  (cd "$REPO" && source_files | xargs -0 cp --parents -t "$CTX/src")
  SOURCE_DATE_EPOCH=315532800 "$PY" -m pip wheel -q --no-deps --no-index --find-links "$TOOLHOUSE" \
    -w "$CTX/ctx/dist" "$CTX/src" >"$CTX/wheel.log" 2>&1 || { cat "$CTX/wheel.log" >&2; die "pip wheel failed"; }
  rm -rf "$CTX/src"
  local f
  for f in "$WHEELHOUSE"/*.whl "$WHEELHOUSE/requirements.txt"; do
    ln "$f" "$CTX/ctx/wheels/" 2>/dev/null || cp "$f" "$CTX/ctx/wheels/"
  done
  cp "$REPO/Dockerfile" "$CTX/ctx/Dockerfile"
  # what quantramp imports, for the byte code of the deps stage (see hack/image_deps.py)
  cp "$REPO/hack/image_deps.py" "$CTX/ctx/wheels/image_deps.py"
  "$PY" "$REPO/hack/image_deps.py" --imports "$REPO/operator" "$REPO/trader" >"$CTX/ctx/wheels/imports.txt"
  log "context $CTX/ctx: $(basename "$CTX"/ctx/dist/*.whl), $(find "$CTX/ctx/wheels" -name '*.whl' | wc -l) wheels; $(since "$t") s"
}

smoke() { # image: the checks of the README, read-only root filesystem, no network
  local img=$1 out run=(docker run --rm --network none --read-only --tmpfs /tmp)
  [[ ${QR_IMAGE_SMOKE:-1} == 0 ]] && return 0
  out=$("${run[@]}" "$img" sh -c 'id -u; pwd; ls -A; python -c "import sys; print(sys.version.split()[0])"')
  [[ $(sed -n 1p <<<"$out") == 10001 ]] || die "smoke: not uid 10001: $out"
  [[ $(sed -n 3p <<<"$out") =~ ^3\.11\. ]] || die "smoke: WORKDIR not empty or no python 3.11: $out"
  "${run[@]}" "$img" quantramp-operator --help >/dev/null || die "smoke: quantramp-operator --help"
  "${run[@]}" "$img" quantramp-trader --help >/dev/null || die "smoke: quantramp-trader --help"
  out=$("${run[@]}" "$img" python -m quantramp.trader.modelfetch 2>&1 || true)
  [[ $out == usage:* ]] || die "smoke: python -m quantramp.trader.modelfetch: $out"
  log "smoke checks passed (uid 10001, empty WORKDIR, --help of both entrypoints, modelfetch usage; read-only rootfs)"
}

build_pause() {
  local dir=$CTX/pause t
  t=$(now)
  rm -rf "$dir"; mkdir -p "$dir"
  gcc -static -Os -s -Wall -Wextra -Werror -o "$dir/pause" "$REPO/hack/pause.c"
  cat >"$dir/Dockerfile" <<'EOF'
FROM scratch
LABEL org.opencontainers.image.title="quantramp-pause" \
      org.opencontainers.image.description="pod sandbox pause process (hack/pause.c, static)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
EOF
  docker build --network none -t "$PAUSE_REF" "$dir" >"$dir/build.log" 2>&1 \
    || { cat "$dir/build.log" >&2; die "docker build of the pause image failed"; }
  docker save -o "$PAUSE_TAR.tmp" "$PAUSE_REF"
  mv "$PAUSE_TAR.tmp" "$PAUSE_TAR"
  log "pause $PAUSE_REF: $(since "$t") s, $PAUSE_TAR ($(du -h "$PAUSE_TAR" | cut -f1))"
}

check_image() { # image: real code paths against a throwaway MLflow server (see --check above)
  local img=$1 dir=$CTX/check port=5055 bin t i
  bin=$(dirname "$PY")
  [[ -x $bin/mlflow ]] || die "--check runs an MLflow server from the venv: $bin/mlflow is missing (pip install -e '.[dev]')"
  rm -rf "$dir"; mkdir -p "$dir/artifacts"
  t=$(now)
  # in dockerd's private network namespace: reachable from `docker run --network host`, not from the host
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid nsenter --target "$DOCKERD_PID" --net -- \
    "$bin/mlflow" server --backend-store-uri "sqlite:///$dir/mlflow.db" --artifacts-destination "$dir/artifacts" \
    --host 127.0.0.1 --port "$port" --workers 1 --allowed-hosts "127.0.0.1:$port,localhost:$port" \
    >"$dir/mlflow.log" 2>&1 &
  MLFLOW_PID=$!
  for ((i = 0; i < 600; i++)); do
    kill -0 "$MLFLOW_PID" 2>/dev/null || { tail -20 "$dir/mlflow.log" >&2; die "the MLflow server exited"; }
    nsenter --target "$DOCKERD_PID" --net -- "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
      "http://127.0.0.1:$port/health" 2>/dev/null && break
    sleep 0.2
  done
  log "check: MLflow server $MLFLOW_PID up in $(since "$t") s (dockerd's network namespace, 127.0.0.1:$port)"
  local run=(docker run --rm -i --network host --read-only --tmpfs /tmp -e "MLFLOW_TRACKING_URI=http://127.0.0.1:$port" "$img")
  t=$(now)
  "${run[@]}" quantramp-trader train --model-name qr-check-logistic >"$dir/train-logistic.log" 2>&1 \
    || { tail -30 "$dir/train-logistic.log" >&2; die "check: quantramp-trader train (logistic) failed in the image"; }
  "${run[@]}" quantramp-trader train --model-name qr-check-forest --kind forest >"$dir/train-forest.log" 2>&1 \
    || { tail -30 "$dir/train-forest.log" >&2; die "check: quantramp-trader train --kind forest failed in the image"; }
  log "check: trained and registered 2 models in the image in $(since "$t") s"
  t=$(now)
  "${run[@]}" python - "http://127.0.0.1:$port" qr-check-logistic qr-check-forest \
    <"$REPO/hack/image_check.py" >"$dir/check.json" 2>"$dir/check.log" \
    || { tail -30 "$dir/check.log" >&2; die "check: hack/image_check.py failed in the image"; }
  log "check: passed in $(since "$t") s: $(cat "$dir/check.json")"
  stop_mlflow
}

# ---------------------------------------------------------------------------------------------
# 7. build

T0=$(now)
start_dockerd
ensure_base
HASH=$(content_hash)
IMAGE_TAR=$IMAGES/quantramp-$HASH.tar
IMAGE_REF=$IMAGE_REPO:$HASH

if [[ ! -f $IMAGE_TAR ]]; then
  build_context
  t=$(now)
  log "docker build $IMAGE_REF (base $BASE_REF, revision $REVISION)"
  docker build --network none --force-rm -f "$CTX/ctx/Dockerfile" \
    --build-arg BASE="$BASE_REF" --build-arg VERSION="$VERSION" --build-arg REVISION="$REVISION" \
    --label io.quantramp.content-hash="$HASH" \
    -t "$IMAGE_REPO:dev" -t "$IMAGE_REF" "$CTX/ctx" >"$CTX/build.log" 2>&1 \
    || { tail -30 "$CTX/build.log" >&2; die "docker build failed (log $CTX/build.log)"; }
  log "docker build: $(since "$t") s, image $(docker image inspect -f '{{.Size}}' "$IMAGE_REF" | awk '{printf "%.0f MB", $1/1e6}')"
  smoke "$IMAGE_REF"
  t=$(now)
  docker save -o "$IMAGE_TAR.tmp" "$IMAGE_REPO:dev" "$IMAGE_REF"
  mv "$IMAGE_TAR.tmp" "$IMAGE_TAR"
  log "docker save: $(since "$t") s, $IMAGE_TAR ($(du -h "$IMAGE_TAR" | cut -f1))"
  # keep the newest $KEEP image tarballs, and drop the tags of the others from the daemon
  # shellcheck disable=SC2012 # our own file names; newest first
  ls -1t "$IMAGES"/quantramp-*.tar | tail -n +"$((KEEP + 1))" | while read -r old; do
    h=$(basename "$old" .tar); h=${h#quantramp-}
    rm -f "$old"; docker rmi -f "$IMAGE_REPO:$h" >/dev/null 2>&1 || true
    log "pruned $old"
  done
fi
[[ -f $PAUSE_TAR ]] || build_pause
if ((CHECK)); then
  if [[ $(docker image inspect -f '{{.Id}}' "$IMAGE_REF" 2>/dev/null) == "" ]]; then
    log "loading $IMAGE_TAR"; docker load -q -i "$IMAGE_TAR" >/dev/null
  fi
  check_image "$IMAGE_REF"
fi
log "done in $(since "$T0") s"
echo "pause: $PAUSE_TAR $PAUSE_REF"
echo "$IMAGE_TAR $IMAGE_REF"
