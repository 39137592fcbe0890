"""The judge: a task's tests, run in a sandbox of their own against a candidate program in another.

A code task describes its tests as a `TaskTests` (built from the dataset on the runner's side,
never from the model's answer):

- `helpers`: code run first, from the dataset: HumanEval's prompt (its imports and the helper
  functions some tests call, such as `poly` or `encode_cyclic`), MBPP+'s test imports;
- `code`: the tests: asserts at the top level (MBPP, with its setup code first), or code that
  defines `check(candidate)` (HumanEval);
- `entry_point`: when set, the candidate's function of that name is bound to that name (a few
  HumanEval tests call it by name) and `check(<it>)` is called after `code` has run.

`python -I -S judge.py` runs them inside the judge's sandbox (request as JSON on stdin). Every
global name the tests use that neither the helpers, the tests nor the builtins define is the
candidate's: the judge asks the candidate's sandbox for it over a pipe (`sandbox_candidate.py`
answers) and gets a proxy. Calling the proxy sends the arguments and brings back the result as
builtin values only (`sandbox_wire.py`): an object of any other type is refused, and a refusal
fails the sample whatever the tests do with it (it is a BaseException, past `except Exception`,
and it is recorded). An exception the program raised is raised here as the builtin exception of
the same name (tests that expect a ValueError see one), else as `CandidateError`. Arguments the
call changed in place are changed here the same way. An instance made by calling one of the
program's classes stays in the candidate's sandbox behind a handle: the tests can pass it back
and set or read its attributes (MBPP's tree tests build their trees so), never compare, hash or
test it for truth. A module the program imported and the tests use (MBPP's asserts use the
program's `import math`) is imported here afresh, when it is a standard module.

The verdict is this process's: the tests ran to their end with no refusal. It goes to the runner
on a pipe of its own, which no process of the candidate's sandbox holds.

Standard library only: this runs in the sandbox's bare interpreter.
"""

from __future__ import annotations

import builtins
import json
import os
import sys

HELPERS_FILE = "helpers.py"
TESTS_FILE = "tests.py"
REASON_CHARS = 2000


class TaskTests:
    """What the judge runs for one sample; a plain class, since the judge's sandbox imports this file and
    dataclasses is slow to import."""

    __slots__ = ("code", "helpers", "entry_point", "from_program")

    def __init__(self, code: str, helpers: str = "", entry_point: str | None = None,
                 from_program: tuple[str, ...] | list[str] = ()):
        self.code, self.helpers, self.entry_point = code, helpers, entry_point
        self.from_program = tuple(from_program)  # builtin names the tests take from the program (MBPP's `sum`)

    def to_json(self) -> dict:
        return {name: getattr(self, name) for name in self.__slots__}

    def __eq__(self, other) -> bool:
        return type(other) is TaskTests and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        return "TaskTests(" + ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__) + ")"


def humaneval_tests(row: dict) -> TaskTests:
    """HumanEval and HumanEval+: the prompt is the helpers, `check(<entry point>)` the tests."""
    return TaskTests(code=_lines(row["test"]), helpers=_lines(row["prompt"]), entry_point=row["entry_point"])


def mbpp_tests(row: dict) -> TaskTests:
    """MBPP: the setup code (which may build objects of the program's classes), then the asserts."""
    return TaskTests(code=_lines("\n".join([row["test_setup_code"], *row["test_list"]])),
                     from_program=_builtins_defined(row["code"]))


def mbpp_plus_tests(row: dict) -> TaskTests:
    """MBPP+: the test imports are the helpers; the test code calls the function by name."""
    return TaskTests(code=_lines(row["test"]), helpers=_lines("\n".join(row["test_imports"])),
                     from_program=_builtins_defined(row["code"]))


def _lines(text: str) -> str:
    return text.replace("\r\n", "\n")


def _builtins_defined(reference: str) -> tuple[str, ...]:
    """Builtin names the dataset's reference solution defines at its top level: the tests mean its function."""
    import ast
    import warnings

    try:
        with warnings.catch_warnings():  # old references hold escapes a newer Python warns of ("\w")
            warnings.simplefilter("ignore")
            tree = ast.parse(_lines(reference))
    except SyntaxError:
        return ()
    defined = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                     ast.ClassDef))}
    return tuple(sorted(defined & set(dir(builtins))))


# --- inside the judge's sandbox ---------------------------------------------------------------


class Refused(BaseException):
    """The program answered with something that may not cross; the sample fails whatever the tests do."""


class CandidateGone(BaseException):
    """The program ended, or left a call with SystemExit and the like, while the tests still needed it; the
    sample fails whatever the tests do."""


class CandidateError(Exception):
    """An exception the program raised that has no builtin counterpart here."""


