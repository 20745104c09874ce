# Everything a fresh Debian/Ubuntu machine needs (Python, gcc, make) to run
# kvmbench: `make lab` prepares and opens the workbench, `make test` tests it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: lab test guests bench probe clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,lab]'
	touch $@

## lab: install everything, register the kernel, open JupyterLab on notebooks/
lab: $(STAMP)
	$(BIN)/kvmbench lab

## test: the whole test suite
test: $(STAMP)
	$(BIN)/python -m pytest

## guests: rebuild the bundled guest ELFs from kvmbench/guests/src
guests:
	$(MAKE) -C kvmbench/guests

bench: $(STAMP)
	$(BIN)/kvmbench bench

probe: $(STAMP)
	$(BIN)/kvmbench probe

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
