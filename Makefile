# Every target builds its own virtualenv, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3
VENV ?= .venv
AIRFLOW_VERSION ?= 3.3.2
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
STAMP := $(VENV)/.installed-airflow-$(AIRFLOW_VERSION)
PYTEST_ARGS ?=

.PHONY: install test lint demo bench bench-peers clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv
	$(UV) pip install --quiet --python $(PY) "apache-airflow==$(AIRFLOW_VERSION)" -e ".[test,lint,bench]"
	touch $@

# The official SDKs are the emulator's conformance oracles: test against their newest releases, so that a
# field a new release requires shows up as a failing test (tests/testing/sdk_oracle.py), never as drift.
test: $(STAMP)
	$(UV) pip install --quiet --python $(PY) --upgrade-package openai --upgrade-package openrouter \
		"apache-airflow==$(AIRFLOW_VERSION)" -e ".[test]" \
		|| echo "make test: could not look for newer openai/openrouter releases; testing the installed ones"
	$(PY) -c 'import importlib.metadata as m; print("SDK oracles: openai", m.version("openai"), "openrouter", m.version("openrouter"))'
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check airflow_openrouter tests example_dags bench
	$(VENV)/bin/ruff format --check airflow_openrouter tests example_dags bench
	$(VENV)/bin/mypy airflow_openrouter

demo: $(STAMP)
	$(PY) -m example_dags.demo

bench: $(STAMP)
	$(PY) -m bench

bench-peers: $(STAMP)
	$(PY) -m bench --peers

clean:
	rm -rf $(VENV) .venv-* .pytest_cache .mypy_cache .ruff_cache
