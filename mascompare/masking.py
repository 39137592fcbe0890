"""Secrets never leave the process: config keys that look like secrets are masked wherever they are shown or saved.

A key is secret-looking when one of its underscore-separated words names a credential (api_key,
apikey, secret, password, token, auth, credentials, ...), whatever the section, so that a key a
user adds by hand (`+backend.apikey=...`) is masked as surely as the documented backend.api_key.
`eos_token_id` or `max_tokens` are not secret: "token" counts only as a key's last word.
"""

from __future__ import annotations

import logging
import re

MASK = "***"
SECRET_WORDS = {"apikey", "secret", "password", "passwd", "passphrase", "credential", "credentials", "auth",
                "authorization", "bearer"}
KEY_PAIRS = {("api", "key"), ("private", "key"), ("secret", "key"), ("access", "key")}
WHERE_WORDS = {"file", "path", "dir", "env", "var"}
MIN_SECRET_LENGTH = 4  # shorter values would mask ordinary text


def is_secret_key(key: str) -> bool:
    words = re.split(r"[_\-]", str(key).lower().rsplit(".", 1)[-1].lstrip("+~"))
    if words[-1] in WHERE_WORDS:  # backend.api_key_file names where the secret is, not the secret
        return False
    if SECRET_WORDS & set(words) or words[-1] == "token" or words == ["key"]:
        return True
    return any(pair in KEY_PAIRS for pair in zip(words, words[1:]))


def mask_config(node):
    """A copy of a plain config (dicts and lists) with every secret-looking key's value masked."""
    if isinstance(node, dict):
        return {k: (MASK if is_secret_key(k) and v not in (None, "") else mask_config(v)) for k, v in node.items()}
    if isinstance(node, list):
        return [mask_config(v) for v in node]
    return node


def mask_override(text: str) -> str:
    """`key=value` with the value masked when the key is secret-looking (also inside a {k: v} value)."""
    key, sep, value = str(text).partition("=")
    if sep and is_secret_key(key):
        return f"{key}={MASK}"
    return SECRET_IN_MAPPING.sub(lambda m: f"{m.group(1)}{MASK}" if is_secret_key(m.group(2)) else m.group(0),
                                 str(text))


# `api_key: sk-...` or `"token": "..."` inside a mapping written on the command line
SECRET_IN_MAPPING = re.compile(r"""(['"]?([\w\-]+)['"]?\s*:\s*)(?=\S)((?:'[^']*'|"[^"]*"|[^,}\s]+))""")


def secret_values(overrides: list[str]) -> list[str]:
    """The values of secret-looking keys written on the command line, for redacting messages."""
    values = []
    for text in overrides:
        key, sep, value = text.partition("=")
        if sep and is_secret_key(key):
            values.append(value.strip("'\""))
        for match in SECRET_IN_MAPPING.finditer(value if sep else text):
            if is_secret_key(match.group(2)):
                values.append(match.group(3).strip("'\""))
    return [v for v in values if len(v) >= MIN_SECRET_LENGTH and not v.startswith("${")]


def redact(text: str, values: list[str]) -> str:
    for value in sorted(set(values), key=len, reverse=True):
        text = text.replace(value, MASK)
    return text


_logged_secrets: set[str] = set()


def redact_logs(values: list[str]) -> None:
    """Mask these values in every log record from now on, whichever handler (console, run.log) writes it.

    A record factory, unlike a handler filter, survives Hydra configuring the handlers afresh for each job.
    It is installed once; later calls add values to it.
    """
    first = not _logged_secrets
    _logged_secrets.update(v for v in values if len(v) >= MIN_SECRET_LENGTH)
    if not first or not _logged_secrets:
        return
    make_record = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = make_record(*args, **kwargs)
        message = record.getMessage()
        if any(v in message for v in _logged_secrets):
            record.msg, record.args = redact(message, list(_logged_secrets)), ()
        return record

    logging.setLogRecordFactory(factory)
