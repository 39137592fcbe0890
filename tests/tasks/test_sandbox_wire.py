"""The value format between a candidate's sandbox and its judge's: builtin values only, by value."""

import collections
import enum
import json
import math
import os

import pytest

from mascompare.tasks.sandbox_wire import Channel, ChannelClosed, NotBuiltin, decode, encode


def cross(value):
    """What the other side gets: through JSON text and back, as on the pipe."""
    return decode(json.loads(json.dumps(encode(value), allow_nan=False)))


@pytest.mark.parametrize("value", [
    None, True, False, 0, -7, 2**64, -(2**64), pytest.param(10**5000, id="10**5000"), 0.1, -0.0, 1e308,
    complex(1.5, -2), "", "héllo\udcff",
    b"\x00\xff", bytearray(b"ab"), range(2, 20, 3), [1, [2, [3]]], (1, (2,)), (), {"a": 1, (1, 2): [3]},
    {1, 2.5, "x"}, frozenset({(1, 2)}), {frozenset({1}): {"nested": ({2},)}},
])
def test_builtin_values_cross_unchanged_with_their_types(value):
    crossed = cross(value)
    assert crossed == value and type(crossed) is type(value)
    if isinstance(value, (list, tuple)):
        assert [type(item) for item in crossed] == [type(item) for item in value]


def test_special_floats_cross():
    assert math.isnan(cross(math.nan)) and cross(math.inf) == math.inf and cross(-math.inf) == -math.inf
    assert math.isnan(cross(complex(math.nan, 1)).real)
    assert str(cross(-0.0)) == "-0.0"


def test_a_dict_keeps_its_order():
    assert list(cross({"b": 1, "a": 2, 3: 3})) == ["b", "a", 3]


class AlwaysEqual:
    def __eq__(self, other):
        return True


class LyingFloat(float):
    def __sub__(self, other):
        return 0.0

    def __eq__(self, other):
        return True


class LyingStr(str):
    def __eq__(self, other):
        return True

    __hash__ = str.__hash__


class Colour(enum.IntEnum):
    RED = 3


@pytest.mark.parametrize("value, expected", [
    (collections.Counter("aab"), {"a": 2, "b": 1}),
    (collections.OrderedDict(x=1), {"x": 1}),
    (collections.defaultdict(list, y=[1]), {"y": [1]}),
    (collections.namedtuple("Point", "x y")(1, 2), (1, 2)),
    (LyingFloat(2.5), 2.5),
    (LyingStr("abc"), "abc"),
    (Colour.RED, 3),
    ([LyingFloat(1.0), {LyingStr("k"): Colour.RED}], [1.0, {"k": 3}]),
])
def test_a_subclass_crosses_by_value_as_its_base_type(value, expected):
    crossed = cross(value)
    assert crossed == expected and type(crossed) is type(expected)
    assert type(cross(LyingFloat(2.5))) is float and cross(LyingFloat(2.5)) - 1.0 == 1.5
    assert cross(LyingStr("abc")) != "xyz"


@pytest.mark.parametrize("value, named", [
    (AlwaysEqual(), "test_sandbox_wire.AlwaysEqual"),
    ([1, AlwaysEqual()], "test_sandbox_wire.AlwaysEqual"),
    (print, "builtin_function_or_method"),
    (iter([1]), "list_iterator"),
    ((x for x in ()), "generator"),
    (collections.deque([1]), "collections.deque"),
    (object(), "object"),
])
def test_any_other_object_is_refused_naming_its_type(value, named):
    with pytest.raises(NotBuiltin, match=f"a {named} object is not a builtin value"):
        encode(value)


def test_a_value_that_contains_itself_is_refused():
    loop = []
    loop.append(loop)
    with pytest.raises(RecursionError):
        encode(loop)


def test_handles_stand_for_other_objects_only_where_the_reader_allows():
    kept = []
    data = encode([1, AlwaysEqual()], handle=lambda value: kept.append(value) or len(kept) - 1)
    assert data == [1, {"h": 0}]
    assert decode(data, handle=lambda number: f"object {number}") == [1, "object 0"]
    with pytest.raises(NotBuiltin):
        decode(data)


@pytest.mark.parametrize("data", [
    {"q": 1}, {"t": 1}, {"t": [1], "s": [2]}, {"d": [[1]]}, {"d": [[[1], 2]]}, {"s": [[1]]}, {"b": "!!"},
    {"x": "1.5"}, {"i": "zz"}, {"c": [1, 2]}, {"r": [1, 2]}, {"r": [1, 2, 0]}, {"h": 1}, {"h": "1"},
])
def test_malformed_data_is_refused_with_one_error_type(data):
    with pytest.raises(NotBuiltin):
        decode(data)


def test_frames_cross_a_pipe_and_a_long_one_is_refused_before_it_is_read():
    read, write = os.pipe()
    try:
        Channel(read, write, 1 << 20).send(["call", 0, encode([10**5000, b"x" * 1000]), encode({})])
        message = Channel(read, write, 1 << 20).receive()
        assert decode(message[2]) == [10**5000, b"x" * 1000]
        Channel(read, write, 1 << 20).send(["x" * 100])
        with pytest.raises(NotBuiltin, match="past the limit of 50"):
            Channel(read, write, 50).receive()
    finally:
        os.close(read)
        os.close(write)


def test_garbage_and_a_closed_pipe_are_told_apart():
    read, write = os.pipe()
    os.write(write, (7).to_bytes(8, "big") + b"{nope!}")
    with pytest.raises(NotBuiltin, match="malformed message"):
        Channel(read, write, 100).receive()
    os.write(write, (3).to_bytes(8, "big") + b"[1")
    os.close(write)
    with pytest.raises(ChannelClosed):
        Channel(read, -1, 100).receive()
    os.close(read)
