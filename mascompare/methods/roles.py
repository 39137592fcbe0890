"""Agents, their prompts and their batched calls, shared by the multi-agent methods (conf/roles/mas.yaml,
conf/method/pruned_mas.yaml, and prompt packs: methods/packs.py).

An agent's messages are data. Its system message is its own `system`, else the team's. Its user message is
built from paragraph templates (`formats.layout`, or the agent's own `layout`) with placeholders:

- {instruction}: the agent's instruction; {question}: the question;
- {examples}: its worked examples (the first `method.fewshot`; each rendered with `formats.example`);
- {neighbours}: the texts of the agents it reads (each rendered with `formats.message`; how a method groups
  them is the method's: pruned_mas by round, text_mas in order);
- {hint}: for an agent that reads `numeric_hint`, the answers the task's extractor finds in those texts, in
  `formats.hint` (or `formats.hint_alone` when none has answered);
- {answer_format}: the task's answer instruction, for an agent with `answers: true`.

Paragraphs are joined by a blank line; a paragraph whose placeholders all render empty is left out. `{{` and
`}}` write a literal brace. The only thing a method adds is its channel: text methods fill {neighbours}, latent
methods leave it empty (earlier agents reach the model through the KV cache).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import field_validator, model_validator

from mascompare.identity import short_hash
from mascompare.records import Turn
from mascompare.settings import Flag, Section, Text, choice, wanted

STRUCTURES = ("sequential", "hierarchical")
READ_MODES = ("full", "numeric_hint")

# The placeholders each template may use.
PLACEHOLDERS = {
    "layout": ("instruction", "examples", "question", "neighbours", "hint", "answer_format"),
    "example": ("question", "answer"),
    "message": ("name", "role", "text"),
    "own_message": ("name", "role", "text"),
    "hint": ("answers",),
    "hint_alone": (),
    "executed": ("output",),
    "execution_failed": ("error",),
    "this_round": ("messages",),
    "previous_round": ("messages",),
    "neighbours": ("this_round", "previous_round"),
}

_FIELD = re.compile(r"\{\{|\}\}|\{(\w+)\}")


# --- templates -----------------------------------------------------------------------------------


def fields(template: str) -> list[str]:
    """The placeholders a template uses, in order."""
    return [m[1] for m in _FIELD.finditer(template) if m[1]]


def fill(template: str, **values: str) -> str:
    """The template with its placeholders replaced; a value is inserted as it is (its braces stay)."""
    return _FIELD.sub(lambda m: values[m[1]] if m[1] else m[0][0], template)


def paragraphs(templates: list[str], **values: str) -> str:
    """The filled templates joined by a blank line, without those whose placeholders all render empty."""
    kept = [t for t in templates if not fields(t) or any(values[name] for name in fields(t))]
    return "\n\n".join(fill(t, **values) for t in kept)


def check_templates(templates: str | list[str] | None, kind: str, where: str) -> None:
    """A ValueError naming the first placeholder that `kind` templates do not have."""
    allowed = PLACEHOLDERS[kind]
    for template in [templates] if isinstance(templates, str) else templates or []:
        for name in fields(template):
            if name not in allowed:
                choices = ", ".join(f"{{{a}}}" for a in allowed) or "none"
                raise ValueError(f"{where} uses {{{name}}}, which is not a placeholder there; its placeholders are "
                                 f"{choices} (write {{{{ and }}}} for a literal brace).")


def check_layout(layout: list[str], where: str) -> None:
    check_templates(layout, "layout", where)
    if not any("question" in fields(t) for t in layout):
        raise ValueError(f"{where} has no {{question}}; one of its paragraphs must show the question.")


# --- agents and formats --------------------------------------------------------------------------


class Example(Section):
    question: Annotated[str, wanted("a worked example's question", min_length=1)]
    answer: Annotated[str, wanted("a worked example's solution", min_length=1)]


class Agent(Section):
    name: Annotated[str, wanted("a name (used in records and masks)", min_length=1)]
    role: Text  # labels its messages in other agents' prompts
    instruction: Text
    answers: Flag  # the task's answer-format instruction goes into this agent's prompt ({answer_format})
    # Optional keys; our presets leave them out, and absent means what every agent did before they existed.
    system: Annotated[str | None, wanted("this agent's own system message, or null for the team's")] = None
    layout: Annotated[list[str] | None, wanted("a list of paragraph templates, or null for formats.layout")] = None
    examples: Annotated[list[Example] | None, wanted("a list of {question, answer} worked examples")] = None
    # how it reads its neighbours: full (their texts, the default) | numeric_hint (only their extracted answers)
    reads: Annotated[Literal[READ_MODES] | None, wanted("one of full, numeric_hint")] = None
    # true: the code in its reply runs in the code sandbox and what it printed (or its error) is appended
    execute: Annotated[bool | None, wanted("true or false")] = None

    @model_validator(mode="after")
    def layout_placeholders(self):
        if self.layout is not None:
            check_layout(self.layout, f"agent {self.name}'s layout")
        return self

    @property
    def hinted(self) -> bool:
        return self.reads == "numeric_hint"

    @property
    def executes(self) -> bool:
        return bool(self.execute)


def unique_names(agents: list[Agent], where: str) -> list[Agent]:
    if len({a.name for a in agents}) != len(agents):
        raise ValueError(f"{where} has agents with the same name; names must be unique.")
    return agents


class Formats(Section):
    """How an agent's messages are put together (conf/roles/mas.yaml explains each template)."""

    layout: Annotated[list[str], wanted("a list of paragraph templates", min_length=1)]
    example: Text
    message: Text
    hint: Text
    hint_alone: Annotated[str | None, wanted("a string, or null for no hint without neighbours")]
    executed: Text
    execution_failed: Text

    @model_validator(mode="after")
    def known_placeholders(self):
        check_layout(self.layout, "formats.layout")
        for kind in type(self).model_fields:
            if kind != "layout":
                check_templates(getattr(self, kind), kind, f"formats.{kind}")
        return self


