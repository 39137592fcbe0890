"""Prompt packs (method.prompt_pack): a user's team in every method that takes one, one sentence per mistake,
worked examples (method.fewshot) kept apart from the evaluated and calibration questions, the pack kept with
the run, and the shipped GSM8K pack in the authors' structure."""

import re
from pathlib import Path
from textwrap import dedent

import pytest
from conftest import decoding, make_task

from mascompare.accounting import Accountant
from mascompare.app import compose_config
from mascompare.config import SHIPPED
from mascompare.errors import UserError
from mascompare.identity import short_hash
from mascompare.methods import method_settings
from mascompare.methods.packs import PACK_COPY
from mascompare.methods.pruned_mas import PrunedMAS
from mascompare.methods.roles import Prompts, agents_for

TEAM = """\
agents:
  - {name: first, role: First, instruction: Solve it one way., answers: true}
  - {name: second, role: Second, instruction: Solve it another way., answers: true}
decider: {name: judge, role: Judge, instruction: Decide., answers: true}
"""


def pack(tmp_path, text: str, name: str = "pack.yaml") -> Path:
    path = tmp_path / name
    path.write_text(dedent(text), encoding="utf-8")
    return path


def settings(method: str, *overrides: str):
    return method_settings(compose_config(f"method={method}", *overrides).method)


def test_a_pack_replaces_the_team_of_every_method_that_takes_one(tmp_path):
    path = pack(tmp_path, TEAM + "system: Be brief.\nformats: {message: '({name}) {text}'}\n")
    pruned = settings("pruned_mas", f"method.prompt_pack={path}")
    assert [a.name for a in pruned.agents] == ["first", "second"] and pruned.decider.name == "judge"
    assert pruned.system == "Be brief." and pruned.formats.message == "({name}) {text}"
    default = settings("pruned_mas")
    assert pruned.formats.own_message == default.formats.own_message  # the method's formats fill the rest
    latent = settings("pruned_latent_mas", f"method.prompt_pack={path}")
    assert [a.name for a in latent.agents] == ["first", "second"] and latent.decider.name == "judge"
    for method in ("text_mas", "latent_mas"):
        for structure in ("sequential", "hierarchical"):
            chosen = settings(method, f"method.prompt_pack={path}", f"method.structure={structure}")
            assert [a.name for a in agents_for(chosen)] == ["first", "second", "judge"]
            assert chosen.roles.system == "Be brief." and chosen.roles.formats.message == "({name}) {text}"


def test_without_system_a_pack_sends_no_shared_system_message(tmp_path):
    chosen = settings("text_mas", f"method.prompt_pack={pack(tmp_path, TEAM)}")
    prompts = Prompts(chosen.roles.system, chosen.roles.formats, chosen.fewshot, "ANSWER FORMAT")
    assert prompts.messages(agents_for(chosen)[0], "Q?") == [
        {"role": "user", "content": "Solve it one way.\n\nProblem:\nQ?\n\nANSWER FORMAT"}]


MISTAKES = [
    ("- a list\n", r"must be a mapping with `agents` and `decider`.*got list"),
    ("agents: [\n", r"Could not read the prompt pack .*; fix the file\."),
    ("agents: []\ndecider: {name: d, role: D, instruction: x, answers: true}\n",
     r"agents must be a list of at least one agent, got \[\]\."),
    (TEAM + "format: {}\n", r"format is not a key a prompt pack knows"),
    (TEAM.replace("answers: true}", "answers: true, reads: hint}", 1),
     r"agents\.0\.reads must be one of full, numeric_hint, got 'hint'\."),
    (TEAM.replace("answers: true}", "answers: true, execute: yes please}", 1), r"agents\.0\.execute must be true or false"),
    (TEAM.replace("instruction: Solve it one way., ", "", 1), r"agents\.0\.instruction is missing"),
    (TEAM.replace("name: second", "name: first"), r"agents has agents with the same name"),
    (TEAM + "formats: {layout: ['{instruction}', 'Problem: {questoin}']}\n",
     r"formats\.layout uses \{questoin\}, which is not a placeholder there; its placeholders are \{instruction\}"),
    (TEAM + "formats: {layout: ['{instruction}']}\n", r"formats\.layout has no \{question\}"),
    (TEAM + "formats: {hint: 'near {answer}'}\n", r"formats\.hint uses \{answer\}, which is not a placeholder there"),
    (TEAM.replace("answers: true}", "answers: true, layout: ['{question}', '{team}']}", 1),
     r"agent first's layout uses \{team\}"),
    (TEAM.replace("answers: true}", "answers: true, examples: [{question: Q}]}", 1),
     r"agents\.0\.examples\.0\.answer is missing"),
    (TEAM + "formats: {layout: ['Q: {question}', '{answer_format}']}\n",
     r"Agent first has an instruction but formats\.layout has no \{instruction\}, so it would never be shown"),
    (TEAM.replace("answers: true}", "answers: true, examples: [{question: Q, answer: A}]}", 1)
     + "formats: {layout: ['{instruction}', '{question}']}\n",
     r"Agent first has worked examples but formats\.layout has no \{examples\}; add one, or set method\.fewshot=0\."),
    (TEAM.replace("answers: true}", "answers: true, reads: numeric_hint}", 1)
     + "formats: {layout: ['{instruction}', '{question}', '{neighbours}']}\n",
     r"Agent first reads numeric_hint but formats\.layout has no \{hint\}; add one\."),
]


