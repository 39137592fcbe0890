#!/usr/bin/env bash
# The GPU measurements in one command, on a machine with torch and transformers and .gpu_kit/ beside this
# repository (made here by `.venv/bin/python bench/gpu_kit.py`): the fast path against eager at the Qwen3-4B and
# Qwen3-8B shapes (random weights, bf16; batch 8 first, then 1 and 32, so a cut loses the least), then
# latent_mas against text_mas on CUDA. Under ten minutes; the outputs go to $OUT (default: bench/results/gpu).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/gpu}
mkdir -p "$OUT"
python3 -c "import pydantic, rich" 2>/dev/null \
    || python3 -m pip install -q --no-index --find-links .gpu_kit/wheels pydantic rich
export PYTHONPATH=$PWD:$PWD/.gpu_kit/site PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/device.txt"
python3 -c "import sys, torch, transformers; print('Python', sys.version.split()[0], 'torch', torch.__version__,
'transformers', transformers.__version__)" | tee -a "$OUT/device.txt"
timeout 430 python3 bench/fast_path.py --random-shape qwen3-4b qwen3-8b --batches 8 1 32 --skip-hierarchical \
    --tokenizer .gpu_kit/smollm2-tokenizer --device cuda --budget-s 300 | tee "$OUT/fast_path.txt"
timeout 140 python3 bench/latent_vs_text.py --random-shape qwen3-4b --tokenizer .gpu_kit/smollm2-tokenizer \
    --device cuda --structure both --limit 16 --max-new-tokens 64 | tee "$OUT/latent_vs_text.txt"
