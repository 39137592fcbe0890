"""Prompt packs: a team's prompts and behaviours from a YAML file, `method.prompt_pack=PATH` (or the name of a
pack shipped in conf/packs/, e.g. `method.prompt_pack=agentprune_gsm8k`).

A pack holds (every key but `agents` and `decider` optional):

    system: a system message for every agent without its own (absent: none)
    formats: templates that replace the method's (methods/roles.py), key by key
    agents: the agents, each as in conf/method/pruned_mas.yaml: name, role, instruction, answers, and optionally
            system, layout, examples, reads (full | numeric_hint), execute (true | false)
    decider: the agent that answers last (pruned_mas: the decision node; text_mas and latent_mas: the final
             agent, after `agents` in either structure)

A pack replaces the method's team (system, agents, decider); its formats replace the method's key by key.
pruned_mas, pruned_latent_mas, text_mas and latent_mas take packs; latent agents refuse `reads` and
`execute`. Every mistake in a pack stops the run before anything loads, with one sentence naming it.

The run keeps a copy of the pack it used (prompt_pack.yaml in its directory); resuming with a changed pack is
refused, since the run's directory is named after the pack's path, not its content.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, ClassVar

import yaml
from pydantic import ConfigDict, ValidationError, field_validator, model_validator

from mascompare.config import find_config, group_options
from mascompare.errors import UserError
from mascompare.methods.roles import (
    Agent,
    FewShot,
    Formats,
    GraphFormats,
    Roles,
    agents_for,
    check_team,
    example_hashes,
    unique_names,
)
from mascompare.settings import Section, explain, wanted
from mascompare.tasks.base import overlapping

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PACK_COPY = "prompt_pack.yaml"  # the copy a run keeps in its directory
FORBID = ConfigDict(strict=True, frozen=True, extra="forbid")


class PackAgent(Agent):
    model_config = FORBID


class PackFormats(Section):
    """Any of the formats' keys (conf/method/pruned_mas.yaml lists them); the method's fill the rest."""

    model_config = FORBID
    layout: Annotated[list[str] | None, wanted("a list of paragraph templates")] = None
    example: Annotated[str | None, wanted("a template")] = None
    message: Annotated[str | None, wanted("a template")] = None
    hint: Annotated[str | None, wanted("a template")] = None
    hint_alone: Annotated[str | None, wanted("a string or null")] = None
    executed: Annotated[str | None, wanted("a template")] = None
    execution_failed: Annotated[str | None, wanted("a template")] = None
    own_message: Annotated[str | None, wanted("a template")] = None
    this_round: Annotated[str | None, wanted("a template")] = None
    previous_round: Annotated[str | None, wanted("a template")] = None
    neighbours: Annotated[list[str] | None, wanted("a list of paragraph templates")] = None


class PromptPack(Section):
    model_config = FORBID
    system: Annotated[str | None, wanted("a system message or null")] = None
    formats: PackFormats | None = None
    agents: Annotated[list[PackAgent], wanted("a list of at least one agent", min_length=1)]
    decider: PackAgent

    @field_validator("agents")
    @classmethod
    def named_apart(cls, agents):
        return unique_names(agents, "agents")


def pack_path(value: str) -> Traversable:
    """The file `method.prompt_pack` names: a path to a .yaml file, or the name of a pack in a config folder's packs/ (conf/packs/ ships one)."""
    if value.endswith((".yaml", ".yml")) or "/" in value or "\\" in value:
        path = Path(value).expanduser()
        if not path.is_file():
            raise UserError(f"method.prompt_pack names {value!r}, which is not a file; give a prompt pack's YAML "
                            f"file, or one of the shipped packs ({', '.join(shipped_packs())}).")
        return path
    path = find_config(f"packs/{value}.yaml")
    if path is None:
        raise UserError(f"method.prompt_pack={value} is neither a .yaml file nor a shipped pack; give a path to a "
                        f"prompt pack's YAML file, or one of {', '.join(shipped_packs())}.")
    return path


def shipped_packs() -> list[str]:
    """The packs found by name: the shipped ones and those in the user's config folders (packs/*.yaml)."""
    return list(group_options("packs"))


def load_pack(value: str, formats: dict, formats_class: type[Formats]) -> tuple[PromptPack, dict]:
    """The pack `value` names, checked, and the method's formats (`formats`, a dict) with the pack's over them,
    as a dict that `formats_class` accepts."""
    path = pack_path(value)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        reason = str(error).replace("\n", " ")
        raise UserError(f"Could not read the prompt pack {path} ({reason}); fix the file.") from None
    if not isinstance(raw, dict):
        raise UserError(f"The prompt pack {path} must be a mapping with `agents` and `decider` (and optionally "
                        f"`system` and `formats`), got {type(raw).__name__}.")
    try:
        pack = PromptPack.model_validate(raw)
    except ValidationError as error:
        raise UserError(f"Prompt pack {path}: {pack_problem(error, PromptPack)}") from None
    given = pack.formats.model_dump(exclude_unset=True) if pack.formats is not None else {}
    merged = {**formats, **{k: v for k, v in given.items() if k in formats_class.model_fields}}
    try:
        formats_class.model_validate(merged)
    except ValidationError as error:
        raise UserError(f"Prompt pack {path}: {pack_problem(error, formats_class, 'formats')}") from None
    return pack, merged


