# quantramp: one image, two entrypoints: `quantramp-operator` (the Deployment in charts/quantramp)
# and `quantramp-trader run` (the trader pods the operator creates).
#
# Built offline by hack/build-image.sh (`docker build --network none`). Its build context holds
#   wheels/   every runtime dependency as a wheel, pinned with hashes in wheels/requirements.txt
#   dist/     the project wheel (quantramp-<version>-py3-none-any.whl)
# and nothing else: no sources, no network. BASE is Debian bookworm (minbase) with python3 (3.11),
# python3-venv, ca-certificates and tini, made locally by the script. Any Debian-like base with
# python3.11 and the venv module works: a release can use --build-arg BASE=python:3.11-slim (then
# `python3` is /usr/local/bin/python3 and tini must come from elsewhere: see the README).
ARG BASE=quantramp/base:bookworm-py3.11

# -- deps: /opt/venv with the pinned runtime dependencies (a cached layer while wheels/ is unchanged).
#    Slimmed: installed without byte code, then the dependencies' test suites and pip removed,
#    then byte code written only for what quantramp imports (wheels/imports.txt, listed from its
#    sources by hack/image_deps.py; a module that does not import fails the build).
FROM ${BASE} AS deps
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
COPY wheels/ /wheels/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --no-compile --no-index --find-links /wheels --require-hashes \
      -r /wheels/requirements.txt \
 && find /opt/venv/lib/python3.11/site-packages -mindepth 2 -type d \( -name tests -o -name test \) \
      -prune -exec rm -rf {} + \
 && /opt/venv/bin/pip uninstall --yes --quiet pip \
 && /opt/venv/bin/python /wheels/image_deps.py --compile-imports /wheels/imports.txt

# -- app: the project wheel (byte-compiled) into a staging root; only its files reach the final
#    stage. pip comes from a throwaway venv (--python targets /opt/venv); `pip check` proves the
#    wheel's own requirements are met by the pinned set above.
FROM deps AS app
COPY dist/ /dist/
RUN python3 -m venv /opt/pip \
 && /opt/pip/bin/pip --python /opt/venv/bin/python install --no-cache-dir --no-index --no-deps --no-warn-script-location \
      --root /staging /dist/quantramp-*.whl \
 && cp -a /staging/opt/venv/. /opt/venv/ \
 && /opt/pip/bin/pip --python /opt/venv/bin/python check

# -- final: the base, a non-root user and the venv; no build tools, wheels or sources. WORKDIR is
#    an empty root-owned directory, so `python -m ...` never finds a source folder such as
#    `operator/` (which would shadow the standard library's `operator`) on sys.path.
FROM ${BASE}
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin quantramp
COPY --from=deps /opt/venv /opt/venv
COPY --from=app /staging/opt/venv/ /opt/venv/
WORKDIR /srv/quantramp
USER 10001:10001
EXPOSE 8080
# tini is PID 1: forwards SIGTERM/SIGINT to the command and reaps orphans. Kubernetes' `command:`
# replaces the ENTRYPOINT (the chart and the operator's trader Deployments set it); both
# programs install their own SIGTERM handlers (kopf; trader/server.py), so PID 1 is safe there too.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["quantramp-operator"]
# last, so that a new revision does not invalidate the cached /opt/venv layer above
ARG BASE
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="quantramp" \
      org.opencontainers.image.description="Kubernetes operator that ramps ML trading models from paper to full capital on live evidence; entrypoints quantramp-operator and quantramp-trader" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE}"
