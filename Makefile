# The two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install lock services test test-fast fuzz lint demo bench migrate web worker beat clean

install:
	@bash scripts/install.sh

# requirements/*.in -> requirements/*.lock.txt, pinned with hashes (UPGRADE=1: newest releases).
lock: install
	@bash scripts/lock.sh

services:
	@bash scripts/ensure_services.sh

# Everything the suite needs, then the whole suite against real PostgreSQL and Redis.
test: install services
	@bash scripts/install_test_tools.sh
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest $(PYTEST_ARGS)

# The inner loop: every test that needs no model build (not marked slow or ml; tests/conftest.py
# marks ml every test using a bundle-building fixture). `make test` stays the whole suite.
test-fast: install services
	$(PY) -m pytest -m "not slow and not ml" $(PYTEST_ARGS)

# Explores the OpenAPI fuzz test with a seed of its own (make test always draws with one fixed
# seed): FUZZ_SEED=N replays a run, FUZZ_EXAMPLES sets the examples per operation and mode.
FUZZ_EXAMPLES ?= 300
fuzz: install services
	@seed="$(FUZZ_SEED)"; seed="$${seed:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}"; \
	echo "fuzz: FUZZ_SEED=$$seed FUZZ_EXAMPLES=$(FUZZ_EXAMPLES)"; \
	FUZZ_SEED="$$seed" FUZZ_EXAMPLES="$(FUZZ_EXAMPLES)" \
	  $(PY) -m pytest tests/fuzz -m fuzz --timeout=0 $(PYTEST_ARGS); status=$$?; \
	echo "fuzz: seed $$seed (replay: make fuzz FUZZ_SEED=$$seed FUZZ_EXAMPLES=$(FUZZ_EXAMPLES))"; \
	exit $$status

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

demo: install services
	$(PY) -m demo

bench: install services
	$(PY) -m bench.pipeline
	$(PY) -m bench.recommend

migrate: install
	$(PY) -m alembic upgrade head

# The Procfile names python and celery: the venv's, whether or not it is activated.
web: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/honcho start web

worker: install
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/honcho start worker query lists

beat: install
	mkdir -p var
	PATH="$(abspath $(VENV))/bin:$$PATH" $(VENV)/bin/honcho start beat

clean:
	rm -rf var .pytest_cache .ruff_cache .mypy_cache
