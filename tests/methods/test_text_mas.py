"""text_mas on tiny random-weight models (greedy): batching, hand-offs, structures, accounting, the CLI."""

import json
import time
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from conftest import decoding, make_task
from mascompare.accounting import Accountant
from mascompare.app import compose_config
from mascompare.backends.base import Completion
from mascompare.cli import app
from mascompare.errors import UserError
from mascompare.methods.roles import agents_for
from mascompare.methods import method_settings
from mascompare.methods.text_mas import TextMAS, strip_thoughts

GEN = decoding(max_new_tokens=12)
SEQUENTIAL = ["planner", "critic", "refiner", "judger"]
EXPERTS = ["math_expert", "science_expert", "code_expert"]
CONTEXT_HEADER = "Work from the team so far:"


def method_cfg(*overrides):
    """The method's settings composed from the real conf/ with these overrides."""
    return method_settings(compose_config("method=text_mas", *overrides).method)


def arith(limit):
    return make_task("arith", f"task.limit={limit}")


class Recorder:
    """Forwards to a real backend and keeps each call's conversations, completions and time."""

    def __init__(self, backend):
        self.backend, self.calls = backend, []

    def chat(self, conversations, gen, seeds=None):
        start = time.perf_counter()
        completions = self.backend.chat(conversations, gen)
        self.calls.append((conversations, completions, time.perf_counter() - start))
        return completions

    def __getattr__(self, name):
        return getattr(self.backend, name)


class Thinking(Recorder):
    """The real model's text, with a thought put in front of each completion."""

    def chat(self, conversations, gen, seeds=None):
        return [replace(c, text=f"<think>secret</think>{c.text}") for c in super().chat(conversations, gen)]


def agent_messages(system, agent, question, answer_instruction, context=None):
    """The messages conf/roles/mas.yaml's formats give an agent, written out: its instruction, the question, the
    earlier agents' text if any, and the task's answer format if the agent answers."""
    parts = [agent.instruction, f"Problem:\n{question}"]
    if context:
        parts.append(f"{CONTEXT_HEADER}\n{context}")
    if agent.answers:
        parts.append(answer_instruction)
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def run(backend, task, *overrides, accountant=None):
    method = TextMAS(method_cfg(*overrides), backend, task, GEN, accountant or Accountant())
    return method.run(task.samples())


def user_text(conversation):
    return conversation[-1]["content"]


@pytest.mark.parametrize("structure", ["sequential", "hierarchical"])
def test_batch_of_eight_equals_one_at_a_time(structure, tiny_backend):
    cfg, task = method_cfg(f"method.structure={structure}"), arith(8)
    samples = task.samples()
    batched = TextMAS(cfg, tiny_backend, task, GEN, Accountant()).run(samples)
    alone = [TextMAS(cfg, tiny_backend, task, GEN, Accountant()).run([s])[0] for s in samples]
    assert batched == alone
    assert len({o.final_text for o in batched}) > 1  # the samples really differ


def test_sequential_agents_read_every_earlier_output_in_order_with_labels(tiny_backend):
    recorder, task = Recorder(tiny_backend), arith(3)
    cfg = method_cfg()
    outputs = run(recorder, task)
    agents, samples = agents_for(cfg), task.samples()
    assert [a.name for a in agents] == SEQUENTIAL
    assert len(recorder.calls) == len(agents)  # one batched call per agent
    for i, sample in enumerate(samples):
        earlier = []
        for (conversations, completions, _), agent in zip(recorder.calls, agents):
            context = "\n\n".join(f"[{name}]\n{text.strip()}" for name, text in earlier)
            assert conversations[i] == agent_messages(cfg.roles.system, agent, sample.question,
                                                      task.answer_instruction(), context)
            earlier.append((agent.name, completions[i].text))
        assert CONTEXT_HEADER not in user_text(recorder.calls[0][0][i])
        assert [(t.agent, t.round, t.text) for t in outputs[i].transcript] == [
            (name, r, text) for r, (name, text) in enumerate(earlier)]
        assert outputs[i].final_text == earlier[-1][1] and outputs[i].error is None


def test_hierarchical_experts_answer_alone_in_one_call_and_the_summarizer_reads_them_all(tiny_backend):
    recorder, task = Recorder(tiny_backend), arith(3)
    cfg = method_cfg("method.structure=hierarchical")
    outputs = run(recorder, task, "method.structure=hierarchical")
    agents, samples = agents_for(cfg), task.samples()
    assert [a.name for a in agents] == [*EXPERTS, "summarizer"]
    (expert_prompts, expert_completions, _), (summary_prompts, _, _) = recorder.calls
    n = len(samples)
    assert expert_prompts == [agent_messages(cfg.roles.system, agent, s.question, task.answer_instruction())
                              for agent in agents[:-1] for s in samples]
    for i in range(n):
        prompt = user_text(summary_prompts[i])
        blocks = [f"[{name}]\n{expert_completions[k * n + i].text.strip()}" for k, name in enumerate(EXPERTS)]
        assert f"{CONTEXT_HEADER}\n" + "\n\n".join(blocks) in prompt
        assert [(t.agent, t.role, t.round) for t in outputs[i].transcript] == [
            *((name, "expert", 0) for name in EXPERTS), ("summarizer", "summarizer", 1)]


