# `make demo` and `make test` do all set-up on a fresh machine.
# `make demo` installs only what the app runs; `make test` adds the test tools on top.
VENV   ?= .venv
PY     := $(VENV)/bin/python
APP_STAMP  := $(VENV)/.installed-app
TEST_STAMP := $(VENV)/.installed-test
HOST   ?= 127.0.0.1
PORT   ?= 7860

.PHONY: demo test install install-test clean-venv

install: $(APP_STAMP)
install-test: $(TEST_STAMP)

$(APP_STAMP): requirements.txt requirements-nodeps.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -r requirements-nodeps.txt
	touch $(APP_STAMP)

$(TEST_STAMP): $(APP_STAMP) requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(TEST_STAMP)

demo: $(APP_STAMP)
	$(PY) app.py --host $(HOST) --port $(PORT)

test: $(TEST_STAMP)
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
