# Every install step lives here. On a fresh Debian 12 machine, as root:
#   make run    sandbox Asterisk + embedded PostgreSQL + the FastAGI server, in the foreground
#   make test   lint, types, unit and end-to-end tests
#   make bench  the FastAGI load benchmark against panoramisk, in the same run
#   make bench-calls  calls through the sandbox Asterisk: our server against a floor server

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The development tools (sandbox, embedded PostgreSQL, demo): beside the package, not in its wheel.
DEV := $(PY) -m fastagi_dev
CACHE := .cache
APT_PACKAGES := postgresql espeak-ng libespeak-ng1 sox sip-tester debootstrap python3-venv ca-certificates chromium fonts-dejavu-core
# The packages are checked by their commands, so a warm machine skips apt entirely.
APT_STAMP := $(CACHE)/apt.stamp
VENV_STAMP := $(VENV)/.installed
SANDBOX_ROOTFS := $(CACHE)/sandbox/rootfs
# pytest-xdist workers for make test: the suite mostly waits on page intervals and rings,
# so it runs well beyond the core count; each worker boots its own sandbox Asterisk and
# PostgreSQL. Work stealing, because a few e2e tests take 20-30 s: a worker that is done
# takes tests queued on another. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 4
# make test checks each Hypothesis property with its full count of examples
# (tests/conftest.py); a bare pytest run uses the quick profile.
TEST_PROFILE := --hypothesis-profile=thorough

.PHONY: help deps venv sandbox-image run test lint typecheck unit integration e2e bench bench-calls bench-alarms bench-latency bench-scale demo dist clean distclean

help:
	@echo "make run     start the sandbox Asterisk, PostgreSQL and the FastAGI server"
	@echo "make test    lint, type-check and run every test"
	@echo "make unit    the unit tests alone, in-process (about 20 s); make integration: espeak-ng, sox, SIPp"
	@echo "make demo    with make run going: trigger, two page cycles, deactivation, timeline"
	@echo "make bench   FastAGI load benchmark: ours/panoramisk ratios over 5 repetitions"
	@echo "make bench-calls  SIPp storms through the sandbox: our server/floor server ratios, plots"
	@echo "make bench-alarms  200 alarms at once through the sandbox (BENCH_ALARMS, BENCH_SECONDS)"
	@echo "make bench-latency activation -> first INVITE, warm and cold; deactivation -> BYE"
	@echo "make bench-scale   directory lookups (10,000 extensions), AMI events, TTS with 500 departments"
	@echo "make dist    build the wheel into dist/ (what production installs)"
	@echo "make clean   remove caches of tests; make distclean also removes the sandbox image"

$(APT_STAMP):
	@mkdir -p $(CACHE)
	@missing=""; \
	for cmd in initdb:postgresql espeak-ng:espeak-ng sox:sox sipp:sip-tester debootstrap:debootstrap chromium:chromium; do \
	  c=$${cmd%%:*}; \
	  if ! command -v $$c >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/$$c >/dev/null 2>&1; then missing=1; fi; \
	done; \
	if ! $(PYTHON) -c 'import venv, ensurepip' >/dev/null 2>&1; then missing=1; fi; \
	if [ -n "$$missing" ]; then \
	  echo "== installing Debian packages: $(APT_PACKAGES)"; \
	  apt-get update -q; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(APT_PACKAGES); \
	fi
	@touch $@

deps: $(APT_STAMP) $(VENV_STAMP)

$(VENV_STAMP): setup.cfg pyproject.toml | $(APT_STAMP)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

venv: $(VENV_STAMP)

sandbox-image: deps
	$(DEV) sandbox image

lint: venv
	$(VENV)/bin/ruff check fastagi fastagi_dev tests bench
	$(VENV)/bin/ruff format --check fastagi fastagi_dev tests bench

typecheck: venv
	$(VENV)/bin/mypy

# A quick run while working: the unit tests, in-process, at the "quick" Hypothesis profile.
unit: venv
	$(VENV)/bin/pytest tests/unit

# The real espeak-ng, sox, SIPp and the benchmarks' child servers; no Asterisk, no PostgreSQL.
integration: deps
	$(VENV)/bin/pytest tests/integration

e2e: deps sandbox-image
	$(VENV)/bin/pytest tests/e2e

