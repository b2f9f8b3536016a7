# Make targets for a local checkout. Each target creates the virtual environment it needs.
#
# PyTorch is installed first, from TORCH_SPEC, so that the project's own "torch>=2.4"
# requirement is already met and pip never resolves it to a multi-GB CUDA build on a
# machine that has no GPU. Override either variable for another machine, for example:
#   make test TORCH_SPEC=torch TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
#   make test TORCH_SPEC=torch          # the default PyPI build (CUDA on Linux x86_64)

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX_URL ?=
PYTEST_ARGS ?=

BIN := $(VENV)/bin
TORCH_INDEX_OPTION := $(if $(TORCH_INDEX_URL),--index-url $(TORCH_INDEX_URL),)

.PHONY: install install-test study test docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet $(TORCH_INDEX_OPTION) "$(TORCH_SPEC)"
	touch $@

install: $(VENV)/.torch
	$(BIN)/python -m pip install --quiet -e .

install-test: $(VENV)/.torch
	$(BIN)/python -m pip install --quiet -e ".[test,triton,docs]"

# The main job: compare positional encodings on the built-in corpus.
study: install
	$(BIN)/ropekit study

# The whole test suite. Exit code 5 means pytest collected no test, which is not a failure.
test: install-test
	$(BIN)/python -m pytest $(PYTEST_ARGS) || [ $$? -eq 5 ]

# The documentation site, built offline into site/ from docs/ and the docstrings.
docs: $(VENV)/.torch
	$(BIN)/python -m pip install --quiet -e ".[docs]"
	$(BIN)/python -m mkdocs build --strict

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .hypothesis
