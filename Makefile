# The front door: `make serve` and `make test` each create or update .venv as needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamp files: reinstall only when pyproject.toml changes.
# The chat extra compiles llama.cpp for the offline LLM (minutes, once); without it the voice
# chat needs an OpenAI-compatible endpoint (chat.llm_base_url).
$(VENV)/.serve-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[chat]' || { \
		echo "llama.cpp did not build: the voice chat needs chat.llm_base_url"; \
		$(BIN)/python -m pip install --quiet -e .; }
	touch $@

# torch first, pinned to the CPU build (on local disk here): the higgs extra in [test] would
# otherwise pull a multi-GB CUDA build. The Higgs tests run tiny models on the CPU. The chat
# extra too, so that the embedded LLM's tests run; where llama.cpp cannot build they are skipped.
$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test,chat]' || { \
		echo "llama.cpp did not build: the embedded LLM's tests will be skipped"; \
		$(BIN)/python -m pip install --quiet -e '.[test]'; }
	touch $@

serve: $(VENV)/.serve-installed
	$(BIN)/voxserve serve

lint: $(VENV)/.test-installed
	$(BIN)/ruff check voxserve tests bench

test: lint
	$(BIN)/python -m pytest

bench: $(VENV)/.test-installed
	$(BIN)/python bench/core.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
