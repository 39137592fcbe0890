"""A backend kept between the runs of a sweep (mascompare/backends/__init__.py): reused while the backend
and model configs are equal, replaced (and closed) when they change; the response cache per run."""

from mascompare.app import compose_config
from mascompare.backends import KeptBackend, open_backend, release_backend
from mascompare.backends.hf import HFBackend
from mascompare.settings import validate


def configs(tiny_model_dir, *extra):
    settings = validate(compose_config(f"model.path={tiny_model_dir}", "model.name=tiny", *extra))
    return settings.backend, settings.model


def test_equal_configs_reuse_the_backend_and_other_configs_replace_it(tiny_model_dir):
    kept = KeptBackend()
    first, reused = kept.get(*configs(tiny_model_dir))
    assert isinstance(first, HFBackend) and not reused
    again, reused = kept.get(*configs(tiny_model_dir, "method=text_mas", "generation.seed=3"))
    assert again is first and reused and kept.loads == 1  # method and decoding are not the backend's business
    other, reused = kept.get(*configs(tiny_model_dir, "backend.dtype=float32"))
    assert other is not first and not reused and kept.loads == 2 and kept.backend is other
    kept.close()
    assert kept.backend is None


def test_a_kept_backend_outlives_its_run_and_a_plain_one_is_closed(monkeypatch, tmp_path):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-unused")
    cfg = validate(compose_config("model=gpt-4o-mini", "backend.base_url=http://127.0.0.1:9/v1", "run.cache=true",
                                  f"run.output_root={tmp_path}"))
    kept = KeptBackend()
    backend, _ = open_backend(cfg.run, cfg.backend, cfg.model, kept)
    assert backend.cache is not None and (tmp_path / "response_cache.sqlite").is_file()
    release_backend(backend, kept)
    assert backend.cache is None and not backend._pool._closed  # still open for the sweep's next run
    plain, reused = open_backend(cfg.run.model_copy(update={"cache": False}), cfg.backend, cfg.model)
    assert plain.cache is None and not reused
    release_backend(plain)
    assert plain._pool._closed
    kept.close()
    assert backend._pool._closed
