# Two entry points for a new user: `make repro` (set up, then the whole pipeline) and
# `make test` (set up, then the test suite). Both create .venv on first use.
VENV ?= .venv
BIN := $(VENV)/bin
# faiss-gpu where a CUDA driver is present, faiss-cpu elsewhere
FAISS := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)

.PHONY: setup repro test clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$(FAISS),dev]'
	touch $@

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

test: setup
	$(BIN)/python -m pytest -q

clean-venv:
	rm -rf $(VENV)
