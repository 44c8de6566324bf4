# Scout's set-up, run and test commands. `make run` and `make test` each set up what
# they need first (a virtualenv with pinned dependencies; for tests also Chromium and PostgreSQL), so
# each is the one command to use on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --quiet --disable-pip-version-check
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test

.PHONY: setup setup-test run serve test test-fast lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Runtime: the pinned claude-agent-sdk brings its own Claude Code CLI; on Linux its OS
# sandbox for Bash needs bubblewrap and socat (installed with apt when missing).
$(STAMP): $(PY) setup.cfg constraints.txt
	$(PIP) install -c constraints.txt -e .
	scripts/install-sandbox.sh
	touch $@

$(TSTAMP): $(STAMP)
	$(PIP) install -c constraints.txt -e '.[test]'
	PYTHON=$(PY) scripts/install-browser.sh
	scripts/install-postgres.sh
	touch $@

setup: $(STAMP)

setup-test: $(TSTAMP)

## make run: set up and start the API (:8000) and the chat UI (:7860)
run: $(STAMP)
	$(PY) run_servers.py

serve: $(STAMP)
	$(PY) -m scout.server

# The fast layer: no server, no Claude Code; the rules, the store contract, the event fold,
# the worker spec and the module layers, in seconds.
FAST_TESTS := tests/test_vocab.py tests/test_store_contract.py tests/test_reducer.py \
              tests/test_taskspec.py tests/test_layers.py tests/test_supervisor_states.py

## make test-fast: the fast layer alone (seconds)
test-fast: $(TSTAMP)
	$(PY) -m pytest -q -p no:cacheprovider $(FAST_TESTS)

## make lint: ruff and mypy on scout/ (versions pinned in constraints.txt)
lint: $(TSTAMP)
	$(PY) -m ruff check scout/
	$(PY) -m mypy

## make test: set up, lint, run the fast layer, then every other test (pytest's "no tests
## collected" counts as failure here only if it is not exit 5; see .ci/run)
test: lint test-fast
	$(PY) -m pytest -q -p no:cacheprovider $(addprefix --ignore=,$(FAST_TESTS)); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; exit $$rc

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .pytest_cache
