"""Agents, their prompts and their batched calls, shared by the multi-agent methods (conf/roles/mas.yaml).

Both methods build every agent's prompt here from the same instructions; the only thing a
method adds is its channel: text_mas passes earlier agents' text as `context`, latent_mas
passes nothing (earlier agents reach the model through the KV cache).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from mascompare.errors import UserError
from mascompare.methods import Turn

STRUCTURES = ("sequential", "hierarchical")


@dataclass(frozen=True)
class Agent:
    name: str
    role: str
    instruction: str
    answers: bool  # the task's answer-format instruction goes into this agent's prompt


def agents_for(method_cfg) -> list[Agent]:
    """The configured structure's agents in order; the last one is the final agent."""
    structure = method_cfg.structure
    if structure not in STRUCTURES:
        raise UserError(f"method.structure must be one of {', '.join(STRUCTURES)}, got '{structure}'.")
    agents = [Agent(a.name, a.role, a.instruction, bool(a.get("answers", False))) for a in method_cfg.roles[structure]]
    if len(agents) < 2:
        raise UserError(f"method.roles.{structure} needs at least two agents, got {len(agents)}.")
    if len({a.name for a in agents}) != len(agents):
        raise UserError(f"method.roles.{structure} has agents with the same name; names must be unique.")
    return agents


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
