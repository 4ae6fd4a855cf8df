# Job Scheduler V2 — developer commands. Everything runs from the project's own .venv.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
# make run HOST=... PORT=... overrides V2_HOST / V2_PORT (which default to 127.0.0.1:8000).
HOST    ?=
PORT    ?=
STAMP   := $(VENV)/.installed
TS      := clients/typescript

.PHONY: install ts-client run test test-fast lint format generate openapi migrate bench bench-quick soak api-key clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Reinstalled only when pyproject.toml changed since the last install.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(STAMP)  ## install the service and its dev tools into .venv (when pyproject.toml changed)

run: install  ## serve on V2_HOST:V2_PORT (default 127.0.0.1:8000) with the embedded SQLite default
	$(BIN)/python -m app $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

# The TypeScript client test's npm packages, from the committed lockfile, when it changed.
$(TS)/node_modules/.installed: $(TS)/package-lock.json
	cd $(TS) && npm ci --no-audit --no-fund --silent
	@touch $@

ts-client: $(TS)/node_modules/.installed  ## npm packages of the TypeScript client test

test: install ts-client  ## the whole suite (needs PostgreSQL and MariaDB, see README)
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest tests/unit

lint: install
	$(BIN)/ruff check app tests scripts bench
	$(BIN)/ruff format --check app tests scripts bench
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix app tests scripts bench
	$(BIN)/ruff format app tests scripts bench

generate: install  ## regenerate app/steps/generated and app/domain/generated from their JSON schemas
	$(BIN)/python scripts/generate_step_models.py
	$(BIN)/python scripts/generate_schedule_models.py

openapi: install  ## write openapi/openapi.json from the app
	$(BIN)/python scripts/export_openapi.py

migrate: install  ## upgrade the database at V2_DATABASE_URL to the latest revision
	$(BIN)/alembic upgrade head

api-key: install  ## print a new API key and its V2_API_KEYS entry (ID=name SCOPES=read|run|admin)
	@$(BIN)/python scripts/make_api_key.py $(if $(ID),--id $(ID)) --scopes $(or $(SCOPES),run)

BENCH_STAMP := $(VENV)/.installed-bench

# The bench extra (the peers: APScheduler, PgQueuer), when pyproject.toml changed.
$(BENCH_STAMP): pyproject.toml | $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	@touch $@

bench: install $(BENCH_STAMP)  ## the benchmarks with the peers (about 25 minutes)
	$(BIN)/python -m bench

bench-quick: install $(BENCH_STAMP)  ## scaled down, under two minutes, one peer
	$(BIN)/python -m bench --quick

soak: install  ## R replicas on one PostgreSQL, kill -9 every 20 s, a PostgreSQL restart (not CI)
	$(BIN)/python scripts/soak.py --replicas $(or $(R),3) --minutes $(or $(MINUTES),5)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache data
