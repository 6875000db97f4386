# Tessera on one machine, no Docker needed. `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-builtin-rules

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
DATA ?= .var
PORT ?= 8042
SHARDS ?= 1
PYTEST_ARGS ?=
BENCH_ARGS ?=

# What `deps` checks, as CHECK=PACKAGE: CHECK is commands or path globs separated by
# commas (any one present is enough); PACKAGE is the Debian package that provides it.
CORE_DEPS := initdb,/usr/lib/postgresql/*/bin/initdb=postgresql redis-server=redis-server
BENCH_DEPS := Orthanc,/usr/sbin/Orthanc=orthanc /usr/share/orthanc/plugins/libOrthancDicomWeb.so=orthanc-dicomweb
BROWSER_DEPS := chromium=chromium

# $(call apt_ensure,PAIRS): apt-get install the packages whose CHECK finds nothing.
define apt_ensure
	@missing=""; \
	for pair in $(1); do \
	  found=""; IFS=, read -ra checks <<< "$${pair%%=*}"; \
	  for c in "$${checks[@]}"; do \
	    if [[ $$c == /* ]]; then compgen -G "$$c" >/dev/null && found=1; \
	    else command -v "$$c" >/dev/null && found=1; fi; \
	  done; \
	  [[ -n $$found || " $$missing " == *" $${pair#*=} "* ]] || missing="$$missing $${pair#*=}"; \
	done; \
	if [[ -z $$missing ]]; then echo "deps: system packages present"; exit 0; fi; \
	if [[ $$(id -u) != 0 ]]; then \
	  echo "deps: missing:$$missing. Not root, so not installing; run:"; \
	  echo "      sudo apt-get update && sudo apt-get install -y --no-install-recommends$$missing"; \
	  exit 0; fi; \
	if ! command -v apt-get >/dev/null; then \
	  echo "deps: missing:$$missing, and no apt-get here: install them yourself"; exit 0; fi; \
	echo "deps: installing$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -qq; \
	apt-get install -y -qq --no-install-recommends $$missing
endef

.PHONY: help deps deps-bench deps-browser venv constraints run test lint fmt bench \
	_bench-script clean clean-data

help: ## list the targets
	@echo "Tessera: make TARGET [DATA=.var PORT=8042 SHARDS=1 PYTEST_ARGS=...]"
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*## "}; {printf "  %-13s %s\n", $$1, $$2}'

deps: ## install missing system packages (PostgreSQL server, Redis) with apt-get
	$(call apt_ensure,$(CORE_DEPS))

deps-bench: ## install Orthanc and its DICOMweb plugin (for `make bench`) if missing
	$(call apt_ensure,$(BENCH_DEPS))

deps-browser: ## install Chromium (for browser tests) if missing
	$(call apt_ensure,$(BROWSER_DEPS))

venv: $(STAMP) ## create .venv with the project and [dev] extras, pinned by constraints.txt

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[dev]' -c constraints.txt
	touch $@

constraints: ## re-pin constraints.txt to what .venv holds now
	$(VENV)/bin/pip freeze --exclude-editable > constraints.txt

run: deps venv ## run the whole archive here (state in DATA=.var): http://127.0.0.1:8042/dicom-web
	TESSERA_SHARDS=$(SHARDS) exec $(VENV)/bin/tessera run --data '$(DATA)' --port $(PORT)

test: deps venv ## run every test in tests/ against real PostgreSQL, Redis and S3 servers
	@rc=0; $(VENV)/bin/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [[ $$rc == 5 ]]; then echo "make test: pytest collected NO tests (exit 5): failing" >&2; fi; \
	exit $$rc

lint: venv ## ruff check, ruff format --check, mypy on shared/ and services/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared services

fmt: venv ## format the code (ruff check --fix, then ruff format)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: _bench-script deps-bench venv ## run bench/run.py (Tessera next to Orthanc), BENCH_ARGS=...
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

_bench-script:
	@test -f bench/run.py || { echo "make bench: bench/run.py does not exist yet" >&2; exit 1; }

clean: ## remove .venv and build artefacts (keeps the data in DATA=.var)
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache tests/artifacts
	find . -path ./$(VENV) -prune -o -path './$(DATA)' -prune -o -name __pycache__ -type d \
	  -prune -exec rm -rf {} +

clean-data: ## delete the data of `make run` (DATA=.var); refuses while it runs
	@pidfile='$(DATA)/postgres/postmaster.pid'; \
	if [[ -f $$pidfile ]] && kill -0 "$$(head -1 "$$pidfile")" 2>/dev/null; then \
	  echo "clean-data: PostgreSQL (pid $$(head -1 "$$pidfile")) still runs on $(DATA): stop \`make run\` first" >&2; \
	  exit 1; fi
	rm -rf '$(DATA)'
