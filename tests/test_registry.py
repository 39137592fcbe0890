import pytest

from mascompare.errors import UserError
from mascompare.registry import Registry


def test_lookup_is_lazy_and_typos_get_suggestions():
    registry = Registry("thing", Exception, {"json_error": "json:JSONDecodeError",
                                             "never_imported": "no_such_module_xyz:attr"})
    import json

    assert registry.get("json_error") is json.JSONDecodeError
    assert registry.names() == ["json_error", "never_imported"] and "never_imported" in registry
    with pytest.raises(UserError, match=r"Unknown thing 'json_eror'. Did you mean 'json_error'\?"):
        registry.get("json_eror")


def test_an_entry_outside_the_registrys_contract_is_refused():
    registry = Registry("thing", Exception, {"dumps": "json:dumps", "dict": "builtins:dict"})
    for name in ("dumps", "dict"):
        with pytest.raises(TypeError, match=f"is registered as thing '{name}' but is not a subclass of "
                                            "builtins.Exception"):
            registry.get(name)


def test_the_shipped_registries_hold_their_contracts():
    from mascompare.backends import BACKENDS, ChatBackend
    from mascompare.methods import METHODS, Method
    from mascompare.tasks import TASKS, Task

    for registry, base in ((METHODS, Method), (TASKS, Task), (BACKENDS, ChatBackend)):
        assert registry.base is base
        for name in registry.names():
            found = registry.get(name)
            assert issubclass(found, base) and found.name == name, name


def test_openai_style_choice_does_not_import_torch():
    import subprocess
    import sys

    code = "import mascompare.cli, mascompare.runner, sys; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
