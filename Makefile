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

test: $(STAMP)
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
