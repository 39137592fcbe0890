"""text_mas: the agents talk in text (TextMAS, the LatentMAS paper's text baseline).

Every agent is the same model with its own role prompt (methods/roles.py, shared with latent_mas);
what an agent passes on is its decoded text, labelled with its name (method.roles.formats.message,
e.g. "[planner]\\n<text>").

- sequential: the agents run in order; each reads the question and the hand-offs of ALL agents
  before it, and the last one answers.
- hierarchical: the experts (every agent but the last) answer independently, without context;
  the last agent (the summarizer) reads all their hand-offs and answers.

An agent that reads `numeric_hint` gets only the answers the task's extractor finds in those hand-offs; an
agent with `execute: true` has the code of its reply run in the code sandbox, and what it printed (or its
error) is appended to its reply before anyone reads it. method.prompt_pack replaces the roles with a pack's
(methods/packs.py).

Each step is one batched chat call across the batch's samples (the experts: one call across
experts x samples), so the method runs on any chat backend.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from mascompare.methods.base import Method, MethodOutput
from mascompare.methods.execution import ReplyRunner
from mascompare.methods.packs import TeamSettings, prepare_prompts
from mascompare.methods.roles import (
    Prompts,
    Structure,
    agents_for,
    answers_in,
    ask_agents,
)
from mascompare.settings import Flag, Text, wanted

THINK_BLOCK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL)  # a closed block, or an unclosed tail


def strip_thoughts(text: str) -> str:
    """The text without its <think>…</think> blocks (an unclosed one runs to the end)."""
    text = THINK_BLOCK.sub("", text)
    # some chat templates open the think block in the prompt: then the output starts inside it
    return text.rpartition("</think>")[2]


class TextMASSettings(TeamSettings):
    text_agents = True

    name: Text
    structure: Structure
    strip_think: Flag
    handoff_max_tokens: Annotated[int | None, wanted("null or a positive integer", ge=1)]


class TextMAS(Method):
    name = "text_mas"
    Settings = TextMASSettings

    def __init__(self, settings: TextMASSettings, backend, task, gen, accountant):
        super().__init__(settings, backend, task, gen, accountant)
        self.agents = agents_for(settings)
        self.prompts = Prompts(settings.roles.system, settings.roles.formats, settings.fewshot,
                               task.answer_instruction())
        self.runner = ReplyRunner(settings.roles.formats)
        self.info: dict = {}

    def prepare(self, run_dir: Path | None, samples: list, resume: bool) -> None:
        """Refuse worked examples the run evaluates, keep the prompt pack, start the sandbox if an agent executes."""
        self.info = prepare_prompts(run_dir, self.settings.prompt_pack, self.agents, self.settings.fewshot, samples,
                                    resume, self.runner)

    def run_info(self) -> dict:
        return self.info

    def run(self, samples) -> list[MethodOutput]:
        outputs = [MethodOutput("") for _ in samples]
        *first, final = self.agents
        if self.settings.structure == "sequential":
            said = [[] for _ in samples]  # per sample: (agent, its hand-off) of the agents so far
            for round, agent in enumerate(first):
                (texts,) = self.ask([agent], samples, said, round, outputs)
                for handed, text in zip(said, texts):
                    handed.append((agent, self.handoff(text)))
            final_round = len(first)
        else:
            texts = self.ask(first, samples, [[] for _ in samples], 0, outputs)
            said = [[(a, self.handoff(t[i])) for a, t in zip(first, texts)] for i in range(len(samples))]
            final_round = 1
        (answers,) = self.ask([final], samples, said, final_round, outputs)
        for output, answer in zip(outputs, answers):
            output.final_text = answer
        return outputs

    def ask(self, agents, samples, said, round, outputs) -> list[list[str]]:
        """One batched call: each agent on each sample, reading that sample's hand-offs so far; returns
        texts[agent][sample]."""
        n = len(samples)
        jobs = [(i, agent) for agent in agents for i in range(n)]
        built = [self.conversation(agent, samples[i].question, said[i]) for i, agent in jobs]
        texts = ask_agents(self.backend, self.gen, self.accountant, jobs, [c for c, _ in built],
                           [s.id for s in samples], round, outputs, runner=self.runner, notes=[n for _, n in built])
        return [texts[k * n:(k + 1) * n] for k in range(len(agents))]

    def conversation(self, agent, question: str, said) -> tuple[list[dict], dict]:
        """The agent's messages, and what its call's record notes (the hint it was shown)."""
        if agent.hinted:
            answers = answers_in(self.task, [text for _, text in said])
            return self.prompts.messages(agent, question, hint=self.prompts.hint(answers)), {"hint": answers}
        handoffs = "\n\n".join(self.prompts.message(sender, text) for sender, text in said)
        return self.prompts.messages(agent, question, neighbours=handoffs), {}

    def handoff(self, text: str) -> str:
        """What later agents read of this agent's text: thoughts stripped and length capped if configured."""
        if self.settings.strip_think:
            text = strip_thoughts(text)
        if self.settings.handoff_max_tokens is not None:
            text = self.backend.truncate_tokens(text, self.settings.handoff_max_tokens)
        return text
