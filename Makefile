# quantramp developer entry points. `make demo` and `make test` do all the set-up themselves.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup system-packages control-plane demo test unit crds bench stack-up stack-down stack-status clean

setup: $(STAMP) system-packages control-plane

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

system-packages:
	bash hack/install-system-packages.sh

control-plane:
	bash hack/build-control-plane.sh >/dev/null

## demo: the whole ramp on the embedded local stack (control plane, Redis, Prometheus, MLflow)
demo: setup
	$(BIN)/python hack/demo.py

## test: the whole suite (unit, integration, e2e on the local stack); no tests collected is a failure
test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
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
	$(BIN)/python bench/bench_operator.py
	$(BIN)/python bench/bench_kill.py
	$(BIN)/python bench/judge.py

crds: $(STAMP)
	$(BIN)/python -m quantramp.operator.crdgen

stack-up: setup
	$(BIN)/python hack/localstack.py up

stack-down:
	$(BIN)/python hack/localstack.py down

stack-status:
	$(BIN)/python hack/localstack.py status

clean:
	rm -rf .local build *.egg-info
