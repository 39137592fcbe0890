"""text_mas: the agents talk in text (TextMAS, the LatentMAS paper's text baseline).

Every agent is the same model with its own role prompt (methods/roles.py, shared with latent_mas);
what an agent passes on is its decoded text, labelled with its name, e.g. "[planner]\\n<text>".

- sequential: the agents run in order; each reads the question and the hand-offs of ALL agents
  before it, and the last one answers.
- hierarchical: the experts (every agent but the last) answer independently, without context;
  the last agent (the summarizer) reads all their hand-offs and answers.

Each step is one batched chat call across the batch's samples (the experts: one call across
experts x samples), so the method runs on any chat backend.
"""

from __future__ import annotations

import re
from typing import Annotated

from mascompare.methods.base import Method, MethodOutput
from mascompare.methods.roles import Roles, Structure, agent_messages, agents_for, ask_agents
from mascompare.settings import Flag, Section, Text, wanted

THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL)  # a closed block, or an unclosed tail


def strip_thoughts(text: str) -> str:
    """The text without its <think>…</think> blocks (an unclosed one runs to the end)."""
    text = THINK_BLOCK.sub("", text)
    # some chat templates open the think block in the prompt: then the output starts inside it
    return text.rpartition("</think>")[2]


class TextMASSettings(Section):
    name: Text
    structure: Structure
    strip_think: Flag
    handoff_max_tokens: Annotated[int | None, wanted("null or a positive integer", ge=1)]
    roles: Roles


class TextMAS(Method):
    name = "text_mas"
    Settings = TextMASSettings

    def __init__(self, settings: TextMASSettings, backend, task, gen, accountant):
        super().__init__(settings, backend, task, gen, accountant)
        self.agents = agents_for(settings)
        self.system = settings.roles.system

    def run(self, samples) -> list[MethodOutput]:
        outputs = [MethodOutput("") for _ in samples]
        *first, final = self.agents
        if self.settings.structure == "sequential":
            handoffs = [[] for _ in samples]  # per sample: the labelled texts of the agents so far
            for round, agent in enumerate(first):
                (texts,) = self.ask([agent], samples, [_joined(h) for h in handoffs], round, outputs)
                for h, text in zip(handoffs, texts):
                    h.append(self.handoff(agent, text))
            contexts, final_round = [_joined(h) for h in handoffs], len(first)
        else:
            texts = self.ask(first, samples, [None] * len(samples), 0, outputs)
            contexts = [_joined(self.handoff(a, t[i]) for a, t in zip(first, texts)) for i in range(len(samples))]
            final_round = 1
        (answers,) = self.ask([final], samples, contexts, final_round, outputs)
        for output, answer in zip(outputs, answers):
            output.final_text = answer
        return outputs

    def ask(self, agents, samples, contexts, round, outputs) -> list[list[str]]:
        """One batched call: each agent on each sample with that sample's context; returns texts[agent][sample]."""
        instruction = self.task.answer_instruction()
        n = len(samples)
        jobs = [(i, agent) for agent in agents for i in range(n)]
        conversations = [agent_messages(self.system, agent, samples[i].question, instruction, contexts[i])
                         for i, agent in jobs]
        texts = ask_agents(self.backend, self.gen, self.accountant, jobs, conversations, [s.id for s in samples],
                           round, outputs)
        return [texts[k * n:(k + 1) * n] for k in range(len(agents))]

    def handoff(self, agent, text: str) -> str:
        """What later agents read of this agent's text: thoughts stripped and length capped if configured."""
        if self.settings.strip_think:
            text = strip_thoughts(text)
        if self.settings.handoff_max_tokens is not None:
            text = self.backend.truncate_tokens(text, self.settings.handoff_max_tokens)
        return f"[{agent.name}]\n{text.strip()}"


def _joined(handoffs) -> str:
    return "\n\n".join(handoffs)
