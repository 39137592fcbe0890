"""What a GPU machine without this project's environment needs to run bench/fast_path.py and bench/latent_vs_text.py.

Such a machine has torch and transformers but not necessarily hydra-core, omegaconf (which the hf backend imports)
or the embedded model. The hf backend imports pydantic (2.x) as well, whose core is compiled for one Python, so the
kit does not carry it: the GPU machine needs it installed. This writes .gpu_kit/ (git-ignored, about 5 MB):
- smollm2-tokenizer/: the SmolLM2 tokenizer, saved without the model;
- site/: hydra, omegaconf and antlr4 (their runtime) copied as installed here: pure Python, any Python 3.

    .venv/bin/python bench/gpu_kit.py

Then on the GPU machine, from the repository's root, with .gpu_kit carried along:
    PYTHONPATH=$PWD:$PWD/.gpu_kit/site python3 bench/fast_path.py --tokenizer .gpu_kit/smollm2-tokenizer ...
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

from transformers import AutoTokenizer

from mascompare.app import compose_config
from mascompare.backends.models import resolve
from mascompare.settings import ModelSettings

KIT = Path(__file__).resolve().parent.parent / ".gpu_kit"
PACKAGES = ("hydra", "omegaconf", "antlr4")


def main():
    shutil.rmtree(KIT, ignore_errors=True)
    # the embedded model (converted once, then read from its cache)
    source = resolve(ModelSettings.of(compose_config().model, "model"))
    AutoTokenizer.from_pretrained(source.path).save_pretrained(KIT / "smollm2-tokenizer")
    for name in PACKAGES:
        package = Path(importlib.import_module(name).__file__).parent
        shutil.copytree(package, KIT / "site" / name, ignore=shutil.ignore_patterns("__pycache__"))
    size = sum(f.stat().st_size for f in KIT.rglob("*") if f.is_file())
    print(f"{KIT}: {size / 1e6:.1f} MB ({', '.join(PACKAGES)} and the {source.name} tokenizer)")


if __name__ == "__main__":
    main()
