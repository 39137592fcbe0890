"""The records a run writes, as typed structures with one schema version and one upgrade path.

- `UsageRecord`: one model call (or local forward block) for one sample: what it was sent, what it cost.
- `Usage`: the sums over a sample's calls.
- `SampleRecord`: one line of samples.jsonl: a sample's answer, its scoring and its calls.
- `Summary`: the figures of a run (stats.summarize computes them from sample records).
- `RunRecord`: run.json: what ran, where, on what, and its summary.

Every record is written with `schema: SCHEMA_VERSION`. `from_json` is the one way in: it reads records of
this version and every older one (version 1: written before the version field existed, with fewer fields), and
refuses records written by a newer version. Unknown fields of a known version are ignored, so a reader never
fails on an addition. It is also the one place that judges whether a line or file is a record at all: every
known field must have its declared type (every integer in a record is a count or an index, so none is
negative), and what is not a record raises `DamagedRecord`, whose message says which field is wrong and how.
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import MISSING, asdict, dataclass, fields
from datetime import datetime, timezone

from mascompare.errors import UserError

SCHEMA_VERSION = 2  # 1: records written before the version field; 2: this layout
TOKEN_FIELDS = ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens", "latent_steps",
                "kv_positions_received", "forward_passes")
# Why a call's decoding ended: "eos" (the model ended its turn), "length" (max_new_tokens reached), "stop" (a stop
# marker, e.g. the plain format's next turn), "error" (the call failed); None for a block that decodes nothing.
FINISH_REASONS = ("eos", "length", "stop", "error")


class NewerRecord(UserError):
    """A record written by a newer version of mascompare."""


class DamagedRecord(ValueError):
    """A line or file that is not a record of any version; the message names the field and what is wrong with it
    ("repeat must be a non-negative integer, got 'x'"), for the reader to place in its own sentence."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _known(cls, raw: dict) -> dict:
    """The fields of `raw` that `cls` has (a reader ignores additions)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


def _check_version(raw, what: str) -> None:
    if not isinstance(raw, dict):
        raise DamagedRecord(f"it is not a JSON object but {_kind(raw)}")
    version = raw.get("schema", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise DamagedRecord(f"schema must be a positive integer, got {_shown(version)}")
    if version > SCHEMA_VERSION:
        raise NewerRecord(f"{what} has record schema {version!r}, newer than this mascompare reads "
                          f"({SCHEMA_VERSION}); upgrade mascompare to read it.")


def _built(cls, raw, prefix: str = "", nested: dict | None = None):
    """An instance of the record class `cls` from its JSON object, every known field checked against its type;
    `nested` holds the fields already built from records of their own (usage, agents, ...)."""
    if type(raw) is dict and _whole(cls, tuple(nested or ()))(raw):  # the usual case: a record as written
        # its fields set as __init__ sets them (the record classes have no __post_init__ and no default
        # factories), in three dict updates rather than a keyword argument per field
        record = object.__new__(cls)
        state = record.__dict__
        state.update(_defaults(cls))
        state.update(raw)
        if nested:
            state.update(nested)
        names = _schema(cls)[0]
        if len(state) > len(names):  # a reader ignores additions
            for name in [name for name in state if name not in names]:
                del state[name]
        return record
    # otherwise the field checks one by one, to say which field is wrong and how
    if not isinstance(raw, dict):
        raise DamagedRecord(f"{prefix.rstrip('.') or 'it'} must be a JSON object, got {_kind(raw)}")
    checks, required = _schema(cls)
    values = {}
    for name, value in raw.items():
        if name in checks:  # a reader ignores additions
            if not checks[name](value) and not (nested and name in nested):
                raise DamagedRecord(f"{prefix}{name} must be {_described(_hints(cls)[name])}, got {_shown(value)}")
            values[name] = value
    if nested:
        values.update(nested)
    missing = [name for name in required if name not in values]
    if missing:
        raise DamagedRecord(f"it lacks {', '.join(prefix + name for name in missing)}")
    return cls(**values)


@functools.cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


@functools.cache
def _schema(cls) -> tuple[dict, tuple]:
    """Each field's check, and the fields without a default, in order."""
    checks = {f.name: _check(_hints(cls)[f.name]) for f in fields(cls)}
    required = tuple(f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING)
    return checks, required


@functools.cache
def _defaults(cls) -> dict:
    # _built sets a record's fields without its __init__: nothing else may happen there
    assert all(f.default_factory is MISSING for f in fields(cls)) and "__post_init__" not in vars(cls), cls
    return {f.name: f.default for f in fields(cls) if f.default is not MISSING}