test: deps sandbox-image lint typecheck
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist worksteal $(TEST_PROFILE) tests
	@echo "== the unit and integration tests again on uvloop, the event loop production runs on"
	FASTAGI_TEST_LOOP=uvloop $(VENV)/bin/pytest -q $(TEST_PROFILE) tests/unit tests/integration

# BENCH_ARGS: e.g. --servers ours,ours@HEAD~1 --baseline ours, the A/B of the last commit.
BENCH_ARGS ?=
bench: deps
	$(PY) -m bench.agi_load $(BENCH_ARGS)

# BENCH_CALLS_ARGS: e.g. --rates 100,200 --repeats 1 --kinds probe, or --profile.
# Writes docs/performance/calls.json and the plots docs/performance.md shows.
BENCH_CALLS_ARGS ?=
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): setup.cfg | $(VENV_STAMP)
	$(PY) -m pip install -q -e '.[test,bench]'
	@touch $@

bench-calls: deps sandbox-image $(BENCH_STAMP)
	$(PY) -m bench.calls --json docs/performance/calls.json --plots docs/performance $(BENCH_CALLS_ARGS)

# Issue 12 parts 2-5 (docs/performance.md). The alarm run needs the sandbox and PostgreSQL,
# which the e2e fixtures start: it is that test, run big, with its figures printed.
BENCH_ALARMS ?= 200
BENCH_SECONDS ?= 180
bench-alarms: deps sandbox-image $(BENCH_STAMP)
	BENCH_ALARMS=$(BENCH_ALARMS) BENCH_SECONDS=$(BENCH_SECONDS) \
	BENCH_PLOT=docs/performance/alarms-gap-error.png \
	$(VENV)/bin/pytest -p no:cacheprovider -q -s tests/e2e/test_alarm_scale.py

BENCH_TRIALS ?= 20
# BENCH_BACKGROUND_RATE=100: the same while 100 probe calls a second run through the sandbox.
BENCH_BACKGROUND_RATE ?= 0
bench-latency: deps sandbox-image
	BENCH_TRIALS=$(BENCH_TRIALS) BENCH_BACKGROUND_RATE=$(BENCH_BACKGROUND_RATE) $(VENV)/bin/pytest -p no:cacheprovider -q -s tests/e2e/test_alarm_latency.py

bench-scale: deps $(BENCH_STAMP)
	$(PY) -m bench.directory
	$(PY) -m bench.ami_events
	$(PY) -m bench.pool_reset
	$(PY) -m bench.tts_scale

# The wheel production installs (README, "Production install"). Built from a fresh copy
# of the files git tracks (a stale build/ or *.egg-info of the working tree cannot slip
# files in), with pinned build tools in a venv of their own and no build isolation (no
# download of whatever setuptools PyPI offers today), and with SOURCE_DATE_EPOCH (the
# last commit's time) for the archive's timestamps: two builds are byte-identical.
DIST ?= dist
BUILD_VENV := $(CACHE)/build-venv
BUILD_TOOLS := setuptools==80.9.0 wheel==0.45.1
BUILD_STAMP := $(BUILD_VENV)/.installed
BUILD_SRC ?= $(CACHE)/dist-src

$(BUILD_STAMP): Makefile
	@test -x $(BUILD_VENV)/bin/python || $(PYTHON) -m venv $(BUILD_VENV)
	$(BUILD_VENV)/bin/python -m pip install -q $(BUILD_TOOLS)
	@touch $@

dist: $(BUILD_STAMP)
	rm -rf $(BUILD_SRC) && mkdir -p $(BUILD_SRC) $(DIST)
	git ls-files -z | tar --null -cf - -T - | tar -xf - -C $(BUILD_SRC)
	cd $(BUILD_SRC) && SOURCE_DATE_EPOCH=$$(git -C $(CURDIR) log -1 --format=%ct) \
	  $(CURDIR)/$(BUILD_VENV)/bin/python -m pip wheel -q --no-deps --no-build-isolation \
	  -w $(abspath $(DIST)) .
	rm -rf $(BUILD_SRC)
	@ls $(DIST)/fastagi_panic-*.whl

run: deps sandbox-image
	$(DEV) run

# Plays the whole alarm story against a running `make run` (start that first).
demo: venv
	$(DEV) demo

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis $(CACHE)/instances $(CACHE)/pg

distclean: clean
	rm -rf $(CACHE) $(VENV)
