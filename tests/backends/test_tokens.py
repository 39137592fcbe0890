"""TokenCounter: local counts with the model's tokenizer (chat template variables included) or by characters."""

import subprocess
import sys

from mascompare.backends.tokens import TokenCounter, tokenizer_path

CONVERSATION = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "What is 12 + 30?"}]


def test_counts_with_the_chat_template_variables_the_model_gets(smollm2_tokenizer, tmp_path):
    """A tokenizer directory whose template has Qwen3's thinking switch."""
    smollm2_tokenizer.save_pretrained(tmp_path)
    template = tmp_path / "chat_template.jinja"
    template.write_text(template.read_text() + "{% if add_generation_prompt and enable_thinking is defined "
                        "and not enable_thinking %}<think>\n\n</think>\n\n{% endif %}")
    default = TokenCounter(str(tmp_path)).count(CONVERSATION)
    switched = TokenCounter(str(tmp_path), {"enable_thinking": False}).count(CONVERSATION)
    expected = len(smollm2_tokenizer("<think>\n\n</think>\n\n", add_special_tokens=False)["input_ids"])
    assert default == len(smollm2_tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True,
                                                                 return_dict=False))
    assert switched - default == expected > 0


def test_the_token_counter_does_not_import_the_application():
    code = ("import sys; from mascompare.backends.tokens import tokenizer_path; "
            "assert tokenizer_path('no-such-preset') == 'no-such-preset'; "
            "assert 'mascompare.app' not in sys.modules and 'hydra' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_model_preset_named_as_the_tokenizer_counts_with_its_weights_tokenizer(tiny_model_dir, smollm2_tokenizer,
                                                                                 tmp_path, monkeypatch):
    from mascompare.config import USER_CONFIG_ENV

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "tiny-local.yaml").write_text(f"name: tiny-local\npath: {tiny_model_dir}\n")
    monkeypatch.setenv(USER_CONFIG_ENV, str(tmp_path))
    assert tokenizer_path("tiny-local") == str(tiny_model_dir)
    expected = smollm2_tokenizer.apply_chat_template(CONVERSATION, add_generation_prompt=True, return_dict=False)
    assert TokenCounter("tiny-local").count(CONVERSATION) == len(expected)
