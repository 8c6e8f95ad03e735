# `make demo` and `make test` each create .venv if missing, install, and run.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BROWSER_STAMP := $(VENV)/.browser

.PHONY: demo test test-all check install clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[cpu,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/amcoedge demo

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

test-all: $(STAMP) $(BROWSER_STAMP)
	$(PY) -m pytest -q

# The dashboard's browser test (tests/e2e/test_ui_browser.py) drives the system's chromium
# through the system's chromedriver with Selenium; nothing downloads a browser.
$(BROWSER_STAMP): $(STAMP)
	@if ! test -x /usr/bin/chromium || ! test -x /usr/bin/chromedriver; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	  else \
	    echo "the browser test needs chromium and chromium-driver: apt-get install chromium chromium-driver (as root)" >&2; \
	    exit 1; \
	  fi; \
	fi
	$(PY) -m pip install -q -c constraints.txt -e '.[cpu,dev,browser]'
	touch $(BROWSER_STAMP)

check: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
