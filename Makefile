# Two commands for a newcomer (Python 3.10+ with venv, git; no GPU needed):
#   make book   set up .venv, then build the book into _build/html (warnings are errors)
#   make test   set up .venv, then the package's tests, every notebook under nbval, the reader's
#               path (each chapter alone in a bare environment, from its own first cell), and
#               the build
# Developers with an environment of their own: make test VENV=/path/to/venv
# The set-up runs once: a stamp file in the venv records it, and is redone when
# requirements.txt or pyproject.toml change.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.effnet-tutorial-installed
BUILD := $(BIN)/jupyter-book build . -W -n --keep-going

# Only the venv's own packages: no user site, no inherited PYTHONPATH.
export PYTHONNOUSERSITE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1
unexport PYTHONPATH

.PHONY: book test setup clean

book: $(STAMP)
	$(BUILD)
	@echo
	@echo "The book is built. Open file://$(CURDIR)/_build/html/index.html in a browser."

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests --ignore=tests/reader_path
	BOOK_SMOKE=1 $(BIN)/python -m pytest -n 2 --dist loadfile --nbval-lax --nbval-current-env -p no:cacheprovider book/
	READER_PATH=1 $(BIN)/python -m pytest -n 2 --durations=0 -p no:cacheprovider tests/reader_path
	$(BUILD)

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install -e .
	@touch $@

clean:
	rm -rf _build
