# The front door: `make serve` and `make test` each create or update .venv as needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Every install takes its versions from constraints.txt, so two fresh installs are the same.
# `make constraints` writes it anew from what .venv holds.
PIP := $(BIN)/python -m pip install --quiet --constraint constraints.txt

# llama.cpp (the embedded chat LLM) built for any x86-64 CPU with AVX2, not for the build
# machine's CPU: a native build made on one CPU segfaulted on another (AVX-512 and AMX). Never
# taken from pip's wheel cache, which may hold a build made with other flags.
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
	-DGGML_AVX512=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
else
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF
endif

.PHONY: serve test lint bench constraints clean unasync kokoro-torch chatterbox

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Compiling takes several minutes, once per virtual environment.
$(VENV)/.llama-built: constraints.txt | $(BIN)/python
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" FORCE_CMAKE=1 $(PIP) --no-cache-dir \
		--no-binary llama-cpp-python llama-cpp-python
	touch $@

# Stamp files: reinstall only when pyproject.toml or the constraints change. Without llama.cpp
# the server still runs; its voice chat then needs an endpoint (chat.llm_base_url).
$(VENV)/.serve-installed: pyproject.toml constraints.txt | $(BIN)/python
	$(MAKE) $(VENV)/.llama-built || echo "llama.cpp did not build: the voice chat needs chat.llm_base_url"
	if [ -f $(VENV)/.llama-built ]; then $(PIP) -e '.[chat]'; else $(PIP) -e .; fi
	touch $@

# torch first, the CPU build (on local disk here): the higgs extra in [test] would otherwise pull
# a multi-GB CUDA build. The Higgs tests run tiny models on the CPU. The tests need the embedded
# LLM: if llama.cpp does not build, `make test` fails rather than skipping its tests.
$(VENV)/.test-installed: pyproject.toml constraints.txt $(VENV)/.llama-built | $(BIN)/python
	$(PIP) torch
	$(PIP) -e '.[test,chat]'
	$(PIP) --no-deps kokoro misaki
	$(PIP) --no-deps chatterbox-tts s3tokenizer resemble-perth
	touch $@

# Kokoro on PyTorch (GPUs): its extra, then kokoro and misaki without their dependencies (see
# pyproject.toml's kokoro-torch).
kokoro-torch: | $(BIN)/python
	$(PIP) -e '.[kokoro-torch]'
	$(PIP) --no-deps kokoro misaki

# Chatterbox: its extra, then chatterbox-tts, s3tokenizer and resemble-perth without their
# dependencies (see pyproject.toml's chatterbox).
chatterbox: | $(BIN)/python
	$(PIP) -e '.[chatterbox]'
	$(PIP) --no-deps chatterbox-tts s3tokenizer resemble-perth

serve: $(VENV)/.serve-installed
	$(BIN)/voxserve serve

lint: $(VENV)/.test-installed
	$(BIN)/ruff check voxserve tests bench scripts

test: lint
	$(BIN)/python -m pytest

# The blocking client is made from the async one: run this after changing
# voxserve/client/_async.py (tests/test_unasync.py fails while they differ).
unasync: | $(BIN)/python
	$(BIN)/python scripts/unasync.py

bench: $(VENV)/.test-installed
	$(BIN)/python bench/core.py

constraints: $(VENV)/.test-installed
	{ echo "# Pinned versions for every install (make constraints writes this anew)."; \
	  $(BIN)/python -m pip freeze --exclude-editable | LC_ALL=C sort -f; } > constraints.txt

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
