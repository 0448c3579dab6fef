# fluxid: two commands do all set-up on a fresh machine (Python 3.11, no GPU, no model hub).
#   make demo   create .venv and run analyze -> train -> evaluate on the built-in demo profile
#   make test   create .venv and run every check CI runs (it changes no tracked file)
#   make screenshot  refresh docs/dashboard.png, the README's picture, from the browser test
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fluxid-installed

.PHONY: demo test venv check-sync nbtest pytest bench clean browser screenshot

venv: $(STAMP)

# torch first, from the CPU build on local disk: anything that depends on torch would otherwise pull a CUDA build
$(STAMP): requirements.txt constraints.txt setup.py settings.ini
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --config-settings editable_mode=compat -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

demo: $(STAMP)
	$(BIN)/python -m fluxid_nb.cli demo

# notebooks clean and the package in sync with them: neither step may change a tracked file
check-sync: $(STAMP)
	@before="$$(git status --porcelain -- nbs fluxid_nb | md5sum) $$(git diff -- nbs fluxid_nb | md5sum)"; \
	$(BIN)/nbdev_clean; $(BIN)/nbdev_export; \
	after="$$(git status --porcelain -- nbs fluxid_nb | md5sum) $$(git diff -- nbs fluxid_nb | md5sum)"; \
	if [ "$$before" != "$$after" ]; then echo "nbdev_clean/nbdev_export changed files: commit clean notebooks and the exported package"; git status --short -- nbs fluxid_nb; exit 1; fi; \
	echo "notebooks clean, package in sync"

nbtest: $(STAMP)
	$(BIN)/nbdev_test --n_workers 2

# Debian's chromium + chromium-driver for tests/test_dashboard_browser.py (idempotent; root, as on CI)
browser:
	bash .ci/install-browser.sh

pytest: $(STAMP) browser
	$(BIN)/python -m pytest tests -q

test: check-sync nbtest pytest

# the browser test saves its screenshots in its temporary folder; README_SCREENSHOT=1 also copies the training view
# to docs/dashboard.png (no other target writes to docs/)
screenshot: $(STAMP) browser
	README_SCREENSHOT=1 $(BIN)/python -m pytest tests/test_dashboard_browser.py -q

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) output .cache
