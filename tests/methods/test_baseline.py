"""baseline on a tiny random-weight model (greedy): its prompt, its records, batching."""

import pytest

from conftest import decoding, make_task
from mascompare.accounting import Accountant, prompt_hash
from mascompare.app import compose_config
from mascompare.methods import method_settings
from mascompare.methods.baseline import Baseline

GEN = decoding(max_new_tokens=12)


@pytest.fixture(scope="module")
def cfg():
    """The settings of `method=baseline`, composed from the real conf/."""
    return method_settings(compose_config("method=baseline").method)


@pytest.fixture
def task():
    return make_task("arith", "task.limit=8")


def test_prompt_has_the_system_message_the_question_and_the_answer_format(cfg, task, tiny_backend):
    question = task.samples()[3].question
    system, user = Baseline(cfg, tiny_backend, task, GEN, Accountant()).prompt(question)
    assert system == {"role": "system", "content": cfg.system} and cfg.system
    assert user["role"] == "user"
    assert question in user["content"] and task.answer_instruction() in user["content"]


def test_one_record_per_sample_with_its_tokens(cfg, task, tiny_backend):
    accountant, samples = Accountant(), task.samples()[:3]
    method = Baseline(cfg, tiny_backend, task, GEN, accountant)
    outputs = method.run(samples)
    completions = tiny_backend.chat([method.prompt(s.question) for s in samples], GEN)
    for sample, output, completion in zip(samples, outputs, completions):
        (record,) = accountant.take(sample.id)
        assert (record.agent, record.role, record.round) == ("answerer", "answerer", 0)
        assert (record.input_tokens, record.output_tokens) == (completion.prompt_tokens, completion.completion_tokens)
        assert output.final_text == completion.text and output.error is None
        assert [(t.agent, t.text) for t in output.transcript] == [("answerer", completion.text)]


def test_records_keep_the_messages_their_hash_and_why_decoding_ended(cfg, task, tiny_backend):
    accountant, samples = Accountant(), task.samples()
    method = Baseline(cfg, tiny_backend, task, decoding(max_new_tokens=3), accountant)
    method.run(samples)
    reasons = set()
    for sample in samples:
        (record,) = accountant.take(sample.id)
        messages = method.prompt(sample.question)
        assert record.messages == messages and record.prompt_hash == prompt_hash(messages)
        assert record.input_tokens == tiny_backend.count_tokens(messages)
        ended_on_eos = record.output_tokens < 3 or "eos" == record.finish_reason
        assert record.finish_reason == ("eos" if ended_on_eos else "length") and record.seed is None
        reasons.add(record.finish_reason)
    assert "length" in reasons  # 3 tokens cut most answers short
    assert prompt_hash(messages) != prompt_hash([*messages[:-1], {"role": "user", "content": "other"}])


def test_batch_of_eight_equals_one_at_a_time(cfg, task, tiny_backend):
    samples = task.samples()
    batched = Baseline(cfg, tiny_backend, task, GEN, Accountant()).run(samples)
    alone = [Baseline(cfg, tiny_backend, task, GEN, Accountant()).run([s])[0] for s in samples]
    assert batched == alone
    assert len({o.final_text for o in batched}) > 1
