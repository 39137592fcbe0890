"""Secret-looking keys and values are masked in configs, overrides, messages and logs."""

import logging

import pytest

from mascompare.masking import is_secret_key, mask_config, mask_override, redact, redact_logs, secret_values


@pytest.mark.parametrize("key", ["api_key", "backend.apikey", "+backend.apiKey", "hf_token", "token", "password",
                                 "client_secret", "auth", "private_key", "credentials"])
def test_secret_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize("key", ["max_new_tokens", "eos_token_id", "token_limit_param", "tokenizer", "input",
                                 "keys", "author", "monkey", "api_key_file", "token_path"])
def test_ordinary_keys(key):
    assert not is_secret_key(key)


def test_mask_config_and_overrides():
    masked = mask_config({"backend": {"api_key": "sk-1", "apikey": "sk-2", "base_url": "u", "token": None},
                          "list": [{"password": "p"}]})
    assert masked == {"backend": {"api_key": "***", "apikey": "***", "base_url": "u", "token": None},
                      "list": [{"password": "***"}]}
    assert mask_override("+backend.apikey=sk-abc") == "+backend.apikey=***"
    assert mask_override("backend={name: openai, api_key: sk-abc}") == "backend={name: openai, api_key: ***}"
    assert mask_override("task.limit=3") == "task.limit=3"


def test_secret_values_and_redaction():
    values = secret_values(["+backend.apikey=sk-abc123", "backend={name: openai, api_key: 'sk-xyz789'}",
                            "task.limit=3", "hf_token=${oc.env:X}"])
    assert values == ["sk-abc123", "sk-xyz789"]
    assert redact("bad key sk-abc123 and sk-xyz789", values) == "bad key *** and ***"


def test_log_records_are_redacted(caplog, monkeypatch):
    from mascompare import masking

    monkeypatch.setattr(masking, "_logged_secrets", set())
    factory = logging.getLogRecordFactory()
    try:
        redact_logs(["sk-logged-secret"])
        redact_logs(["sk-second-secret"])  # added to the same factory
        assert logging.getLogRecordFactory().__name__ == "factory"
        with caplog.at_level(logging.INFO):
            logging.getLogger("any").info("request with %s and %s", "sk-logged-secret", "sk-second-secret")
        assert "secret" not in caplog.text and "request with *** and ***" in caplog.text
    finally:
        logging.setLogRecordFactory(factory)
