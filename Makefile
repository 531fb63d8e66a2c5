# Every target builds or refreshes .venv itself, so a fresh clone needs nothing but python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench chaos broker clean browser

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/portability demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks chaos
	$(BIN)/ruff format --check src tests benchmarks chaos
	$(BIN)/mypy
	$(BIN)/lint-imports

# The status page test drives Debian's headless Chromium; install it where it is missing
# (it skips, saying why, where that is not possible).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the status page test"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) \
			>/dev/null 2>&1 || echo "could not install chromium: its test will be skipped"; }

# The tests run in parallel processes, each with its own embedded broker and PostgreSQL
# database: most of their time is waiting (group joins, processes starting), so more workers
# than cores pay off (measured on two cores: docs/development.md). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 4

# PYTHONDONTWRITEBYTECODE emptied for the tests: with it set, every worker and every role
# process the tests start compiles (and pytest rewrites) each module again, seconds of CPU each.
test: lint browser
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(ARGS)

# The chaos suite (docs/chaos.md): every role as a process under crashes, pauses, scaling and
# outages, judged by an oracle that shares no code with the pipeline; a few minutes.
chaos: $(STAMP)
	$(BIN)/python -m chaos $(ARGS)

broker: $(STAMP)
	$(BIN)/portability broker

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
