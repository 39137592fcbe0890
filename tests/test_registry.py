import pytest

from mascompare.errors import UserError
from mascompare.registry import Registry


def test_lookup_is_lazy_and_typos_get_suggestions():
    registry = Registry("thing", {"json_dump": "json:dumps", "never_imported": "no_such_module_xyz:attr"})
    assert registry.get("json_dump")({"a": 1}) == '{"a": 1}'
    with pytest.raises(UserError, match=r"Unknown thing 'json_dmp'. Did you mean 'json_dump'\?"):
        registry.get("json_dmp")


def test_openai_style_choice_does_not_import_torch():
    import subprocess
    import sys

    code = "import mascompare.cli, mascompare.runner, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
