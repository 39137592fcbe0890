"""The response cache on its own: what decides a hit, what is never kept, and sharing one file.

Runs that pay nothing twice, against a real server, are in tests/integration/test_openai_server.py.
"""

import sqlite3
import threading

import pytest

from conftest import decoding
from mascompare.backends.base import Completion
from mascompare.backends.response_cache import CACHE_FILE, ResponseCache, request_key
from mascompare.errors import UserError

PARAMS = {"model": "served-model", "messages": [{"role": "user", "content": "2+2?"}], "max_tokens": 16,
          "temperature": 0.0, "seed": 42}


@pytest.fixture
def cache(tmp_path):
    kept = ResponseCache(tmp_path / CACHE_FILE)
    yield kept
    kept.close()


def test_a_kept_response_comes_back_marked_as_cached(cache):
    assert cache.get(PARAMS) is None
    cache.put(PARAMS, Completion("4", 20, 2, usage_source="api", cached_prompt_tokens=8, reasoning_tokens=1))
    hit = cache.get(PARAMS)
    assert hit == Completion("4", 20, 2, usage_source="cache", cached_prompt_tokens=8, reasoning_tokens=1)
    assert (cache.hits, cache.misses) == (1, 1)


@pytest.mark.parametrize("change", [
    {"model": "other-model"},
    {"messages": [{"role": "user", "content": "2+3?"}]},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]},
    {"max_tokens": 17},
    {"temperature": 0.7},
    {"seed": 43},
    {"top_p": 0.9},
    {"extra_body": {"top_k": 20}},
])
def test_model_messages_and_every_decoding_setting_decide_the_key(cache, change):
    cache.put(PARAMS, Completion("4", 20, 2))
    assert request_key({**PARAMS, **change}) != request_key(PARAMS)
    assert cache.get({**PARAMS, **change}) is None


def test_key_ignores_the_order_of_settings():
    assert request_key(dict(reversed(list(PARAMS.items())))) == request_key(PARAMS)


def test_failed_calls_are_never_kept(cache):
    cache.put(PARAMS, Completion("", 0, 0, usage_source="api", error="HTTP 400: prompt too long"))
    assert cache.get(PARAMS) is None


def test_every_call_is_decided_by_its_request_so_every_call_may_be_kept():
    with pytest.raises(UserError, match="generation.seed must be an integer from 0 to"):
        decoding(temperature=0.8, seed=None)  # every sampled call is seeded: an unseeded one cannot be configured


def test_one_file_serves_other_processes_and_threads(tmp_path):
    first = ResponseCache(tmp_path / CACHE_FILE)
    first.put(PARAMS, Completion("4", 20, 2))
    second = ResponseCache(tmp_path / CACHE_FILE)  # as another sweep job would open it
    assert second.get(PARAMS).text == "4"
    threads = [threading.Thread(target=second.put, args=({**PARAMS, "seed": k}, Completion(str(k), 1, 1)))
               for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [first.get({**PARAMS, "seed": k}).text for k in range(8)] == [str(k) for k in range(8)]
    first.close()
    second.close()
    with sqlite3.connect(tmp_path / CACHE_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM responses").fetchone() == (9,)
