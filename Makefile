# Every target works from a fresh clone on a machine with only Python 3.11 and pip.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
CHROMIUM := $(VENV)/.chromium

.PHONY: install lint demo test test-fast test-year dev lab serve airflow down status doctor clean bench ui-screenshots

$(INSTALLED): setup.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[local,dev]'
	$(BIN)/python -m pip check
	touch $@

install: $(INSTALLED)

# Debian's Chromium for Playwright (the `dev` extra): the UI test in `make test` and `make ui-screenshots`.
# No `playwright install`: its browser downloads are unreachable. CI runs as root on Debian.
$(CHROMIUM): | $(INSTALLED)
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null)
	touch $@

## make demo: start the embedded stack and materialize the whole asset graph on the sample partitions
demo: install
	$(BIN)/movie-platform up
	$(BIN)/movie-platform demo

## make lint: ruff (lint + format check) and mypy; `make test` runs it first
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## make test: lint, then the whole suite against real services (embedded, or the ones the env vars name) and Debian's Chromium
test: lint $(CHROMIUM)
	$(BIN)/python -m pytest

## make test-fast: the edit-test loop (about 2 minutes): lint, then the code tests (no stack, daemon, browser or Airflow)
test-fast: lint
	$(BIN)/python -m pytest movie_assets_tests/code

## make test-year: the simulated year in full (365 days on the local TMDB server, about 78 minutes on 2 cores); `make test` runs its first 14 days
test-year: install
	MOVIE_SIMULATED_DAYS=365 $(BIN)/python -m pytest -s -p no:logging --timeout=10800 movie_assets_tests/integration/test_simulated_year.py

## make dev: embedded stack + Dagster UI on http://127.0.0.1:3000 (Ctrl-C or `make down` stops it, also when backgrounded)
dev: install
	$(BIN)/movie-platform dev

## make lab: embedded stack + JupyterLab on notebooks/ at http://127.0.0.1:18888 (MOVIE_LAB_PORT), in the background; prints the URL with its token
lab: install
	$(BIN)/movie-platform lab

## make serve: embedded stack + features and champion scores over HTTP on http://127.0.0.1:18000 (MOVIE_SERVE_PORT), foreground; after `make demo`
serve: install
	$(BIN)/movie-platform up >/dev/null && $(BIN)/movie-platform serve

## make airflow: Airflow 2.11 (webserver + scheduler, own .venv-airflow) on http://127.0.0.1:18080; `make dev` then bridges to it
airflow: install
	$(BIN)/movie-platform airflow

## make down: stop everything the embedded stack, `make dev`, `make lab`, `make serve` and `make airflow` started
down:
	@if [ -x $(BIN)/movie-platform ]; then $(BIN)/movie-platform down; else echo "nothing to stop: no .venv"; fi

status doctor: install
	$(BIN)/movie-platform $@

clean: down
	rm -rf .movie_platform

## make bench: performance suite (not part of make test, about 75 min); every script appends its goal rows to
## $(GOALS) and the run ends with the one goal table; `make bench RESULTS=benchmarks/RESULTS.md` writes it there too
BENCH_STAMP := $(shell date -u +%Y%m%dT%H%M%SZ)
GOALS ?= .movie_platform/bench/goals-$(BENCH_STAMP).jsonl
bench: install
	$(BIN)/movie-platform up
	$(BIN)/movie-platform demo  # serving.py needs the demo's online features and a champion
	mkdir -p $(dir $(GOALS)) && rm -f $(GOALS)
	$(BIN)/python benchmarks/postgres_io.py --goals $(GOALS)
	$(BIN)/python benchmarks/object_store.py --goals $(GOALS)
	$(BIN)/python benchmarks/feast_online.py --goals $(GOALS)
	$(BIN)/python benchmarks/serving.py --goals $(GOALS)
	$(BIN)/python benchmarks/crawl_throughput.py --goals $(GOALS)
	$(BIN)/python benchmarks/change_sync.py --goals $(GOALS)
	$(BIN)/python benchmarks/event_log.py --goals $(GOALS)
	$(BIN)/python benchmarks/backfill_overhead.py --goals $(GOALS) 2>/dev/null
	$(BIN)/python benchmarks/step_overhead.py --goals $(GOALS) 2>/dev/null
	$(BIN)/python benchmarks/catalogue_backfill.py --goals $(GOALS)
	$(BIN)/python benchmarks/scale.py --goals $(GOALS)
	$(BIN)/python benchmarks/goal_table.py $(GOALS) $(if $(RESULTS),--results $(RESULTS))

## make ui-screenshots: asset pages (EDA report, plots) as PNGs in .movie_platform/screenshots/, for a check by eye
ui-screenshots: install $(CHROMIUM)
	$(BIN)/movie-platform up
	$(BIN)/python scripts/ui_screenshots.py