class GraphFormats(Formats):
    """Formats of a graph of agents over rounds (pruned_mas): a message to oneself, and the round blocks."""

    own_message: Text
    this_round: Text
    previous_round: Text
    neighbours: Annotated[list[str], wanted("a list of paragraph templates ({this_round}, {previous_round})")]


class Roles(Section):
    """conf/roles/mas.yaml: the agents text_mas and latent_mas share, per structure, their system line and formats."""

    system: Annotated[str | None, wanted("a system message or null")]
    sequential: Annotated[list[Agent], wanted("a list of at least two agents", min_length=2)]
    hierarchical: Annotated[list[Agent], wanted("a list of at least two agents", min_length=2)]
    formats: Formats

    @field_validator("sequential", "hierarchical")
    @classmethod
    def named_apart(cls, agents: list[Agent], info) -> list[Agent]:
        return unique_names(agents, f"method.roles.{info.field_name}")


Structure = Annotated[Literal[STRUCTURES], choice(STRUCTURES)]
FewShot = Annotated[int | None, wanted("null (every worked example an agent has) or a non-negative integer", ge=0)]


def agents_for(settings) -> list[Agent]:
    """The configured structure's agents in order; the last one is the final agent."""
    roles = settings.roles
    return list(roles.sequential if settings.structure == "sequential" else roles.hierarchical)


def check_team(agents: list[Agent], formats: Formats, fewshot: int | None, *, text: bool) -> None:
    """What no single agent or template shows: an instruction, examples or a hint with nowhere to go, fewshot
    with no examples, and (latent agents, `text=False`) read modes and execution, which need text."""
    for agent in agents:
        layout = agent.layout or formats.layout
        where = f"agent {agent.name}'s layout" if agent.layout else "formats.layout"
        if not text and (agent.reads is not None or agent.execute is not None):
            key = "reads" if agent.reads is not None else "execute"
            raise ValueError(f"Agent {agent.name} sets `{key}`, which latent agents cannot use: they read other "
                             "agents through the KV cache and write no text to run; remove it.")
        if agent.instruction and not any("instruction" in fields(t) for t in layout):
            raise ValueError(f"Agent {agent.name} has an instruction but {where} has no {{instruction}}, so it would "
                             "never be shown; add one, or leave the instruction empty.")
        if agent.examples and fewshot != 0 and not any("examples" in fields(t) for t in layout):
            raise ValueError(f"Agent {agent.name} has worked examples but {where} has no {{examples}}; add one, or "
                             "set method.fewshot=0.")
        if agent.hinted and not any("hint" in fields(t) for t in layout):
            raise ValueError(f"Agent {agent.name} reads numeric_hint but {where} has no {{hint}}; add one.")
    if fewshot and not any(agent.examples for agent in agents):
        raise ValueError(f"method.fewshot is {fewshot} but no agent has worked examples; set it to null or 0, or "
                         "give agents `examples`.")


