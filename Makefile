# Every target bootstraps .venv itself (DESIGN.md section 8).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench lint fmt clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## embedded Postgres + relay + router + two nodes; one verified inference; Ctrl-C stops all
	$(BIN)/fedai devnet --demo

test: $(STAMP)  ## the whole suite (real Postgres, relay and HTTP on loopback)
	$(BIN)/pytest -q

bench: $(STAMP)  ## each benchmark prints one JSON document
	$(BIN)/python bench/envelope.py
	$(BIN)/python bench/router_overhead.py
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/ttft.py
	$(BIN)/python bench/auction.py
	$(BIN)/python bench/sse_decode.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .fedai .mypy_cache .ruff_cache .pytest_cache
