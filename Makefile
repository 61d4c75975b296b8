# Two commands for a new user: `make demo` and `make test`. Each sets itself up on a fresh
# machine (a .venv with the project installed) before it runs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.semisam-installed
TORCH ?= torch==2.14.1 torchvision==0.29.1

.PHONY: demo test install lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/semisam demo --workdir demo-out

test: $(STAMP)
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf demo-out .pytest_cache