@functools.cache
def _whole(cls, nested: tuple[str, ...]):
    """One compiled test of a JSON object: whether it has every required field of `cls` and each of its known
    fields has the declared type, as _check judges them (the fields in `nested` are built apart and skipped).

    Reading samples.jsonl builds several records per line, tens of thousands for a comparison; a single
    expression per class does in one call what a check per field does in twenty, the way dataclasses writes
    each class's __init__. When it says no, _built's field-by-field checks find the field and the words."""
    helpers: dict = {"_absent": MISSING}
    _, required = _schema(cls)
    tests = []
    for f in fields(cls):
        if f.name in nested:
            continue
        test = _test_source(_hints(cls)[f.name], helpers)
        fetched = f"(v := get({f.name!r}, _absent))"
        tests.append(f"({fetched} is not _absent and {test})" if f.name in required
                     else f"({fetched} is _absent or {test})")
    source = "def whole(raw):\n    get = raw.get\n    return (" + (" and\n            ".join(tests) or "True") + ")\n"
    exec(compile(source, f"<record test of {cls.__name__}>", "exec"), helpers)
    return helpers["whole"]


def _test_source(hint, helpers: dict) -> str:
    """_check(hint) as an expression on `v`: inline for plain values, a call to _check's test for lists and
    objects of typed items."""
    tests = []
    for member in _members(hint):
        origin = typing.get_origin(member) or member
        if member is type(None):
            tests.append("v is None")
        elif member is bool:
            tests.append("v is True or v is False")
        elif member is int:
            tests.append("(type(v) is int and v >= 0)")
        elif member is float:
            tests.append("type(v) is int or type(v) is float")
        elif member is str:
            tests.append("type(v) is str")
        elif origin in (list, dict) and typing.get_args(member):
            name = f"_items_{len(helpers)}"
            helpers[name] = _check(member)
            tests.append(f"{name}(v)")
        elif origin is list:
            tests.append("type(v) is list")
        else:  # a JSON object, or a record of its own: built and checked by its class
            tests.append("type(v) is dict")
    return "(" + " or ".join(tests) + ")"


def _members(hint) -> tuple:
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _check(hint):
    """Whether a JSON value has the declared type (an integer is a count or an index: never negative)."""
    checks = []
    for member in _members(hint):
        origin, args = typing.get_origin(member) or member, typing.get_args(member)
        if member is type(None):
            checks.append(lambda value: value is None)
        elif member is bool:
            checks.append(lambda value: value is True or value is False)
        elif member is int:
            checks.append(lambda value: type(value) is int and value >= 0)
        elif member is float:
            checks.append(lambda value: type(value) in (int, float))
        elif member is str:
            checks.append(lambda value: type(value) is str)
        elif origin is list:
            item = _check(args[0]) if args else None
            checks.append(lambda value, item=item: type(value) is list and (item is None or all(map(item, value))))
        elif origin is dict:
            item = _check(args[1]) if args else None
            checks.append(lambda value, item=item: type(value) is dict
                          and (item is None or all(map(item, value.values()))))
        else:  # a record of its own: built and checked by its class
            checks.append(lambda value: type(value) is dict)
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2 and type(None) in _members(hint):  # `X | None`, the common union: no generator per value
        check = checks[1 - _members(hint).index(type(None))]
        return lambda value: value is None or check(value)
    return lambda value: any(check(value) for check in checks)


TYPE_WORDS = {int: "a non-negative integer", float: "a number", str: "a string", bool: "true or false",
              type(None): "null", list: "a list", dict: "a JSON object"}


def _described(hint) -> str:
    words = []
    for member in _members(hint):
        origin, args = typing.get_origin(member) or member, typing.get_args(member)
        if origin is list and args:
            words.append(f"a list of {_described(args[0]).removeprefix('a ').removeprefix('an ')}s")
        elif origin is dict and args:
            words.append(f"a JSON object of {_described(args[1]).removeprefix('a ').removeprefix('an ')}s")
        else:
            words.append(TYPE_WORDS.get(origin, "a JSON object"))
    return " or ".join(words)


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true or false", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:39] + "…"


@dataclass
class Turn:
    """One step of a sample's transcript."""

    agent: str
    role: str
    round: int
    text: str | None  # None when the agent thought in latent space and wrote nothing


