# The README's commands.  `make test` builds .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: test clean

$(BIN)/pytest: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

test: $(BIN)/pytest
	$(BIN)/pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
