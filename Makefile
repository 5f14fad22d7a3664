# One virtual environment for running and testing; set-up is a prerequisite of both.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: run test setup clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

# Headless Chromium renders the operations report in its test (Debian's package).
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends chromium

run: setup  ## the default search on this machine: make run ARGS="cluster=... storage=s3 ..."
	$(PY) -m tuner.run +search=resnet $(ARGS)

test: setup $(CHROMIUM)  ## format and lint check, strict type check, then the whole suite, slow multi-node tests included
	$(PY) -m ruff format --check --quiet .
	$(PY) -m ruff check --quiet .
	$(PY) -m mypy
	$(PY) -m pytest $(ARGS)

clean:
	rm -rf outputs .pytest_cache