@pytest.mark.parametrize("text, expected", [
    ("<think>a\nb</think>The answer is 4.", "The answer is 4."),
    ("Plan: <think>x</think>add, <think>y</think>then check.", "Plan: add, then check."),
    ("Start. <think>still thinking when the tokens ran out", "Start. "),
    ("thought opened by the template</think>Result: 7", "Result: 7"),
    ("No thoughts here.", "No thoughts here."),
])
def test_strip_thoughts(text, expected):
    assert strip_thoughts(text) == expected


@pytest.mark.parametrize("structure", ["sequential", "hierarchical"])
@pytest.mark.parametrize("strip", [False, True])
def test_strip_think_acts_on_hand_offs_only(structure, strip, tiny_backend):
    thinking = Thinking(tiny_backend)
    outputs = run(thinking, arith(2), f"method.structure={structure}", f"method.strip_think={strip}")
    final_prompts = thinking.calls[-1][0]
    assert all(("secret" in user_text(c)) is not strip for c in final_prompts)
    assert all(o.final_text.startswith("<think>secret</think>") for o in outputs)  # the answer is kept whole


def test_handoff_cap_cuts_each_hand_off_to_its_first_tokens(tiny_backend):
    recorder, cap = Recorder(tiny_backend), 3
    run(recorder, arith(2), f"method.handoff_max_tokens={cap}")
    (_, planner, _), (critic_prompts, _, _) = recorder.calls[:2]
    for completion, prompt in zip(planner, critic_prompts):
        handed = user_text(prompt).split("[planner]\n", 1)[1]
        full = completion.text.strip()
        assert len(tiny_backend.tokenizer(full, add_special_tokens=False)["input_ids"]) > cap
        assert handed == tiny_backend.truncate_tokens(completion.text, cap).strip()
        assert full.startswith(handed) and len(handed) < len(full)


