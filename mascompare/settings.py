"""Every config value, typed and checked once, before anything loads or is written.

Each config section has one schema: `Section` subclasses (pydantic models, strict: a string is not a number
and a number is not a flag). The shared sections are here (generation lives in generation.py); a method, task
or backend declares its own section as its `Settings` class. `validate(cfg)` builds them all from a composed
config and checks what spans sections; the first bad value ends it with one sentence naming the key, what it
holds and what would be right, taken from the field's description.

Defaults live in conf/ only: a key that every preset of a section has is required here, so a key missing from
conf/ is an error, not a silent value from code; only keys that some presets leave out (a model preset's price,
an API preset's tokenizer) are optional, and absent means "none".
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from omegaconf import OmegaConf
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mascompare.errors import UserError
from mascompare.tracking import TRACKERS
from mascompare.tracking import check as check_tracking

# --- the schema base and its one kind of error ------------------------------------------------------------


class Section(BaseModel):
    """A config section's typed settings. Unknown keys are ignored here (a preset may carry keys its schema does
    not read; one added on the command line with + is refused before, see `unread_key`); known ones must have the
    declared type and range."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    @classmethod
    def of(cls, node, where: str):
        """The section `where` (e.g. "method") of a composed config as typed settings; one UserError otherwise."""
        data = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node
        try:
            return cls.model_validate(data)
        except ValidationError as error:
            raise UserError(explain(error, cls, where)) from None


def wanted(description: str, **constraints) -> Any:
    """A field whose error message says it must be `description` (what would be right, in words)."""
    return Field(description=description, **constraints)


PositiveInt = Annotated[int, wanted("an integer of at least 1", ge=1)]
NonNegativeInt = Annotated[int, wanted("a non-negative integer", ge=0)]
Flag = Annotated[bool, wanted("true or false")]
NonNegativeNumber = Annotated[float, wanted("a non-negative number", ge=0)]
PositiveSeconds = Annotated[float, wanted("a positive number of seconds", gt=0)]
Text = Annotated[str, wanted("a string")]


def explain(error: ValidationError, schema: type[BaseModel], where: str) -> str:
    """One sentence for the first problem pydantic found: '<key> must be <description>, got <value>.'"""
    problem = error.errors()[0]
    location = [str(part) for part in _keys(schema, problem["loc"])]
    key = ".".join([where, *location]) if location else where
    if problem["type"] == "value_error":  # a cross-field check in a model validator: its message is the sentence
        return str(problem["ctx"]["error"])
    if problem["type"] == "missing":
        loc = problem["loc"]
        mapping = _description(schema, loc[:-1]) if len(loc) > 1 and isinstance(loc[-2], str) else None
        if mapping:  # a mapping the user wrote (e.g. +model.price={input: 1}) lacks a key: say what it must be
            return f"{key.rpartition('.')[0]} must be {mapping}, got {_shown(problem['input'])}."
        return f"{key} is missing; conf/ sets a default for every key, so check that {where}'s preset is complete."
    description = _description(schema, problem["loc"]) or problem["msg"].lower()
    return f"{key} must be {description}, got {_shown(problem['input'])}."


def _keys(schema, loc) -> list:
    """The config keys of a location: field names, list indexes and mapping keys, without the names pydantic
    gives the members of a union it tried ('constrained-int', "literal['auto']", ...)."""
    keys, annotation = [], schema
    for part in loc:
        model = _model_in(annotation)
        if model is not None and isinstance(part, str) and part in model.model_fields:
            keys.append(part)
            annotation = model.model_fields[part].annotation
        elif isinstance(part, int) or (isinstance(part, str) and _mapping_value(annotation) is not None):
            keys.append(part)
            annotation = _item_type(annotation) or annotation
    return keys


def _shown(value) -> str:
    if isinstance(value, dict) and not value:
        return "{}"
    return repr(value)


def _description(schema, loc) -> str | None:
    """The description of the field at `loc` in `schema`, following nested sections, lists and mappings."""
    annotation: Any = schema
    found = None
    for part in loc:
        model = _model_in(annotation)
        if model is not None and isinstance(part, str) and part in model.model_fields:
            info = model.model_fields[part]
            found, annotation = info.description, info.annotation
            continue
        if isinstance(part, int) or (isinstance(part, str) and _mapping_value(annotation) is not None):
            inner = _item_type(annotation)
            if inner is not None:
                annotation = inner
                found = _annotated_description(inner) or found
    return found or _annotated_description(annotation) or _choices(annotation)


def _model_in(annotation):
    for candidate in _members(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _members(annotation) -> list:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) for m in _members(arg)]
    return [annotation]


def _item_type(annotation):
    for member in _members(annotation):
        origin = typing.get_origin(member)
        if origin in (list, tuple, set, frozenset):
            return typing.get_args(member)[0]
        if origin is dict:
            return typing.get_args(member)[1]
    return None


def _mapping_value(annotation):
    return next((typing.get_args(m)[1] for m in _members(annotation) if typing.get_origin(m) is dict), None)


