# Every target bootstraps .venv itself (docs/decisions.md#devnet).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test bench soak mutants lint fmt clean alerts-test compose-test compose-test-paid compose-tools

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)  ## embedded Postgres + relay + router + two nodes; one verified inference; Ctrl-C stops all
	$(BIN)/fedai devnet --demo

test: $(STAMP)  ## the whole suite (real Postgres, relay and HTTP on loopback)
	$(BIN)/pytest -q

# promtool comes with Debian's prometheus package (.ci/install-system-packages installs it when it can).
PROMTOOL ?= promtool
alerts-test:  ## check the Prometheus config and rules and run their unit tests (infra/prometheus/tests)
	@command -v $(PROMTOOL) >/dev/null || { echo "promtool not found: apt-get install prometheus (or .ci/install-system-packages)"; exit 1; }
	$(PROMTOOL) check config --syntax-only infra/prometheus/prometheus.yml
	$(PROMTOOL) check rules infra/prometheus/rules/*.yml
	cd infra/prometheus && $(PROMTOOL) test rules tests/*.yml

# The container stack (infra/): not part of `make test`; needs Docker, and root for the debootstrap base image.
compose-tools:  ## install docker.io, docker-compose and debootstrap from Debian's archive; start the engine
	infra/install-compose-tools

compose-test: $(STAMP)  ## build the images offline on a local Debian base, bring the stack up, one verified inference, down
	infra/compose-test.sh

compose-test-paid: $(STAMP)  ## the same stack paid (LNbits with FakeWallet, a wallet per party): one paid verified inference, down
	infra/compose-test.sh --paid

bench: $(STAMP)  ## each benchmark prints one JSON document
	$(BIN)/python bench/envelope.py
	$(BIN)/python bench/router_overhead.py
	$(BIN)/python bench/scheduler.py
	$(BIN)/python bench/ttft.py
	$(BIN)/python bench/auction.py
	$(BIN)/python bench/sse_decode.py
	$(BIN)/python bench/payment_check.py
	$(BIN)/python bench/payments.py
	$(BIN)/python bench/tracing_calls.py

SOAK_MINUTES ?= 10
soak: $(STAMP)  ## N minutes through a router and two nodes with abusive traffic mixed in (not CI); prints JSON
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES)

# mutmut 3 wants the code under src/: run it in a copy laid out that way (config: [tool.mutmut] in pyproject.toml).
# MUTANTS narrows the run to mutant names, e.g. MUTANTS='fedai.protocol.nip98*' (docs/security.md#mutants).
MUTANTS_DIR := build/mutants-work
MUTANTS ?=
mutants: $(STAMP)  ## mutation testing of the security-critical modules (slow, not CI); lists the survivors
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev,mutants]'
	rm -rf $(MUTANTS_DIR) && mkdir -p $(MUTANTS_DIR)/src
	cp -r packages/fedai services/router/fedai_router services/node/fedai_node tools/simulator/fedai_sim $(MUTANTS_DIR)/src/
	cp -r tests migrations pyproject.toml $(MUTANTS_DIR)/
	find $(MUTANTS_DIR) -name __pycache__ -prune -exec rm -rf {} +
	cd $(MUTANTS_DIR) && $(CURDIR)/$(BIN)/mutmut run $(MUTANTS)
	cd $(MUTANTS_DIR) && $(CURDIR)/$(BIN)/mutmut results | grep -v ': not checked$$' || true

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf $(VENV) .fedai .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