def pack_problem(error: ValidationError, schema: type[Section], within: str = "") -> str:
    """One sentence for the first problem in a pack, its keys named as they are written in the file."""
    problem = error.errors()[0]
    key = ".".join(str(part) for part in [within, *problem["loc"]] if str(part)
                   and not str(part).startswith(("function-", "literal[")))
    if problem["type"] == "missing":
        return f"{key} is missing; every agent needs name, role, instruction and answers, and a pack needs agents " \
               "and decider."
    if problem["type"] == "extra_forbidden":
        return f"{key} is not a key a prompt pack knows; check its spelling (the keys are listed in " \
               "mascompare/methods/packs.py)."
    return explain(error, schema, within).lstrip(".")


def team_from_pack(data):
    """A pruned method's raw settings with method.prompt_pack's team (system, agents, decider) and formats in place
    of the configured ones; `data` unchanged without a pack."""
    if not isinstance(data, dict) or data.get("prompt_pack") is None:
        return data
    formats = data.get("formats") if isinstance(data.get("formats"), dict) else {}
    pack, merged = load_pack(data["prompt_pack"], formats, GraphFormats)
    return {**data, "system": pack.system, "agents": [dumped(a) for a in pack.agents], "decider": dumped(pack.decider),
            "formats": merged}


def roles_from_pack(data):
    """text_mas's or latent_mas's raw settings with method.prompt_pack in place of method.roles: its agents then
    its decider are the chain of either structure (sequential, or experts then summarizer)."""
    if not isinstance(data, dict) or data.get("prompt_pack") is None:
        return data
    roles = data.get("roles") if isinstance(data.get("roles"), dict) else {}
    formats = roles.get("formats") if isinstance(roles.get("formats"), dict) else {}
    pack, merged = load_pack(data["prompt_pack"], formats, Formats)
    chain = [dumped(a) for a in [*pack.agents, pack.decider]]
    return {**data, "roles": {"system": pack.system, "sequential": chain, "hierarchical": chain, "formats": merged}}


PackChoice = Annotated[str | None, wanted("a prompt pack's YAML file, a shipped pack's name, or null")]


class TeamSettings(Section):
    """What text_mas and latent_mas share of their settings: the team (method.roles, or a prompt pack in its
    place) and how many worked examples each agent shows. `text_agents`: whether the agents write text, which
    reading neighbours as a hint and running replies need."""

    text_agents: ClassVar[bool]
    fewshot: FewShot
    prompt_pack: PackChoice
    roles: Roles

    @model_validator(mode="before")
    @classmethod
    def with_prompt_pack(cls, data):
        return roles_from_pack(data)

    @model_validator(mode="after")
    def team_is_complete(self):
        check_team(agents_for(self), self.roles.formats, self.fewshot, text=self.text_agents)
        return self


def dumped(agent: PackAgent) -> dict:
    """An agent of a pack as raw settings (the keys it left out stay out)."""
    return agent.model_dump(exclude_none=True)


def file_hash(path: Traversable) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def prepare_prompts(run_dir: Path | None, prompt_pack: str | None, agents: list[Agent], fewshot: int | None,
                    evaluated: list, resume: bool, runner=None) -> dict:
    """Before the first model call: refuse worked examples that the run evaluates (the overlap guard calibration
    uses, by question text), keep a copy of the prompt pack in `run_dir` (a resumed run must use the same pack),
    and start the code sandbox when an agent executes its replies. Returns what run.json records of the pack."""
    shown = example_hashes(agents, fewshot)
    if shown:
        clash = overlapping(evaluated, shown)
        if clash:
            raise UserError(f"The agents' worked examples include {len(clash)} of the questions this run evaluates "
                            f"(e.g. {clash[0]}); evaluate other questions, or show other examples (method.fewshot=0 "
                            "shows none).")
    if runner is not None and any(agent.executes for agent in agents):
        runner.check()
    if prompt_pack is None:
        return {}
    path = pack_path(prompt_pack)
    data = path.read_bytes()
    info = {"prompt_pack": {"source": str(path), "sha256": hashlib.sha256(data).hexdigest()}}
    if run_dir is not None:
        copy = run_dir / PACK_COPY
        if resume and copy.is_file() and file_hash(copy) != info["prompt_pack"]["sha256"]:
            raise UserError(f"{path} has changed since this run began (its copy: {copy}); restore it, or run the "
                            "changed pack under another file name.")
        run_dir.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(data)
        info["prompt_pack"]["copy"] = str(copy)
    return info