def _annotated_description(annotation) -> str | None:
    if typing.get_origin(annotation) is Annotated:
        for extra in typing.get_args(annotation)[1:]:
            if getattr(extra, "description", None):
                return extra.description
    return None


def _choices(annotation) -> str | None:
    values = [v for m in _members(annotation) if typing.get_origin(m) is Literal for v in typing.get_args(m)]
    return "one of " + ", ".join(map(str, values)) if values else None


def choice(values: tuple[str, ...], extra: str = "") -> Any:
    """A field that takes one of `values` (a tuple of constants defined once, where they are used)."""
    return wanted("one of " + ", ".join(values) + extra)


# --- the shared sections ----------------------------------------------------------------------------------

METRICS = ("strict", "flexible")
ON_BUSY = ("stop", "wait")
MAX_SEED = 2**63 - 1  # torch and the APIs take 64-bit seeds


class RunSettings(Section):
    batch_size: Annotated[Union[PositiveInt, Literal["auto"]], wanted("a positive integer or auto")]
    repeats: PositiveInt
    output_root: Annotated[str, wanted("a directory path", min_length=1, pattern=r"\S")]
    primary_metric: Annotated[Literal[METRICS], choice(METRICS)]
    resume: Flag
    progress: Flag
    max_cost_usd: Annotated[float | None, wanted("a non-negative number of US dollars or null", ge=0)]
    dry_run: Flag
    cache: Flag
    on_busy: Annotated[Literal[ON_BUSY], choice(ON_BUSY)]
    tracking: Annotated[Literal[TRACKERS] | None, wanted("null or one of " + ", ".join(TRACKERS))]
    threads: Annotated[Union[PositiveInt, Literal["auto"]], wanted("a positive integer or auto")]


class TaskCommon(Section):
    """What every task section has: conf/config.yaml adds `offset` to each."""

    name: Text
    offset: NonNegativeInt


class PriceSettings(Section):
    model_config = ConfigDict(strict=True, frozen=True, extra="forbid")
    input: NonNegativeNumber
    output: NonNegativeNumber
    cached_input: Annotated[float | None, wanted("a non-negative number or null", ge=0)] = None  # optional key


class EmbeddedSettings(Section):
    package: Text
    gguf: Text
    chunks: Annotated[list[str] | None, wanted("null or a list of '<package>/<path>' chunk files")] = None
    sha256: Annotated[str | None, wanted("null or the joined file's sha256")] = None


URL = r"^https?://[^\s/?#]+\S*$"  # a scheme the HTTP client speaks, and a host
PRICE_WANTED = ("null or {input: X, output: Y} in USD per million tokens (optionally cached_input), each a "
                "non-negative number")


class ModelSettings(Section):
    """A model preset (conf/model/*.yaml). Local presets set path or embedded; API presets set api_model."""

    name: Annotated[str, wanted("what results should call the model", min_length=1)]
    path: Annotated[str | None, wanted("a local model directory, a hub id or null")] = None
    embedded: EmbeddedSettings | None = None
    trust_remote_code: Annotated[bool | None, wanted("true or false")] = None  # local presets only
    chat_template_kwargs: Annotated[dict[str, Any] | None, wanted(
        "a mapping of names to values, e.g. {enable_thinking: false}, or null")] = None
    api_model: Annotated[str | None, wanted("the model id sent to the API, or null")] = None
    endpoint: Annotated[str | None, wanted("a URL such as http://127.0.0.1:8000/v1, or null", pattern=URL)] = None
    tokenizer: Annotated[str | None, wanted("a model preset, directory or hub id whose tokenizer counts tokens, "
                                            "or null")] = None
    price: Annotated[PriceSettings | None, wanted(PRICE_WANTED)] = None

    @property
    def api_id(self) -> str:
        """The id a model is requested and priced under: model.api_model, else model.path, else model.name."""
        return str(self.api_model or self.path or self.name)


HF_DTYPES = ("auto", "float32", "bfloat16", "float16")
FAST_PATH_CHECKS = ("fallback", "fail", "skip")
HF_DEVICE = r"^(auto|cpu|mps|cuda(:\d+)?)$"
TOKEN_LIMIT_PARAMS = ("max_tokens", "max_completion_tokens")


class HFSettings(Section):
    name: Literal["hf"]
    device: Annotated[str, wanted("auto, cpu, cuda, cuda:N or mps", pattern=HF_DEVICE)]
    dtype: Annotated[Literal[HF_DTYPES], choice(HF_DTYPES)]
    compile: Annotated[Union[bool, Literal["auto"]], wanted("auto, true or false")]
    decode_rows: Annotated[int | None, wanted("an integer of at least 1 or null", ge=1)]
    fast_path_check: Annotated[Literal[FAST_PATH_CHECKS], choice(FAST_PATH_CHECKS)]


