# Two entry points for a new user: `make repro` (set up, then the whole pipeline) and
# `make test` (set up, then the test suite). Both create .venv on first use.
VENV ?= .venv
BIN := $(VENV)/bin
VEGA := .vega
# faiss-gpu where a CUDA driver is present, faiss-cpu elsewhere
FAISS := $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)

.PHONY: setup browser repro test clean-venv wheels perf-gpu

setup: $(VENV)/.installed $(VEGA)/dvc_plots.html

$(VENV)/.installed: pyproject.toml
	@echo "setup: creating $(VENV) and installing the project with PyTorch (about 6 GB the first time: minutes)"
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar on -e '.[$(FAISS),dev,ray]'
	touch $@

# `dvc plots show` offline: DVC's page loads Vega from a CDN; these are the same npm packages, inlined in
# the page template that .dvc/config.local names (pipeline/tools/plots_page.py). Without npm, the page
# still draws its PNGs, and its curves only with network.
$(VEGA)/dvc_plots.html: $(VENV)/.installed pipeline/tools/plots_page.py
	@if ! command -v npm >/dev/null 2>&1; then \
	  echo "note: no npm: \`dvc plots show\` will load Vega from its CDN (the curves need network)"; \
	elif echo "setup: Vega for offline plots, from the npm registry" && mkdir -p $(VEGA) && \
	  npm pack --silent --pack-destination $(VEGA) $$($(BIN)/python -m pipeline.tools.plots_page packages) >/dev/null && \
	  $(BIN)/python -m pipeline.tools.plots_page build $(VEGA); then \
	  $(BIN)/dvc config --local plots.html_template ../$(VEGA)/dvc_plots.html; \
	else echo "note: could not fetch Vega with npm: \`dvc plots show\` will load it from its CDN"; fi

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
	$(BIN)/ruff check pipeline stages tests
	$(BIN)/python -m pytest -q --durations=10

clean-venv:
	-$(BIN)/dvc config --local --unset plots.html_template 2>/dev/null
	rm -rf $(VENV) $(VEGA)

# The GPU machine reaches no registry and lacks these (its python3 has torch and the rest):
# `make wheels` here downloads them for its Python 3.12 into .whl/, which a device call carries
# (BENCHMARKS.md, "GPU"). Versions as in this project's .venv; wcwidth is an abi3 x86-64 wheel.
GPU_WHEELS := open_clip_torch==3.3.0 ftfy==6.3.1 wcwidth==0.9.4
GPU_PLATFORMS := $(foreach p,manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux1,--platform $(p)_x86_64)

wheels: .whl/.done

.whl/.done: Makefile
	rm -rf .whl
	python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  $(GPU_PLATFORMS) -d .whl $(GPU_WHEELS)
	touch $@

# On the GPU machine, after `make wheels` here and with .whl carried: the wheels go to a scratch
# path (the project is not installed there), then `lincir perf gpu` writes its report to $OUT
# (logs/perf_gpu without one). Here: `make perf-gpu PY=.venv/bin/python ARGS=--dry-run`.
PY ?= python3
perf-gpu:
	$(PY) -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
	PYTHONPATH=/tmp/site:$(CURDIR) PYTHONUNBUFFERED=1 TQDM_DISABLE=1 $(PY) -m pipeline.tools.perf gpu $(ARGS)
