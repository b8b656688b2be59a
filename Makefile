# The README's commands.  Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FASHION_MNIST := /usr/share/datasets/fashion-mnist
# EPOCHS=N overrides the number of epochs (default: 10 on Fashion-MNIST, 60 on digits).
EPOCHS ?=

.PHONY: run test fashion-mnist clean

$(BIN)/pytest: setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $@

# Installs the Debian package with the Fashion-MNIST files when possible; without it the run
# says so and uses scikit-learn's bundled digits.
fashion-mnist:
	@if [ -d $(FASHION_MNIST) ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "Installing Fashion-MNIST (Debian package dataset-fashion-mnist)"; \
		(apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && \
		  apt-get install -y -qq dataset-fashion-mnist >/dev/null 2>&1)) || \
		echo "Could not install dataset-fashion-mnist; the run will use the bundled digits."; \
	else \
		echo "Fashion-MNIST is not installed and installing Debian packages needs root;" \
		     "the run will use the bundled digits (sudo apt-get install dataset-fashion-mnist)."; \
	fi

run: $(BIN)/pytest fashion-mnist
	$(BIN)/pyro-bnn train --method sparse-vd --arch lenet-300-100 --data auto \
		$(if $(EPOCHS),--epochs $(EPOCHS)) --output runs/sparse-vd-lenet-300-100 --overwrite

test: $(BIN)/pytest
	$(BIN)/pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