@pytest.mark.parametrize("text, message", MISTAKES)
def test_each_mistake_in_a_pack_is_one_clear_sentence(tmp_path, text, message):
    path = pack(tmp_path, text)
    with pytest.raises(UserError) as caught:
        settings("pruned_mas", f"method.prompt_pack={path}")
    said = str(caught.value)
    assert re.search(message, said), said
    assert "\n" not in said and "Traceback" not in said


def test_a_pack_that_is_not_there_is_named():
    with pytest.raises(UserError, match=r"method\.prompt_pack names '/nonexistent/pack\.yaml', which is not a file"):
        settings("text_mas", "method.prompt_pack=/nonexistent/pack.yaml")
    with pytest.raises(UserError, match=r"method\.prompt_pack=gsm8k_authors is neither a \.yaml file nor a shipped "
                                        r"pack; .* one of agentprune_gsm8k"):
        settings("pruned_mas", "method.prompt_pack=gsm8k_authors")


@pytest.mark.parametrize("method", ["latent_mas", "pruned_latent_mas"])
@pytest.mark.parametrize("key, value", [("reads", "numeric_hint"), ("execute", "true")])
def test_latent_agents_refuse_a_read_mode_or_execution(tmp_path, method, key, value):
    path = pack(tmp_path, TEAM.replace("answers: true}", f"answers: true, {key}: {value}}}", 1))
    with pytest.raises(UserError, match=rf"^Agent first sets `{key}`, which latent agents cannot use: .*; remove it\.$"):
        settings(method, f"method.prompt_pack={path}")
    settings("text_mas", f"method.prompt_pack={path}")  # text agents take it


def test_fewshot_shows_the_first_examples_and_needs_some(tmp_path):
    examples = "[{question: EQ1, answer: EA1}, {question: EQ2, answer: EA2}, {question: EQ3, answer: EA3}]"
    path = pack(tmp_path, TEAM.replace("answers: true}", f"answers: true, examples: {examples}}}", 1))
    shown = {}
    for fewshot in ("null", "0", "2", "5"):
        chosen = settings("pruned_mas", f"method.prompt_pack={path}", f"method.fewshot={fewshot}")
        prompts = Prompts(chosen.system, chosen.formats, chosen.fewshot, "FORMAT")
        shown[fewshot] = re.findall(r"EQ\d", prompts.messages(chosen.agents[0], "Q?")[-1]["content"])
        assert "EQ" not in prompts.messages(chosen.agents[1], "Q?")[-1]["content"]  # it has none
    assert shown == {"null": ["EQ1", "EQ2", "EQ3"], "0": [], "2": ["EQ1", "EQ2"], "5": ["EQ1", "EQ2", "EQ3"]}
    user = Prompts(None, settings("pruned_mas", f"method.prompt_pack={path}").formats, 1, "FORMAT").messages(
        settings("pruned_mas", f"method.prompt_pack={path}").agents[0], "Q?")[-1]["content"]
    assert user == "Solve it one way.\n\nExample problem:\nEQ1\n\nExample solution:\nEA1\n\nProblem:\nQ?\n\nFORMAT"
    with pytest.raises(UserError, match=r"method\.fewshot is 2 but no agent has worked examples"):
        settings("pruned_mas", "method.fewshot=2")


def pruned(settings_, task, backend=None):
    return PrunedMAS(settings_, backend, task, decoding(max_new_tokens=4), Accountant())


def test_examples_among_the_evaluated_questions_are_refused(tmp_path):
    task = make_task("arith", "task.limit=3", "task.levels=[1]")
    evaluated = task.samples()[1].question
    path = pack(tmp_path, TEAM.replace("answers: true}", f"answers: true, examples: [{{question: '{evaluated}', "
                                       "answer: done}]}", 1))
    method = pruned(settings("pruned_mas", f"method.prompt_pack={path}", "method.prune_rate=0"), task)
    with pytest.raises(UserError, match=rf"worked examples include 1 of the questions this run evaluates \(e\.g\. "
                                        rf"{task.samples()[1].id}\)"):
        method.prepare(None, task.samples(), resume=True)
    shown_none = pruned(settings("pruned_mas", f"method.prompt_pack={path}", "method.prune_rate=0",
                                 "method.fewshot=0"), task)
    shown_none.prepare(None, task.samples(), resume=True)  # not shown: nothing to guard


