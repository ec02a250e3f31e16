# resq: `make run` starts everything; `make test` runs every check CI runs.
# Both bootstrap .venv themselves. uv (installed into .venv/tools) makes a fresh install take
# seconds; where uv cannot be installed, pip does the same job more slowly.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
UV := $(VENV)/tools/bin/uv
RUN_DEPS := $(VENV)/.run-deps
DEV_DEPS := $(VENV)/.dev-deps
CHROMIUM := $(VENV)/.chromium
COMPOSE := $(VENV)/.compose
PIP_QUIET := --quiet --disable-pip-version-check

define install
	if [ -x $(UV) ]; then \
		$(UV) pip install --quiet --python $(PY) $(1); \
	else \
		$(PY) -m ensurepip --upgrade >/dev/null && $(PY) -m pip install $(PIP_QUIET) $(1); \
	fi
endef

.PHONY: run cli test lint typecheck pytest bench clean

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
	exec $(PY) -m ops.launcher

# The operator CLI against the running stack: `make cli ARGS="queue --watch"`.
cli: $(RUN_DEPS)
	@$(VENV)/bin/resq $(ARGS)

lint: $(DEV_DEPS)
	$(VENV)/bin/ruff check api worker shared ops tests bench
	$(VENV)/bin/ruff format --check api worker shared ops tests bench

typecheck: $(DEV_DEPS)
	$(VENV)/bin/mypy api worker shared ops bench

# Headless Chromium (Debian's /usr/bin/chromium) for the dashboard's browser test. Where it
# cannot be installed the test skips, or fails under CI=true; the stamp waits for a success.
$(CHROMIUM): | $(PY)
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "could not install chromium: the dashboard test will skip (fail under CI=true)"
	@if command -v chromium >/dev/null; then touch $@; fi

# Docker Compose (Debian's docker-compose) for `docker compose config` on the compose file; the
# Docker client alone has no compose command, and no engine is needed for `config`.
$(COMPOSE): | $(PY)
	@docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose >/dev/null) \
		|| echo "could not install docker-compose: the compose test will skip (fail under CI=true)"
	@if docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null; then touch $@; fi

pytest: $(DEV_DEPS) $(CHROMIUM) $(COMPOSE)
	$(PY) -m pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(DEV_DEPS)
	$(PY) -m bench.run $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
