# One entry point per check, used the same way by people, by .ci/run and by
# .github/workflows/ci.yml. Every target works from a fresh clone with Rust
# stable and Python >= 3.10 (with pip); `install` fetches the rest.
#
#   make install   build the native module in place (editable) + test/lint tools
#   make test      install, then cargo test --workspace and pytest
#   make lint      install, then rustfmt, clippy, ruff, mypy and stubtest
#   make demo      install, then python -m pykregistry demo
#   make bench     install, then the benchmark table (tests/benchmarks/bench.py)

# The interpreter to build for and test with; `make test PYTHON=python3.12`.
PYTHON ?= $(shell command -v python3 2>/dev/null || command -v python)
CARGO ?= cargo
# cargo builds the bindings' tests against the same interpreter as pip.
export PYO3_PYTHON ?= $(PYTHON)

.DEFAULT_GOAL := help
.PHONY: help install test test-rust test-python lint demo bench \
	lint-rustfmt lint-clippy lint-ruff lint-ruff-format lint-mypy lint-stubtest

help:
	@sed -n 's/^#   make /make /p' $(firstword $(MAKEFILE_LIST))

install:
	$(PYTHON) -m pip install -q -e '.[test,lint]'

test: install test-rust test-python

test-rust:
	$(CARGO) test --workspace

test-python: install
	$(PYTHON) -m pytest

# One target per tool, so that `make -k lint` reports every failing check.
lint: lint-rustfmt lint-clippy lint-ruff lint-ruff-format lint-mypy lint-stubtest

lint-rustfmt:
	$(CARGO) fmt --all -- --check

lint-clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint-ruff: install
	$(PYTHON) -m ruff check .

lint-ruff-format: install
	$(PYTHON) -m ruff format --check .

lint-mypy: install
	$(PYTHON) -m mypy

# The hand-written stubs against the compiled module.
lint-stubtest: install
	$(PYTHON) -m mypy.stubtest pykregistry._native

# Editable, like `install`: a plain `pip install .` would leave the checkout's
# pykregistry/ (first on sys.path under `python -m`) without its native module.
demo: install
	$(PYTHON) -m pykregistry demo

bench: install
	@if [ -f tests/benchmarks/bench.py ]; then \
		$(PYTHON) tests/benchmarks/bench.py; \
	else \
		echo "no benchmark yet: tests/benchmarks/bench.py does not exist"; \
	fi
