# Nightshift. `make demo` runs the whole loop on embedded defaults; `make test` runs the tests.
# Each target installs what it needs into .venv/ on first use: torch 2.13.0 first (a CPU
# wheel; any other torch spec would pull gigabytes of CUDA), then the rest under
# constraints.txt, the frozen, checked dependency set.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install browser demo test test-fast test-gpu lint docs check airflow stop bench clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	rm -f $(VENV)/.installed-*
	touch $@

# The Model health browser test drives the distribution's Chromium and chromedriver. Installed
# with apt where there is one (as root, or with passwordless sudo); elsewhere the test skips and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif command -v apt-get >/dev/null && { [ "$$(id -u)" = 0 ] || sudo -n true 2>/dev/null; }; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 || \
		{ $$SUDO apt-get update -q >/dev/null && $$SUDO apt-get install -y -q chromium chromium-driver >/dev/null; } || \
		echo "could not install chromium with apt: the browser test will skip"; \
	else echo "no chromium and no apt (as root or sudo): the Model health browser test will skip"; fi

demo: install          ## simulated world -> real Airflow backfill -> drift -> retrain -> promotion
	$(PY) scripts/demo.py

# pytest-xdist: one worker per core (2 on the reference machine), a test file to a worker, so a module's
# expensive fixtures are built once (see tests/conftest.py). The 20 slowest tests are printed.
XDIST ?= -n auto --dist loadfile

check: install docs    ## the contributor's loop (under 3 minutes): lint, the docs, the unit tests, two nights through the loop
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests/unit -m "not integration" $(XDIST) -q
	bash scripts/smoke.sh

test: install browser docs  ## the docs site, then the whole suite (unit, integration: Airflow + MLflow + S3 + Postgres/Redis, the browser)
	$(PY) -m pytest $(XDIST)

test-fast: install     ## everything but the integration and browser tests
	$(PY) -m pytest -m "not integration" $(XDIST)

test-gpu: install      ## only the CUDA tests (skipped without a GPU)
	$(PY) -m pytest -m gpu

lint: install          ## ruff, with the security (S) and Airflow (AIR) rules; exceptions are justified inline
	$(VENV)/bin/ruff check .

# The reference pages (settings, CLI, lake) are generated from the code while it builds (scripts/gen_docs.py,
# an MkDocs hook): --strict fails on a broken link or anchor, and on a lake table the generator cannot document.
docs: install          ## the docs site (MkDocs, Material theme) into site/, with --strict
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --quiet -d site

airflow: install       ## start the Airflow stack on the demo's home, without running the demo
	$(PY) scripts/airflow_stack.py start

stop:                  ## stop the Airflow processes the demo started
	$(PY) scripts/airflow_stack.py stop

bench: install         ## print the benchmark figures (each script ends with a RESULT line)
	$(PY) benchmarks/scoring.py
	$(PY) benchmarks/mapped_scoring.py
	$(PY) benchmarks/parse.py
	$(PY) benchmarks/import.py
	$(PY) benchmarks/ui_page.py
	$(PY) benchmarks/airflow_night.py --executors inprocess preload  # add local: the stock executor, ~18 s a night
	$(PY) benchmarks/training.py
	$(PY) benchmarks/training_quality.py
	$(PY) benchmarks/monitoring.py
	$(PY) benchmarks/drift_lab.py
	$(PY) benchmarks/training_tournament.py

clean: stop            ## remove generated data (the lake, MLflow store, Airflow home); keeps .venv
	rm -rf .nightshift