@dataclass
class UsageRecord:
    sample_id: str
    agent: str  # the agent's name in the method (e.g. "planner", "solver_2")
    role: str  # the role it plays (e.g. "planner", "judger", "answerer")
    round: int = 0
    input_tokens: int = 0  # prompt tokens this call processed for this sample
    cached_input_tokens: int = 0  # of input_tokens, those the server read from its prompt cache
    output_tokens: int = 0  # decoded (generated) tokens
    reasoning_tokens: int = 0  # of output_tokens, hidden reasoning the server reports separately
    latent_steps: int = 0  # latent thoughts generated without decoding
    kv_positions_received: int = 0  # KV-cache positions handed over from earlier agents
    forward_passes: int = 0  # model forward calls for this block (prefill + steps)
    wall_time_s: float = 0.0  # this sample's share of the call's wall time
    usage_source: str = "local_count"  # "api" | "local_count" | "estimate" | "cache" (answered by run.cache, not sent)
    cost_usd: float | None = None  # None when the price is unknown
    phase: str = "eval"  # "eval", or e.g. "calibration" for work done before evaluation
    finish_reason: str | None = None  # one of FINISH_REASONS; None for a block that decodes nothing
    seed: int | None = None  # the call's sampling seed (None when decoding is greedy)
    prompt_hash: str | None = None  # accounting.prompt_hash(messages)
    messages: list | None = None  # the chat messages sent (the store keeps shared texts once per run)
    # latent agents: of kv_positions_received, how many came from each earlier agent (by name)
    kv_received_from: dict[str, int] | None = None
    # an agent that reads numeric_hint: the answers it was shown from the agents it reads
    hint: list[str] | None = None
    # an agent with execute: true: how running its reply's code ended ({ending, status, appended, seconds})
    execution: dict | None = None

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict, prefix: str = "") -> "UsageRecord":
        return _built(cls, raw, prefix)


@dataclass
class Usage:
    """Token, call, time and cost totals over a sample's calls; cost is None if any call's price is unknown."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0
    latent_steps: int = 0
    kv_positions_received: int = 0
    forward_passes: int = 0
    context_tokens: int = 0  # input tokens plus the KV positions received: what the outputs could attend to
    calls: int = 0
    decoding_calls: int = 0  # calls that decode (latent thinking decodes nothing)
    calls_at_max_new_tokens: int = 0  # decoding calls cut off at generation.max_new_tokens
    wall_time_s: float = 0.0
    cost_usd: float | None = None

    @classmethod
    def of(cls, records: list[UsageRecord]) -> "Usage":
        totals = {name: sum(getattr(r, name) for r in records) for name in TOKEN_FIELDS}
        costs = [r.cost_usd for r in records]
        return cls(**totals, context_tokens=totals["input_tokens"] + totals["kv_positions_received"],
                   calls=len(records), decoding_calls=sum(r.finish_reason is not None for r in records),
                   calls_at_max_new_tokens=sum(r.finish_reason == "length" for r in records),
                   wall_time_s=sum(r.wall_time_s for r in records),
                   cost_usd=None if not costs or any(c is None for c in costs) else sum(costs))

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict, prefix: str = "usage.") -> "Usage":
        usage = _built(cls, raw, prefix)
        # version 1 lines written before these figures existed
        if "context_tokens" not in raw:
            usage.context_tokens = usage.input_tokens + usage.kv_positions_received
        if "decoding_calls" not in raw:
            usage.decoding_calls = usage.calls  # every call decoded then
        return usage


@dataclass
class SampleRecord:
    """One line of samples.jsonl: one sample (and repeat) answered, scored or failed.

    A failed sample keeps whatever its method produced, has `error` set and no scoring; it is run again on resume.
    """

    id: str
    repeat: int  # which of run.repeats (0 when there is one)
    batch: int | None  # the batch (or streamed task) it ran in; None in version 1 lines written before batches
    target: str | None
    error: str | None
    usage: Usage
    agents: list[UsageRecord]  # every call, in order
    transcript: list[Turn]
    final_text: str | None
    question_hash: str | None = None
    target_hash: str | None = None
    extracted_strict: str | None = None
    extracted_flexible: str | None = None
    correct_strict: bool | None = None
    correct_flexible: bool | None = None
    extractor_version: str | None = None
    wall_time_s: float | None = None
    diagnostics: dict | None = None  # what a method measured of this sample (e.g. latent norms)
    metadata: dict | None = None  # the task's metadata of the sample
    score_details: dict | None = None  # how scoring went (code tasks: how each program ended)
    schema: int = SCHEMA_VERSION

    @property
    def key(self) -> tuple[str, int]:
        return self.id, self.repeat

    @property
    def failed(self) -> bool:
        return bool(self.error)

    def correct(self, metric: str) -> bool:
        return bool(self.correct_strict if metric == "strict" else self.correct_flexible)

    def to_json(self) -> dict:
        line = {"schema": self.schema, "id": self.id, "repeat": self.repeat, "batch": self.batch}
        for f in fields(self):
            if f.name not in line:
                line[f.name] = getattr(self, f.name)
        line["usage"] = self.usage.to_json()
        line["agents"] = [call.to_json() for call in self.agents]
        line["transcript"] = [asdict(turn) for turn in self.transcript]
        return line

    @classmethod
    def from_json(cls, raw: dict, where: str = "a sample record") -> "SampleRecord":
        """A line of any known schema version; raises DamagedRecord when it is not a record, NewerRecord when a
        newer mascompare wrote it."""
        _check_version(raw, where)
        # version 1 lines were written before run.repeats and batches, and may lack what a failure never had
        upgraded = {"repeat": 0, "batch": None, "target": None, "error": None, "final_text": None, **raw,
                    "schema": SCHEMA_VERSION}
        nested = {"usage": Usage.from_json(_optional(raw, "usage", dict) or {}),
                  "agents": [UsageRecord.from_json(call, f"agents[{k}].")
                             for k, call in enumerate(_optional(raw, "agents", list) or [])],
                  "transcript": [_built(Turn, turn, f"transcript[{k}].")
                                 for k, turn in enumerate(_optional(raw, "transcript", list) or [])]}
        return _built(cls, upgraded, nested=nested)


@dataclass
class Summary:
    """A run's figures over its latest sample records (see stats.summarize)."""

    n: int = 0  # scored answers (samples x repeats)
    errors: int = 0  # failed ones
    samples: int = 0  # distinct samples scored
    repeats: int = 0
    accuracy_strict: float | None = None
    accuracy_strict_ci95: list[float] | None = None
    accuracy_flexible: float | None = None
    accuracy_flexible_ci95: list[float] | None = None
    accuracy_strict_per_repeat: list[float | None] | None = None  # only with several repeats
    accuracy_flexible_per_repeat: list[float | None] | None = None
    mean_input_tokens: float | None = None
    mean_context_tokens: float | None = None
    mean_output_tokens: float | None = None
    mean_latent_steps: float | None = None
    mean_calls: float | None = None
    mean_forward_passes: float | None = None
    mean_time_per_sample_s: float | None = None
    time_per_sample_s_ci95: list[float] | None = None
    decoding_calls: int = 0
    calls_at_max_new_tokens: int = 0
    cost_usd: float | None = None
    cost_usd_spent: float | None = None  # with run.max_cost_usd: every attempt and the calibration

    OPTIONAL = ("accuracy_strict_per_repeat", "accuracy_flexible_per_repeat", "cost_usd_spent")

    def accuracy(self, metric: str) -> float | None:
        return self.accuracy_strict if metric == "strict" else self.accuracy_flexible

    def to_json(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None or k not in self.OPTIONAL}

    @classmethod
    def from_json(cls, raw: dict | None) -> "Summary":
        return _built(cls, raw or {}, "summary.")