class OpenAISettings(Section):
    name: Literal["openai"]
    base_url: Annotated[str | None, wanted("an http:// or https:// URL such as http://127.0.0.1:8000/v1, or null",
                                           pattern=URL)]
    api_key: Annotated[str | None, wanted("a string or null")]
    api_key_file: Annotated[str | None, wanted("a file path or null")]
    max_concurrency: PositiveInt
    stream: Flag
    timeout_s: PositiveSeconds
    max_retries: Annotated[int, wanted("an integer of at least 0", ge=0)]
    backoff_s: PositiveSeconds
    max_backoff_s: PositiveSeconds
    token_limit_param: Annotated[Literal[TOKEN_LIMIT_PARAMS], choice(TOKEN_LIMIT_PARAMS)]
    omit_params: Annotated[list[str], wanted("a list of request parameter names")]


class ScriptedSettings(OpenAISettings):
    """backend=scripted: the openai backend against a server played in this process (backends/scripted.py)."""

    name: Literal["scripted"]
    script: Annotated[str | None, wanted("a script file (YAML or JSON) or null")]


BACKEND_SETTINGS: dict[str, type[Section]] = {"hf": HFSettings, "openai": OpenAISettings, "scripted": ScriptedSettings}


# --- a whole config ---------------------------------------------------------------------------------------

SECTIONS = ("generation", "run", "task", "method", "backend", "model")


@dataclass(frozen=True)
class Settings:
    """A composed config, every section typed and checked; what the runner works from."""

    generation: Any  # generation.GenerationConfig
    run: RunSettings
    task: Any  # the task class's Settings
    method: Any  # the method class's Settings
    backend: Any  # HFSettings | OpenAISettings
    model: ModelSettings


def validate(cfg) -> Settings:
    """Every section of a composed config, typed; raises UserError at the first bad value (see the module doc)."""
    from mascompare.generation import GenerationConfig
    from mascompare.methods import METHODS
    from mascompare.tasks import TASKS

    generation = GenerationConfig.of(cfg.generation, "generation")
    run = RunSettings.of(cfg.run, "run")
    check_tracking(run.tracking)
    backend_name = cfg.backend.get("name")
    if backend_name not in BACKEND_SETTINGS:
        from mascompare.registry import unknown

        raise unknown("backend", str(backend_name), BACKEND_SETTINGS)
    backend = BACKEND_SETTINGS[backend_name].of(cfg.backend, "backend")
    model = ModelSettings.of(cfg.model, "model")
    task = TASKS.get(cfg.task.name).Settings.of(cfg.task, "task")
    method_cls = METHODS.get(cfg.method.name)
    method = method_cls.Settings.of(cfg.method, "method")
    if run.repeats > 1 and generation.greedy:
        raise UserError(f"run.repeats={run.repeats} repeats identical greedy answers; set generation.temperature > 0 "
                        "to sample, or run.repeats=1.")
    return Settings(generation, run, task, method, backend, model)



def section_schema(cfg, section: str) -> type[Section]:
    """The schema a composed config's section is read with (the chosen task's, method's, backend's own)."""
    from mascompare.generation import GenerationConfig
    from mascompare.methods import METHODS
    from mascompare.tasks import TASKS

    if section == "backend":
        from mascompare.registry import unknown

        name = cfg.backend.get("name")
        if name not in BACKEND_SETTINGS:
            raise unknown("backend", str(name), BACKEND_SETTINGS)
        return BACKEND_SETTINGS[name]
    return {"generation": lambda: GenerationConfig, "run": lambda: RunSettings, "model": lambda: ModelSettings,
            "task": lambda: TASKS.get(cfg.task.name).Settings, "method": lambda: METHODS.get(cfg.method.name).Settings,
            }[section]()


def unread_key(cfg, key: str) -> str | None:
    """Why a key added on the command line with + (`+task.sandbox.wall_s=3`) would change nothing, in one sentence;
    None when its section reads it (or takes any keys there, as model.chat_template_kwargs does)."""
    from mascompare.config import group_options

    parts = key.split(".")
    if parts[0] not in SECTIONS:
        if len(parts) == 1 and group_options(parts[0]) or "/" in key:
            return None  # a config group chosen with +, e.g. +experiment=smoke
        leaves = {leaf.rpartition(".")[2]: leaf for leaf in _leaves(cfg)}
        close = difflib.get_close_matches(parts[-1], list(leaves), n=1, cutoff=0.6)
        hint = f"did you mean {leaves[close[0]]}? " if close else ""
        return (f"+{key} adds a key that mascompare does not read, so it would change nothing; {hint}its settings "
                f"are under {', '.join(SECTIONS)}.")
    annotation: Any = section_schema(cfg, parts[0])
    for depth, part in enumerate(parts[1:], start=1):
        model = _model_in(annotation)
        if model is None or model.model_config.get("extra") == "allow":
            return None  # a mapping of the user's own (or a section that keeps what it is given)
        if part not in model.model_fields:
            where = ".".join(parts[:depth])
            close = difflib.get_close_matches(part, list(model.model_fields), n=1, cutoff=0.6)
            hint = f"did you mean {where}.{close[0]}? " if close else ""
            return (f"+{key} adds a key that {where} does not read, so it would change nothing; {hint}{where}'s keys "
                    f"are {', '.join(model.model_fields)}.")
        annotation = model.model_fields[part].annotation
    return None


def _leaves(cfg) -> list[str]:
    return [f"{section}.{key}" for section in SECTIONS for key in (cfg.get(section) or {})]
