# raftkube: every target installs what it needs itself (a virtualenv in .venv,
# Python packages from pyproject.toml, Debian packages through apt-get when
# running as root and they are missing).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev
# Debian packages the tests need: runc and a static busybox (the runc
# runtime's containers and their busybox image).
DEBIAN_PACKAGES := runc busybox-static
CLUSTER_DIR ?= .raftkube
CHAOS_SECONDS ?= 300
PYTEST_ARGS ?=

SERVICE_PROTOS := $(shell grep -l '^service ' $$(find proto -name '*.proto') | sort)
MESSAGE_PROTOS := $(shell grep -L '^service ' $$(find proto -name '*.proto') | sort)

.PHONY: help venv deps run down test lint proto verify-proto bench chaos clean

help:
	@echo "make run           start a local HA cluster (3 masters) in the foreground"
	@echo "make test          lint, verify-proto, then the test suite"
	@echo "make lint          ruff, mypy, import-linter"
	@echo "make proto         regenerate the gRPC/protobuf stubs from proto/"
	@echo "make verify-proto  fail if the checked-in stubs are not what proto/ generates"
	@echo "make bench         benchmarks (bench/), printing figures and ratios"
	@echo "make chaos         the fault campaign, CHAOS_SECONDS long (default $(CHAOS_SECONDS))"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(STAMP)

deps:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian packages:$$missing"; \
			DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null && \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; \
		else echo "missing Debian packages:$$missing (install them, or run as root)"; fi; \
	fi

run: $(STAMP)
	$(VENV)/bin/raftkube up --dir $(CLUSTER_DIR)

down: $(STAMP)
	$(VENV)/bin/raftkube down --dir $(CLUSTER_DIR)

test: $(STAMP) deps verify-proto lint
	$(PY) -m pytest tests $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

# Stubs are generated beside their owners. The .proto files live under
# proto/ at the path of the Python package they generate into, so the
# imports protoc writes are right both installed and in place.
proto: $(STAMP)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. --grpc_python_out=. $(SERVICE_PROTOS)
	$(PY) -m grpc_tools.protoc -Iproto --python_out=. --pyi_out=. $(MESSAGE_PROTOS)

verify-proto: $(STAMP)
	@tmp=$$(mktemp -d); \
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$$tmp --pyi_out=$$tmp --grpc_python_out=$$tmp $(SERVICE_PROTOS) && \
	$(PY) -m grpc_tools.protoc -Iproto --python_out=$$tmp --pyi_out=$$tmp $(MESSAGE_PROTOS) && \
	status=0; for f in $$(cd $$tmp && find . -name '*.py' -o -name '*.pyi'); do \
		cmp -s $$tmp/$$f $$f || { echo "stale generated file: $$f (run make proto)"; status=1; }; done; \
	rm -rf $$tmp; exit $$status

bench: $(STAMP)
	$(PY) -m bench.store_bench
	$(PY) -m bench.api_bench
	$(PY) -m bench.agent_bench

chaos: $(STAMP) deps
	$(PY) -m tests.chaos.campaign --seconds $(CHAOS_SECONDS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
