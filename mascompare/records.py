"""The records a run writes, as typed structures with one schema version and one upgrade path.

- `UsageRecord`: one model call (or local forward block) for one sample: what it was sent, what it cost.
- `Usage`: the sums over a sample's calls.
- `SampleRecord`: one line of samples.jsonl: a sample's answer, its scoring and its calls.
- `Summary`: the figures of a run (stats.summarize computes them from sample records).
- `RunRecord`: run.json: what ran, where, on what, and its summary.

Every record is written with `schema: SCHEMA_VERSION`. `from_json` is the one way in: it reads records of
this version and every older one (version 1: written before the version field existed, with fewer fields), and
refuses records written by a newer version. Unknown fields of a known version are ignored, so a reader never
fails on an addition.
"""

from __future__ import annotations

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


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _known(cls, raw: dict) -> dict:
    """The fields of `raw` that `cls` has (a reader ignores additions)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in raw.items() if k in names}


def _check_version(raw: dict, what: str) -> None:
    version = raw.get("schema", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version > SCHEMA_VERSION:
        raise NewerRecord(f"{what} has record schema {version!r}, newer than this mascompare reads "
                          f"({SCHEMA_VERSION}); upgrade mascompare to read it.")


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
    def from_json(cls, raw: dict) -> "UsageRecord":
        return cls(**_known(cls, raw))


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
    def from_json(cls, raw: dict) -> "Usage":
        values = _known(cls, raw)
        # version 1 lines written before these figures existed
        values.setdefault("context_tokens", values.get("input_tokens", 0) + values.get("kv_positions_received", 0))
        values.setdefault("decoding_calls", values.get("calls", 0))  # every call decoded then
        return cls(**values)


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
        """A line of any known schema version; raises KeyError, TypeError or ValueError when it is not a record."""
        if not isinstance(raw, dict):
            raise TypeError(f"a JSON object was expected, got {type(raw).__name__}")
        _check_version(raw, where)
        values = _known(cls, raw)
        values["schema"] = SCHEMA_VERSION
        values.setdefault("repeat", 0)  # version 1 lines written before run.repeats
        values.setdefault("batch", None)
        for name in ("target", "error", "final_text"):
            values.setdefault(name, None)
        values["usage"] = Usage.from_json(raw.get("usage") or {})
        values["agents"] = [UsageRecord.from_json(call) for call in raw.get("agents") or []]
        values["transcript"] = [Turn(**_known(Turn, turn)) for turn in raw.get("transcript") or []]
        record = cls(**values)
        if not isinstance(record.id, str) or not isinstance(record.repeat, int):
            raise TypeError(f"id must be a string and repeat an integer, got {record.id!r} and {record.repeat!r}")
        return record


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
        values = _known(cls, raw or {})
        for key, value in values.items():
            if key.endswith("_ci95") and value is not None:
                values[key] = list(value)
        return cls(**values)


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
        """run.json of any known schema version; raises KeyError, TypeError or ValueError when it is not one."""
        if not isinstance(raw, dict):
            raise TypeError(f"a JSON object was expected, got {type(raw).__name__}")
        _check_version(raw, where)
        values = _known(cls, raw)
        missing = [f.name for f in fields(cls) if f.default is MISSING and f.name not in values]
        if missing:  # named in words: a reader's message shows it
            raise ValueError(f"it lacks {', '.join(missing)}")
        values["schema"] = SCHEMA_VERSION
        values["summary"] = Summary.from_json(raw["summary"]) if isinstance(raw.get("summary"), dict) else None
        return cls(**values)

