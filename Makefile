# One entry point for people and CI. `make test` works on a fresh machine with Python, Node/npm
# and the OS: it makes .venv, installs the Restate server (npm) and Apache Kafka's jars (Maven),
# then runs the linters, the type checker and every test.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test check lint stack system-deps bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Java 17+ and Maven run the Apache Kafka broker of the tests; fetched from Debian when missing.
system-deps:
	@command -v java >/dev/null && command -v mvn >/dev/null || { \
	  echo "installing Java 17 and Maven with apt-get"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    openjdk-17-jre-headless maven >/dev/null; }

stack: $(STAMP) system-deps
	$(BIN)/python -m tests.stack.install

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

check: lint

test: stack lint
	$(BIN)/pytest

bench: stack
	$(BIN)/python -m bench.ingress_client

clean:
	rm -rf $(VENV) tests/stack/node_modules .mypy_cache .ruff_cache .pytest_cache