@pytest.mark.parametrize("structure", ["sequential", "hierarchical"])
def test_one_record_per_agent_per_sample_with_its_tokens(structure, tiny_backend):
    recorder, accountant, task = Recorder(tiny_backend), Accountant(), arith(3)
    run(recorder, task, f"method.structure={structure}", accountant=accountant)
    samples, n = task.samples(), 3
    # each sample's completions in call order, with the call's time and how many rows shared it
    per_sample = [[(completions[k * n + i], seconds, len(completions))
                   for _, completions, seconds in recorder.calls for k in range(len(completions) // n)]
                  for i in range(n)]
    if structure == "sequential":
        expected = [(name, name, r) for r, name in enumerate(SEQUENTIAL)]
    else:
        expected = [*((name, "expert", 0) for name in EXPERTS), ("summarizer", "summarizer", 1)]
    for sample, calls in zip(samples, per_sample):
        records = accountant.take(sample.id)
        assert [(r.agent, r.role, r.round) for r in records] == expected
        for record, (completion, seconds, rows) in zip(records, calls):
            assert (record.input_tokens, record.output_tokens) == (completion.prompt_tokens,
                                                                   completion.completion_tokens)
            assert record.input_tokens > 0 and 1 <= record.output_tokens <= GEN.max_new_tokens
            # an equal share of the call's time among all the rows it served
            assert seconds / rows <= record.wall_time_s <= seconds / rows + 0.01


def test_a_failed_completion_marks_its_sample(tiny_backend):
    class FailsSecondSampleOnce(Recorder):
        def chat(self, conversations, gen, seeds=None):
            completions = super().chat(conversations, gen)
            if len(self.calls) == 2:  # the critic's call
                completions[1] = replace(completions[1], text="", error="APIError: overloaded")
            return completions

    outputs = run(FailsSecondSampleOnce(tiny_backend), arith(2))
    assert [o.error for o in outputs] == [None, "APIError: overloaded"]


@pytest.mark.parametrize("override, shown", [
    ("method.handoff_max_tokens=0", "0"),
    ("method.handoff_max_tokens=-5", "-5"),
    ("method.handoff_max_tokens=2.5", "2.5"),
    ("method.handoff_max_tokens=many", "'many'"),
    ("method.handoff_max_tokens=true", "True"),
    ("method.strip_think=maybe", "'maybe'"),
])
def test_bad_knobs_are_one_sentence(override, shown, tiny_backend):
    with pytest.raises(UserError) as error:
        TextMAS(method_cfg(override), tiny_backend, arith(1), GEN, Accountant())
    key = override.split("=")[0]
    assert str(error.value).startswith(key) and str(error.value).endswith(f"got {shown}.")


# --- read modes and executed replies (a prompt pack) -----------------------------------------------

BEHAVIOURS = """\
system: SYS
formats: {executed: " => {output}", execution_failed: " => failed: {error}"}
agents:
  - {name: counter, role: counting, instruction: COUNT, answers: false}
  - {name: hinted, role: hinting, instruction: HINT, answers: false, reads: numeric_hint}
  - {name: coder, role: coding, instruction: CODE, answers: false, execute: true}
decider: {name: judge, role: judging, instruction: JUDGE, answers: true}
"""
SAID = {"COUNT": "I count 12, so the answer is 12.", "HINT": "Then the answer is 13.",
        "CODE": "```python\nprint(7 * 2)\n```", "JUDGE": "The answer is 14."}


class ByInstruction:
    """A fake model: each agent (known by its instruction, the first line of its prompt) says SAID's text."""

    def __init__(self):
        self.calls = []

    def chat(self, conversations, gen, seeds=None):
        self.calls.append(conversations)
        return [Completion(SAID[c[-1]["content"].split("\n")[0]], 5, 5) for c in conversations]


@pytest.mark.parametrize("structure", ["sequential", "hierarchical"])
def test_a_hinted_agent_reads_answers_only_and_an_executing_agent_hands_on_what_its_code_printed(structure,
                                                                                                  tmp_path):
    pack = tmp_path / "pack.yaml"
    pack.write_text(BEHAVIOURS, encoding="utf-8")
    backend, accountant, task = ByInstruction(), Accountant(), arith(1)
    method = TextMAS(method_cfg(f"method.prompt_pack={pack}", f"method.structure={structure}"), backend, task, GEN,
                     accountant)
    method.prepare(None, task.samples(), resume=True)
    (output,) = method.run(task.samples())
    question = task.samples()[0].question
    prompts = {c[-1]["content"].split("\n")[0]: c[-1]["content"] for call in backend.calls for c in call}
    hints = ("Answers your teammates reached so far: 12. Use them as hints, not as facts."
             if structure == "sequential" else None)
    if structure == "sequential":
        assert prompts["HINT"] == f"HINT\n\nProblem:\n{question}\n\nWork from the team so far:\n{hints}"
        assert prompts["CODE"].endswith("[counter]\nI count 12, so the answer is 12.\n\n[hinted]\nThen the answer is 13.")
    else:  # experts read nobody: a hinted one gets no hint line (formats.hint_alone is null)
        assert prompts["HINT"] == f"HINT\n\nProblem:\n{question}"
    assert "[coder]\n```python\nprint(7 * 2)\n``` => 14" in prompts["JUDGE"]
    assert [t.text for t in output.transcript][2] == "```python\nprint(7 * 2)\n``` => 14"
    records = {r.agent: r for r in accountant.take(task.samples()[0].id)}
    assert records["hinted"].hint == ([] if structure == "hierarchical" else ["12"])
    assert records["coder"].execution["ending"] == "passed" and records["coder"].execution["appended"] == " => 14"
    assert records["counter"].hint is None and records["counter"].execution is None


# --- through the CLI ---------------------------------------------------------------------------

def cli_run(tmp_path, *args):
    result = CliRunner().invoke(app, ["run", "method=text_mas", "task=arith", "task.limit=2", "run.progress=false",
                                      f"run.output_root={tmp_path}", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "arith" / "text_mas").glob("*/*")
    return [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("structure, agents", [("sequential", SEQUENTIAL),
                                               ("hierarchical", [*EXPERTS, "summarizer"])])
def test_cli_run_writes_each_agents_usage_and_the_transcript(structure, agents, tiny_model_dir, tmp_path):
    rows = cli_run(tmp_path, f"method.structure={structure}", f"model.path={tiny_model_dir}", "model.name=tiny",
                   "generation.max_new_tokens=4")
    assert [r["id"] for r in rows] == ["arith-L1-0000", "arith-L2-0000"]
    for row in rows:
        assert [a["agent"] for a in row["agents"]] == agents and row["usage"]["calls"] == 4
        assert row["usage"]["output_tokens"] == sum(a["output_tokens"] for a in row["agents"])
        assert [t["agent"] for t in row["transcript"]] == agents
        assert row["final_text"] == row["transcript"][-1]["text"]


@pytest.mark.embedded
@pytest.mark.parametrize("structure", ["sequential", "hierarchical"])
def test_embedded_model_smoke(structure, tmp_path):
    rows = cli_run(tmp_path, f"method.structure={structure}", "generation.max_new_tokens=24")
    assert len(rows) == 2
    for row in rows:
        assert row["error"] is None and len(row["agents"]) == 4 and row["final_text"].strip()
        assert all(1 <= a["output_tokens"] <= 24 for a in row["agents"])
