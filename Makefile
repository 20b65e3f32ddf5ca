# quantramp developer entry points. `make demo` and `make test` do all the set-up themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup system-packages control-plane demo test unit crds docs bench stack-shell image clean

## setup: the venv, Debian packages, Go-built binaries and the image; everything that needs the registries,
## done outside the sandbox (whose network namespace has no route out)
setup: $(STAMP) system-packages control-plane image

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

system-packages:
	bash hack/install-system-packages.sh

control-plane:
	bash hack/build-control-plane.sh >/dev/null

## image: the project image from the Dockerfile on a Debian base built here (hack/build-image.sh)
image: $(STAMP) system-packages
	QR_PYTHON=$(BIN)/python bash hack/build-image.sh >/dev/null

## demo: the whole ramp on the embedded local stack: a real single-node cluster (control plane, containerd,
## kubelet, kube-proxy, CoreDNS), Redis, Prometheus, MLflow, in the private namespaces of hack/sandbox.sh;
## the operator installed with helm, trader pods in containers of the image built from the Dockerfile
demo: setup
	hack/sandbox.sh -- $(BIN)/python hack/demo.py

## test: the whole suite (unit, integration, e2e on the local stack, inside hack/sandbox.sh); no tests collected is a failure
test: setup
	hack/sandbox.sh -- $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing" >&2; exit 1; fi; exit $$rc

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -q

## bench: issue #3 speed figures (governor, full decision with an MLflow model, replay vs backtesting.py, RSS),
## then the operator at N = 50, 200, 500 strategies on the local stack (issue #8), then the kill switch's
## broadcast -> last acknowledgement over 50 trials (issue #9), then the decision-quality benchmark of promotion
## policies, 2,000 simulated ramps per cell (bench/judge.py, issue #14); each a table, then one JSON line. backtesting.py is installed here only, for the comparison.
bench: setup
	$(BIN)/pip install -q --disable-pip-version-check "backtesting==0.6.6"
	$(BIN)/python bench/run.py
	hack/sandbox.sh -- $(BIN)/python bench/bench_operator.py
	hack/sandbox.sh -- $(BIN)/python bench/bench_kill.py
	$(BIN)/python bench/judge.py

crds: $(STAMP)
	$(BIN)/python -m quantramp.operator.crdgen

## docs: regenerate the reference docs (docs/values.md, tradingstrategy.md, plugin.md, metrics.md) from the chart's
## values schema, the CRD, the kubectl plugin and the metric definitions; tests/unit/config/test_docs_current.py fails when stale
docs: $(STAMP)
	$(BIN)/python hack/gendocs.py

## stack-shell: a shell inside the sandbox with the local stack up (then `source .local/stack/env`); exit stops it
stack-shell: setup
	hack/sandbox.sh -- bash -c '$(BIN)/python hack/localstack.py up && bash -i; $(BIN)/python hack/localstack.py down'

clean:
	rm -rf .local build *.egg-info
