"""Agents, their prompts and their batched calls, shared by the multi-agent methods (conf/roles/mas.yaml).

Both methods build every agent's prompt here from the same instructions; the only thing a
method adds is its channel: text_mas passes earlier agents' text as `context`, latent_mas
passes nothing (earlier agents reach the model through the KV cache).
"""

from __future__ import annotations

import time
from typing import Annotated, Literal

from pydantic import field_validator

from mascompare.records import Turn
from mascompare.settings import Flag, Section, Text, choice, wanted

STRUCTURES = ("sequential", "hierarchical")


class Agent(Section):
    name: Annotated[str, wanted("a name (used in records and masks)", min_length=1)]
    role: Text  # labels its messages in other agents' prompts
    instruction: Text
    answers: Flag  # the task's answer-format instruction goes into this agent's prompt


def unique_names(agents: list[Agent], where: str) -> list[Agent]:
    if len({a.name for a in agents}) != len(agents):
        raise ValueError(f"{where} has agents with the same name; names must be unique.")
    return agents


class Roles(Section):
    """conf/roles/mas.yaml: the agents text_mas and latent_mas share, per structure, and their system line."""

    system: Annotated[str | None, wanted("a system message or null")]
    sequential: Annotated[list[Agent], wanted("a list of at least two agents", min_length=2)]
    hierarchical: Annotated[list[Agent], wanted("a list of at least two agents", min_length=2)]

    @field_validator("sequential", "hierarchical")
    @classmethod
    def named_apart(cls, agents: list[Agent], info) -> list[Agent]:
        return unique_names(agents, f"method.roles.{info.field_name}")


Structure = Annotated[Literal[STRUCTURES], choice(STRUCTURES)]


def agents_for(settings) -> list[Agent]:
    """The configured structure's agents in order; the last one is the final agent."""
    roles = settings.roles
    return list(roles.sequential if settings.structure == "sequential" else roles.hierarchical)


def agent_messages(system: str | None, agent: Agent, question: str, answer_instruction: str,
                   context: str | None = None) -> list[dict]:
    """Chat messages for one agent: its instruction, the question, the earlier agents' text if any,
    and the task's answer format if the agent answers."""
    parts = [agent.instruction, f"Problem:\n{question}"]
    if context:
        parts.append(f"Work from the team so far:\n{context}")
    if agent.answers:
        parts.append(answer_instruction)
    messages = [{"role": "system", "content": system}] if system else []
    return messages + [{"role": "user", "content": "\n\n".join(parts)}]


def ask_agents(backend, gen, accountant, jobs, conversations, sample_ids, round, outputs, phase="eval") -> list[str]:
    """One batched chat call for (sample index, agent) jobs, one conversation each.

    Records each agent's completions (every job gets an equal share of the call's wall time),
    appends them to the samples' transcripts, marks a sample failed if one of its completions
    failed, and returns the texts in job order.
    """
    if not jobs:
        return []
    start = time.perf_counter()
    seeds = gen.call_seeds([(sample_ids[s], agent.name, round) for s, agent in jobs])
    completions = backend.chat(conversations, gen, seeds)
    share = (time.perf_counter() - start) / len(jobs)
    for agent in dict.fromkeys(agent for _, agent in jobs):  # agents in order of first appearance
        mine = [k for k, (_, other) in enumerate(jobs) if other == agent]
        accountant.record_completions([sample_ids[jobs[k][0]] for k in mine], [completions[k] for k in mine],
                                      agent=agent.name, role=agent.role, round=round, phase=phase,
                                      wall_time_s=share * len(mine), conversations=[conversations[k] for k in mine],
                                      seeds=None if seeds is None else [seeds[k] for k in mine])
    for (s, agent), completion in zip(jobs, completions):
        outputs[s].transcript.append(Turn(agent.name, agent.role, round, completion.text))
        outputs[s].error = outputs[s].error or completion.error
    return [c.text for c in completions]
