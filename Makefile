# Two commands for a new user: `make demo` and `make test`. Each sets itself up on a fresh
# machine (a .venv with the project installed) before it runs.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.semisam-installed
TORCH ?= torch==2.14.1 torchvision==0.29.1
PYRIGHT ?= pyright[nodejs]==1.1.414

# The project is installed in setuptools' strict editable mode: a link tree under build/ with one
# symlink per module, which static tools (pyright, editors) can follow, unlike the default mode's
# import hook (README.md, "How imports resolve, and why"). A link tree only holds the modules
# that existed when it was built, so the install is redone when the list of modules (or the link
# tree itself) changes.
MODULES := $(VENV)/.semisam-modules
LIST_MODULES = { find semisam schemas store workers pipeline training -name '*.py' \
	-not -path '*/__pycache__/*'; ls build/__editable__.semisam-*/semisam/__init__.py 2>/dev/null; \
	} | LC_ALL=C sort

.PHONY: demo test install lint lock bench clean FORCE

$(MODULES): FORCE
	@mkdir -p $(VENV)
	@$(LIST_MODULES) > $@.new
	@if cmp -s $@.new $@; then rm -f $@.new; else mv $@.new $@; fi

# constraints.txt pins every package to the set the suite last passed on: without it pip's resolver
# can backtrack through the test extra's many releases for half an hour and give up.
$(STAMP): pyproject.toml constraints.txt $(MODULES)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt $(TORCH)
	$(PY) -m pip install -q -c constraints.txt -e '.[test]' --config-settings editable_mode=strict
	@$(LIST_MODULES) > $(MODULES)
	touch $(STAMP)

$(VENV)/bin/pyright: $(STAMP)
	$(PY) -m pip install -q '$(PYRIGHT)'
	touch $@

install: $(STAMP)

# Rewrite constraints.txt from a fresh venv resolved without it (after a dependency change).
lock:
	rm -rf .lock-venv && python3 -m venv .lock-venv
	.lock-venv/bin/pip install -q --upgrade pip
	.lock-venv/bin/pip install -q $(TORCH)
	.lock-venv/bin/pip install -q '.[test]'
	{ head -n 2 constraints.txt; .lock-venv/bin/pip freeze --exclude-editable | grep -v '^semisam'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .lock-venv

demo: $(STAMP)
	$(VENV)/bin/semisam demo --workdir demo-out

test: $(STAMP)
	$(VENV)/bin/pytest -q

# ruff, then pyright (pyrightconfig.json): every import must resolve, for product code, tests
# and benchmarks. Only import resolution (and syntax) fails the check; pyright's type findings are
# warnings, printed only when the check fails.
lint: $(STAMP) $(VENV)/bin/pyright
	$(VENV)/bin/ruff check .
	@$(VENV)/bin/pyright > $(VENV)/.pyright.txt; rc=$$?; \
	if [ $$rc -ne 0 ] || grep -q 'is unknown import symbol' $(VENV)/.pyright.txt; then \
	  grep -E ' error: |is unknown import symbol' $(VENV)/.pyright.txt; tail -n 1 $(VENV)/.pyright.txt; exit 1; \
	else echo "pyright: every import resolves ($$(tail -n 1 $(VENV)/.pyright.txt))"; fi

clean:
	rm -rf demo-out .pytest_cache
