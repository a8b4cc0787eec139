# Two commands do all the set-up: `make demo` runs Tribes on its bundled sample, `make test` tests it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: install demo serve test lint clean

$(BIN)/tribes: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,bench,dask]'
	@touch $@

install: $(BIN)/tribes

demo: install  ## import the bundled real sample, refresh, print the clusters
	$(BIN)/tribes demo

serve: install  ## Prefect server + UI on http://127.0.0.1:4200, deployments, a worker (Ctrl-C stops)
	$(BIN)/python -m flows.serve

test: install  ## the whole test suite
	$(BIN)/pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf .tribes .pytest_cache
