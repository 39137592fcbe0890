"""What a GPU machine without this project's environment needs to run bench/fast_path.py and bench/latent_vs_text.py.

Such a machine has torch and transformers but not necessarily hydra-core, omegaconf, pydantic (which the hf backend
imports), rich or the embedded model, and it reaches no package index. This writes .gpu_kit/ (git-ignored, about 17 MB):
- smollm2-tokenizer/: the SmolLM2 tokenizer, saved without the model;
- site/: hydra, omegaconf and antlr4 (their runtime) copied as installed here: pure Python, any Python 3;
- wheels/: pydantic and rich as installed here, with their dependencies, for CPython 3.10 to 3.13 on x86-64 Linux
  (pydantic's core is compiled for one Python), to install there without an index.

    .venv/bin/python bench/gpu_kit.py

Then on the GPU machine, from the repository's root, with .gpu_kit carried along:
    python3 -c "import pydantic, rich" 2>/dev/null || python3 -m pip install -q --no-index --find-links \
        .gpu_kit/wheels pydantic rich
    PYTHONPATH=$PWD:$PWD/.gpu_kit/site python3 bench/fast_path.py --tokenizer .gpu_kit/smollm2-tokenizer ...
"""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from transformers import AutoTokenizer

from mascompare.app import compose_config
from mascompare.backends.models import resolve
from mascompare.settings import ModelSettings

KIT = Path(__file__).resolve().parent.parent / ".gpu_kit"
PACKAGES = ("hydra", "omegaconf", "antlr4")
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-extensions", "typing-inspection",
          "rich", "markdown-it-py", "mdurl", "pygments")  # rich prints the benchmarks' tables
PYTHONS = ("3.10", "3.11", "3.12", "3.13")


def main():
    shutil.rmtree(KIT, ignore_errors=True)
    # the embedded model (converted once, then read from its cache)
    source = resolve(ModelSettings.of(compose_config().model, "model"))
    AutoTokenizer.from_pretrained(source.path).save_pretrained(KIT / "smollm2-tokenizer")
    for name in PACKAGES:
        package = Path(importlib.import_module(name).__file__).parent
        shutil.copytree(package, KIT / "site" / name, ignore=shutil.ignore_patterns("__pycache__"))
    for python in PYTHONS:  # the versions installed here, built for each Python the GPU machine may have
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
                        "--python-version", python, "--platform", "manylinux2014_x86_64", "--dest", str(KIT / "wheels"),
                        *(f"{name}=={version(name)}" for name in WHEELS)], check=True)
    size = sum(f.stat().st_size for f in KIT.rglob("*") if f.is_file())
    print(f"{KIT}: {size / 1e6:.1f} MB ({', '.join(PACKAGES)}, wheels of {', '.join(WHEELS)} for Python "
          f"{', '.join(PYTHONS)}, and the {source.name} tokenizer)")


if __name__ == "__main__":
    main()
