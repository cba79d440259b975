# Two entry points for a new user: `make repro` (set up, then the whole pipeline) and
# `make test` (set up, then the test suite). Both create .venv on first use.
VENV ?= .venv
BIN := $(VENV)/bin
# faiss-gpu where a CUDA driver is present, faiss-cpu elsewhere
FAISS := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)

.PHONY: setup browser repro test clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[$(FAISS),dev]'
	touch $@

repro: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/dvc repro

# tests/test_serve.py drives the page with Debian's Chromium (nothing downloads a browser):
# installed here when missing and we are root (as in CI), else that one test is skipped
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	  else echo "note: no chromium/chromium-driver and not root: the browser test will be skipped"; fi; fi

test: setup browser
	$(BIN)/python -m pytest -q --durations=10

clean-venv:
	rm -rf $(VENV)