@dataclass
class RunRecord:
    """run.json: rewritten whole at each change of the run's state."""

    status: str  # running | finished | stopped
    run_dir: str
    task: str
    method: str
    model: str
    backend: str
    config: dict  # the resolved config, secrets masked
    config_hash: str
    started: str | None = None
    finished: str | None = None
    samples_total: int | None = None
    repeats: int = 1
    samples_resumed: int = 0
    environment: dict | None = None  # environment.describe: what the run ran on
    method_info: dict | None = None  # what the method reports beyond the samples (e.g. calibration, graph)
    task_info: dict | None = None  # what the task reports of its scoring (e.g. the code sandbox)
    backend_info: dict | None = None  # what the backend reports of the run (e.g. checks of its fast path)
    backend_reused: bool | None = None  # a sweep's earlier job had the model loaded already
    model_load_s: float | None = None
    batch_size: int | None = None
    stop_reason: str | None = None
    summary: Summary | None = None
    schema: int = SCHEMA_VERSION

    def to_json(self) -> dict:
        record = {f.name: getattr(self, f.name) for f in fields(self)}
        record["summary"] = self.summary.to_json() if self.summary is not None else None
        return record

    @classmethod
    def from_json(cls, raw: dict, where: str = "run.json") -> "RunRecord":
        """run.json of any known schema version; raises DamagedRecord when it is not one, NewerRecord when a newer
        mascompare wrote it."""
        _check_version(raw, where)
        summary = _optional(raw, "summary", dict)
        return _built(cls, {**raw, "schema": SCHEMA_VERSION},
                      nested={"summary": Summary.from_json(summary) if summary is not None else None})


def _optional(raw: dict, name: str, kind: type):
    """raw[name], which must be a `kind` (a JSON object or list) or null; None where it is null or absent."""
    value = raw.get(name)
    if value is not None and not isinstance(value, kind):
        raise DamagedRecord(f"{name} must be {TYPE_WORDS[kind]} or null, got {_shown(value)}")
    return value

