"""Agents and their prompts, shared by text_mas and latent_mas (conf/roles/mas.yaml).

Both methods build every agent's prompt here from the same instructions; the only thing a
method adds is its channel: text_mas passes earlier agents' text as `context`, latent_mas
passes nothing (earlier agents reach the model through the KV cache).
"""

from __future__ import annotations

from dataclasses import dataclass

from mascompare.errors import UserError

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