class Judge:
    def __init__(self, channel, wire):
        self.channel, self.wire = channel, wire
        self.refusals: list[str] = []
        self.departures: list[str] = []  # recorded, since tests with a bare except would swallow them
        self.handles: dict[int, CandidateObject] = {}

    def refuse(self, reason: str):
        self.refusals.append(reason)
        raise Refused(reason)

    def gone(self, reason: str):
        self.departures.append(reason)
        raise CandidateGone(reason)

    def ask(self, request: list) -> list:
        wire = self.wire
        try:
            self.channel.send(request)
            answer = self.channel.receive()
        except (wire.ChannelClosed, BrokenPipeError):
            self.gone("the program ended before the tests did")
        except wire.NotBuiltin as error:
            self.refuse(f"the program sent {error}")
        if type(answer) is not list or not answer or type(answer[0]) is not str:
            self.refuse("the program sent a malformed answer")
        return answer

    def crossing(self, answer: list, name: str):
        """The judge's side of a global or an attribute of the program."""
        kind = answer[0]
        if kind == "value" and len(answer) == 2:
            return self.value(answer[1])
        if kind == "callable" and len(answer) == 2 and type(answer[1]) is int:
            return CandidateFunction(self, answer[1], name)
        if kind == "handle" and len(answer) == 2 and type(answer[1]) is int:
            return self.handle(answer[1])
        if kind == "module" and len(answer) == 2 and type(answer[1]) is str:
            module = answer[1]
            if module != name or module.partition(".")[0] not in sys.stdlib_module_names:
                self.refuse(f"the tests use the program's {name}, which is module {module}: only standard modules "
                            "imported under their own name are shared")
            import importlib

            return importlib.import_module(module)
        if kind == "raise" and len(answer) == 3:
            raise self.exception(answer[1], answer[2])
        if kind == "missing":
            raise NameError(f"name {name!r} is not defined by the program")
        self.refuse(f"the program sent a malformed answer ({kind!r})")

    def value(self, data):
        try:
            return self.wire.decode(data)
        except self.wire.NotBuiltin as error:
            self.refuse(f"the program sent {error}")
        except RecursionError:
            self.refuse("the program sent a value nested too deeply")

    def handle(self, ref: int) -> CandidateObject:
        if ref not in self.handles:
            self.handles[ref] = CandidateObject(self, ref)
        return self.handles[ref]

    def name(self, name: str):
        return self.crossing(self.ask(["name", name]), name)

    def call(self, ref: int, name: str, args: tuple, kwargs: dict):
        arguments = [self.encode(list(args), name), self.encode(kwargs, name)]
        answer = self.ask(["call", ref, *arguments])
        kind = answer[0]
        if kind == "return" and len(answer) == 3:
            result = self.value(answer[1])
            if answer[2] is not None:
                self.mirror(args, kwargs, answer[2])
            return result
        if kind == "handle" and len(answer) == 2 and type(answer[1]) is int:
            return self.handle(answer[1])
        if kind == "refused" and len(answer) == 2 and type(answer[1]) is str:
            self.refuse(f"{name}: {answer[1]}"[:REASON_CHARS])
        return self.crossing(answer, name)

    def encode(self, value, name: str):
        def reference(thing) -> int:
            if isinstance(thing, (CandidateFunction, CandidateObject)):
                return object.__getattribute__(thing, "_ref")
            raise self.wire.NotBuiltin(f"a {type(thing).__qualname__} object")

        try:
            return self.wire.encode(value, reference)
        except self.wire.NotBuiltin as error:
            raise TypeError(f"the tests passed {error} to {name}, which cannot cross to the program") from None

    def mirror(self, args: tuple, kwargs: dict, changed) -> None:
        """Make the changes the call made to its arguments in place to the tests' own objects."""
        if type(changed) is not list or len(changed) != 2:
            self.refuse("the program sent malformed changed arguments")
        try:
            new_args, new_kwargs = (self.wire.decode(part, self.handle) for part in changed)
        except (self.wire.NotBuiltin, RecursionError) as error:
            self.refuse(f"the program sent malformed changed arguments ({error})")
        if type(new_args) is not list or len(new_args) != len(args) or type(new_kwargs) is not dict:
            self.refuse("the program sent malformed changed arguments")
        for old, new in zip([*args, *kwargs.values()], [*new_args, *(new_kwargs.get(k) for k in kwargs)], strict=True):
            _change_in_place(old, new)

    def exception(self, type_name, message) -> BaseException:
        if type(type_name) is not str or type(message) is not str:
            self.refuse("the program sent a malformed exception")
        kind = getattr(builtins, type_name, None)
        if isinstance(kind, type) and issubclass(kind, BaseException) and not issubclass(kind, Exception):
            self.gone(f"the program raised {type_name} during a call")  # SystemExit: leaving early is no pass
        if isinstance(kind, type) and issubclass(kind, Exception):
            try:
                error = kind(message)
            except Exception:  # one whose constructor wants more (UnicodeDecodeError)
                error = CandidateError(f"{type_name}: {message}")
        else:  # the program's own class
            error = CandidateError(f"{type_name}: {message}")
        error.add_note("(raised by the program)")
        return error

    def run(self, suite: TaskTests) -> dict:
        namespace = TestNamespace(self, suite.from_program)
        namespace.update(__name__="tests", __builtins__=builtins)
        try:
            _execute(suite.helpers, HELPERS_FILE, namespace)
            if suite.entry_point:
                try:
                    namespace[suite.entry_point] = self.name(suite.entry_point)
                except NameError:
                    return {"passed": False, "reason": f"the program does not define {suite.entry_point}"}
            _execute(suite.code, TESTS_FILE, namespace)
            if suite.entry_point:
                namespace["check"](namespace[suite.entry_point])
        except BaseException as error:  # an assert, a refusal, the program gone, SystemExit: all fail
            if self.refusals:
                return {"passed": False, "reason": f"refused: {self.refusals[0]}", "refused": True}
            return {**_failure(error, suite), "gone": bool(self.departures)}
        if self.refusals:  # the tests caught the refusal: still no pass
            return {"passed": False, "reason": f"refused: {self.refusals[0]}", "refused": True}
        if self.departures:
            return {"passed": False, "reason": self.departures[0], "summary": self.departures[0], "gone": True}
        return {"passed": True, "reason": ""}


