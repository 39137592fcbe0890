"""Responses kept on disk (`run.cache=true`), so that a resumed, repeated or widened sweep never pays
twice for the same call.

A response is keyed by the request as it would be sent: the model id, the messages and every decoding
setting (a SHA-256 of their canonical JSON; the server's address is not part of it, so a server moved
to another port still hits). Every call's answer is decided by its request: greedy decoding, or
sampling with the call's own seed, which the request carries (generation.seed is always set); failed
calls are never kept. One SQLite file under `run.output_root` serves every run there, from
many threads and processes at once (a joblib sweep): SQLite's write-ahead log and busy timeout.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from dataclasses import asdict, fields
from pathlib import Path

from mascompare.backends.base import Completion

CACHE_FILE = "response_cache.sqlite"
KEPT_FIELDS = [f.name for f in fields(Completion) if f.name not in ("error", "usage_source")]


def request_key(params: dict) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class ResponseCache:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()  # one connection shared by the request threads
        self._db = sqlite3.connect(self.path, timeout=60, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, model TEXT, completion TEXT)")
        self.hits = self.misses = 0

    def get(self, params: dict) -> Completion | None:
        """The kept completion for this request, marked usage_source="cache", or None."""
        with self._lock:
            row = self._db.execute("SELECT completion FROM responses WHERE key = ?", (request_key(params),)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return Completion(**json.loads(row[0]), usage_source="cache")

    def put(self, params: dict, completion: Completion) -> None:
        if completion.error:
            return
        kept = {name: value for name, value in asdict(completion).items() if name in KEPT_FIELDS}
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO responses VALUES (?, ?, ?)",
                             (request_key(params), str(params.get("model")), json.dumps(kept)))

    def close(self) -> None:
        with self._lock:
            self._db.close()
