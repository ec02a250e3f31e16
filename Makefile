# resq: `make run` starts everything; `make test` runs every check CI runs.
# Both bootstrap .venv themselves. uv (installed into .venv/tools) makes a fresh install take
# seconds; where uv cannot be installed, pip does the same job more slowly.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/tools/bin/uv
RUN_DEPS := $(VENV)/.run-deps
DEV_DEPS := $(VENV)/.dev-deps
PIP_QUIET := --quiet --disable-pip-version-check

define install
	if [ -x $(UV) ]; then \
		$(UV) pip install --quiet --python $(PY) $(1); \
	else \
		$(PY) -m ensurepip --upgrade >/dev/null && $(PY) -m pip install $(PIP_QUIET) $(1); \
	fi
endef

.PHONY: run test lint typecheck pytest bench clean

$(PY):
	$(PYTHON) -m venv --without-pip $(VENV)
	-$(PYTHON) -m pip install $(PIP_QUIET) --target $(VENV)/tools uv

$(RUN_DEPS): pyproject.toml | $(PY)
	@$(call install,-e .)
	@touch $@

$(DEV_DEPS): $(RUN_DEPS)
	@$(call install,-e '.[dev]')
	@touch $@

run: $(RUN_DEPS)
	exec $(PY) -m shared.launcher

lint: $(DEV_DEPS)
	$(VENV)/bin/ruff check api worker shared tests
	$(VENV)/bin/ruff format --check api worker shared tests

typecheck: $(DEV_DEPS)
	$(VENV)/bin/mypy api worker shared

pytest: $(DEV_DEPS)
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(DEV_DEPS)
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