def _failure(error: BaseException, suite: TaskTests) -> dict:
    """A failed verdict: the traceback through the tests' own frames (the judge's are of no interest), quoting
    their lines, and a one-line summary."""
    import linecache  # here, not at the top: a passing sample never needs them, and imports cost start-up
    import traceback

    for source, filename in ((suite.helpers, HELPERS_FILE), (suite.code, TESTS_FILE)):
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if frame.filename in (TESTS_FILE, HELPERS_FILE)]
    what = "".join(traceback.format_exception_only(type(error), error)).strip()
    where = f"{frames[-1].filename} line {frames[-1].lineno}: {frames[-1].line}: " if frames else ""
    text = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames)) + what + "\n"
    return {"passed": False, "reason": text[-REASON_CHARS:], "summary": (where + " ".join(what.split()))[:300]}


def _execute(source: str, filename: str, namespace: dict) -> None:
    exec(compile(source, filename, "exec"), namespace)


class TestNamespace(dict):
    """The tests' globals: a name that nothing here defines is looked up in the program.

    Builtins come from here, except those the suite names as the program's: a program that
    defines `abs` or `len` does not change what the tests compute with.
    """

    def __init__(self, judge: Judge, from_program: tuple[str, ...]):
        super().__init__()
        self.judge, self.from_program = judge, from_program

    def __missing__(self, name: str):
        if (name in builtins.__dict__ and name not in self.from_program) or name.startswith("__"):
            raise KeyError(name)
        try:
            value = self.judge.name(name)
        except NameError:
            raise KeyError(name) from None
        self[name] = value
        return value


class CandidateFunction:
    """A function or class of the program: calling it calls it in the candidate's sandbox."""

    __slots__ = ("_judge", "_ref", "__name__")

    def __init__(self, judge: Judge, ref: int, name: str):
        self._judge, self._ref, self.__name__ = judge, ref, name

    def __call__(self, *args, **kwargs):
        return self._judge.call(self._ref, self.__name__, args, kwargs)

    def __repr__(self) -> str:
        return f"<the program's {self.__name__}>"


class CandidateObject:
    """Any other object of the program, kept in the candidate's sandbox behind a handle."""

    __slots__ = ("_judge", "_ref")

    def __init__(self, judge: Judge, ref: int):
        object.__setattr__(self, "_judge", judge)
        object.__setattr__(self, "_ref", ref)

    def __getattr__(self, name: str):
        judge = object.__getattribute__(self, "_judge")
        ref = object.__getattribute__(self, "_ref")
        return judge.crossing(judge.ask(["getattr", ref, name]), name)

    def __setattr__(self, name: str, value) -> None:
        judge = object.__getattribute__(self, "_judge")
        ref = object.__getattribute__(self, "_ref")
        answer = judge.ask(["setattr", ref, name, judge.encode(value, f"an attribute {name}")])
        if answer != ["ok"]:
            judge.crossing(answer, name)

    def __repr__(self) -> str:
        return f"<the program's object {object.__getattribute__(self, '_ref')}>"

    def _refuse(self, *_):
        object.__getattribute__(self, "_judge").refuse(
            "the tests used an object of the program as a value; only builtin values compare")

    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __hash__ = __bool__ = __len__ = __iter__ = _refuse
    __contains__ = __int__ = __float__ = __index__ = __str__ = __format__ = _refuse


def _change_in_place(old, new) -> None:
    if type(old) is list and type(new) is list:
        old[:] = new
    elif type(old) is dict and type(new) is dict or type(old) is set and type(new) is set:
        old.clear()
        old.update(new)
    elif type(old) is bytearray and type(new) is bytearray:
        old[:] = new


def main() -> None:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import sandbox_wire as wire

    request = json.loads(sys.stdin.read())
    sys.path.extend(request["packages"])
    suite = TaskTests(**request["tests"])  # from_program arrives as a list
    judge = Judge(wire.Channel(request["replies_fd"], request["requests_fd"], request["message_limit"]), wire)
    verdict = judge.run(suite)
    sys.stdout.flush()
    sys.stderr.flush()
    data = json.dumps(verdict).encode()
    view = memoryview(data)
    while view:
        view = view[os.write(request["verdict_fd"], view):]
    os._exit(0 if verdict["passed"] else 1)


if __name__ == "__main__":
    main()