def test_calibration_questions_avoid_the_worked_examples(tmp_path):
    task = make_task("arith", "task.limit=2", "task.levels=[1,2]")
    tail = task.load(None)[-3:]  # method.calibration.split=tail with size 3 takes exactly these
    path = pack(tmp_path, TEAM.replace("answers: true}", f"answers: true, examples: [{{question: '{tail[1].question}', "
                                       "answer: done}]}", 1))
    method = pruned(settings("pruned_mas", f"method.prompt_pack={path}", "method.calibration.split=tail",
                             "method.calibration.size=3"), task)
    with pytest.raises(UserError, match=r"overlap the evaluated ones or the agents' worked examples \(1 shared"):
        method.prepare(None, task.samples(), resume=True)


def test_the_run_keeps_its_pack_and_a_resumed_run_refuses_a_changed_one(tmp_path):
    path = pack(tmp_path, TEAM)
    task = make_task("arith", "task.limit=1")
    method = pruned(settings("pruned_mas", f"method.prompt_pack={path}", "method.prune_rate=0"), task)
    run_dir = tmp_path / "run"
    method.prepare(run_dir, task.samples(), resume=True)
    assert (run_dir / PACK_COPY).read_text() == path.read_text()
    info = method.run_info()["prompt_pack"]
    assert info["source"] == str(path) and info["sha256"] and info["copy"] == str(run_dir / PACK_COPY)
    method.prepare(run_dir, task.samples(), resume=True)  # unchanged: fine
    path.write_text(TEAM.replace("Decide.", "Decide well."), encoding="utf-8")
    changed = pruned(settings("pruned_mas", f"method.prompt_pack={path}", "method.prune_rate=0"), task)
    with pytest.raises(UserError, match=r"has changed since this run began"):
        changed.prepare(run_dir, task.samples(), resume=True)
    changed.prepare(run_dir, task.samples(), resume=False)  # run.resume=false starts afresh with the new pack
    assert (run_dir / PACK_COPY).read_text() == path.read_text()


# --- the shipped GSM8K pack ----------------------------------------------------------------------


def test_the_gsm8k_pack_has_the_authors_roles_and_behaviours():
    chosen = settings("pruned_mas", "method.prompt_pack=agentprune_gsm8k")
    assert [a.role for a in chosen.agents] == ["Math Solver", "Mathematical Analyst", "Programming Expert", "Inspector"]
    assert [(a.reads, a.execute) for a in chosen.agents] == [
        ("numeric_hint", None), (None, None), (None, True), (None, None)]
    assert [len(a.examples or []) for a in [*chosen.agents, chosen.decider]] == [3, 2, 2, 0, 1]
    assert all(a.system for a in [*chosen.agents, chosen.decider]) and chosen.system is None
    assert chosen.formats.neighbours == ["{this_round}", "{previous_round}"]  # this round's messages first
    prompts = Prompts(chosen.system, chosen.formats, chosen.fewshot, "unused")
    solver = prompts.messages(chosen.agents[0], "How many?", hint=prompts.hint([]))
    assert solver[0]["content"] == chosen.agents[0].system
    assert solver[1]["content"].endswith("\n\nQuestion: How many? (Hint: no teammate has answered yet.)")
    assert solver[1]["content"].count("Question: ") == 4  # 3 worked examples, then the question
    settings("text_mas", "method.prompt_pack=agentprune_gsm8k")
    with pytest.raises(UserError, match="latent agents cannot use"):
        settings("latent_mas", "method.prompt_pack=agentprune_gsm8k")


def test_the_gsm8k_pack_examples_are_not_gsm8k_questions_and_are_worked_out():
    chosen = settings("pruned_mas", "method.prompt_pack=agentprune_gsm8k")
    examples = [e for a in [*chosen.agents, chosen.decider] for e in a.examples or []]
    task = make_task("gsm8k")
    try:
        questions = {short_hash(s.question) for s in task.load(None)}
    except UserError as exc:
        pytest.skip(f"GSM8K not available offline: {exc}")
    assert len(questions) == 1319
    assert not {short_hash(e.question) for e in examples} & questions
    for example in examples:  # every worked example ends with the answer line its role is asked for
        if "```python" not in example.answer:
            assert re.search(r"\nThe answer is -?\d+(\.\d+)?$", example.answer), example.answer


def test_the_gsm8k_pack_programs_print_their_answers():
    from mascompare.methods.execution import ReplyRunner

    chosen = settings("pruned_mas", "method.prompt_pack=agentprune_gsm8k")
    programmer = chosen.agents[2]
    results = ReplyRunner(chosen.formats).run([e.answer for e in programmer.examples])
    assert [suffix for suffix, _ in results] == ["\n\nRunning this program printed: 26",
                                                  "\n\nRunning this program printed: 890"]


def test_shipped_packs_live_in_conf():
    assert SHIPPED.joinpath("packs", "agentprune_gsm8k.yaml").is_file()