def example_hashes(agents: list[Agent], fewshot: int | None) -> set[str]:
    """The question hashes (identity.short_hash) of the worked examples shown: the overlap guard compares them."""
    return {short_hash(e.question) for agent in agents for e in (agent.examples or [])[:fewshot]}


# --- messages ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompts:
    """Builds a team's messages: the team's system line, its formats, how many examples each agent shows
    (`fewshot`, None = all) and the task's answer instruction."""

    system: str | None
    formats: Formats
    fewshot: int | None
    answer_format: str

    def messages(self, agent: Agent, question: str, neighbours: str = "", hint: str = "") -> list[dict]:
        examples = "\n\n".join(fill(self.formats.example, question=e.question, answer=e.answer)
                               for e in (agent.examples or [])[:self.fewshot])
        user = paragraphs(agent.layout or self.formats.layout, instruction=agent.instruction, examples=examples,
                          question=question, neighbours=neighbours, hint=hint,
                          answer_format=self.answer_format if agent.answers else "")
        system = agent.system if agent.system is not None else self.system
        return ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]

    def message(self, sender: Agent, text: str, own: bool = False) -> str:
        """One neighbour's text as a reader sees it (`own`: the reader's own earlier answer)."""
        template = self.formats.own_message if own else self.formats.message
        return fill(template, name=sender.name, role=sender.role, text=text.strip())

    def hint(self, answers: list[str]) -> str:
        if answers:
            return fill(self.formats.hint, answers=", ".join(answers))
        return self.formats.hint_alone or ""


def answers_in(task, texts: list[str]) -> list[str]:
    """The answers the task's extractor finds in `texts` (flexible), in order; a text without one adds none."""
    found = (task.extract(text).flexible for text in texts)
    return [answer for answer in found if answer is not None]


# --- calls ---------------------------------------------------------------------------------------


def ask_agents(backend, gen, accountant, jobs, conversations, sample_ids, round, outputs, phase="eval",
               runner=None, notes: list[dict] | None = None) -> list[str]:
    """One batched chat call for (sample index, agent) jobs, one conversation each.

    The reply of an agent with `execute: true` is run by `runner` (methods/execution.py) and what it printed, or
    its error, is appended to the reply before anyone reads it. Records each agent's completions (every job
    gets an equal share of the call's wall time; `notes[k]` adds fields to job k's record, and an executed reply
    records how it ended), appends them to the samples' transcripts, marks a sample failed if one of its
    completions failed, and returns the texts in job order.
    """
    if not jobs:
        return []
    start = time.perf_counter()
    seeds = gen.call_seeds([(sample_ids[s], agent.name, round) for s, agent in jobs])
    completions = backend.chat(conversations, gen, seeds)
    texts = [c.text for c in completions]
    extras = [dict(note) for note in notes] if notes else [{} for _ in jobs]
    ran = [k for k, (_, agent) in enumerate(jobs) if agent.executes and not completions[k].error]
    if ran:
        for k, (suffix, record) in zip(ran, runner.run([texts[k] for k in ran])):
            texts[k] += suffix
            extras[k]["execution"] = record
    share = (time.perf_counter() - start) / len(jobs)
    order = list(dict.fromkeys(agent.name for _, agent in jobs))  # agents in order of first appearance
    for k in sorted(range(len(jobs)), key=lambda k: order.index(jobs[k][1].name)):  # stable: job order within
        agent = jobs[k][1]
        accountant.record_completions([sample_ids[jobs[k][0]]], [completions[k]], agent=agent.name,
                                      role=agent.role, round=round, phase=phase, wall_time_s=share,
                                      conversations=[conversations[k]], seeds=None if seeds is None else [seeds[k]],
                                      **extras[k])
    for (s, agent), text, completion in zip(jobs, texts, completions):
        outputs[s].transcript.append(Turn(agent.name, agent.role, round, text))
        outputs[s].error = outputs[s].error or completion.error
    return texts
