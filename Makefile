# Two commands do all the set-up: `make train` (the main job) and `make test` (the test suite).
# Both create .venv on first use (re-installed when pyproject.toml or setup_env.sh changes) and are safe to re-run.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
CONFIG ?= replica_unheard.yaml
ARGS ?=

.PHONY: setup train test lint

setup: $(STAMP)

$(STAMP): pyproject.toml scripts/setup_env.sh
	PYTHON=$(PYTHON) bash scripts/setup_env.sh $(VENV)
	touch $(STAMP)

train: setup
	$(PY) scripts/train_ppo.py --config $(CONFIG) $(ARGS)

lint: setup
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

test: lint
	$(PY) -m pytest -q $(ARGS)
