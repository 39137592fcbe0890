"""What crosses between a candidate program's sandbox and its judge's: builtin values only, in frames.

A value is encoded into JSON-ready data that can stand for nothing but builtin values: None, bool,
int, float (nan and the infinities included), complex, str, bytes, bytearray, range, list, tuple,
dict, set and frozenset, nested as deep as the interpreter allows. A subclass of one of these
crosses by value as its base type (a `Counter` arrives as a dict, a `numpy.float64` as a float,
a `str` subclass with its own `__eq__` as a plain str); any other object is refused with a
sentence naming its type. Unlike pickle, decoding never imports, calls or builds anything but
these builtins, so a judge can read what a hostile program sends.

The encoding is JSON: lists are JSON arrays, str, finite floats, bool and None are themselves,
ints are JSON numbers up to 2**64 and tagged beyond (JSON text is limited to 4300 digits); every
other value is a JSON object with exactly one key, its tag:

    {"t": [...]} tuple    {"s": [...]} set    {"f": [...]} frozenset   {"d": [[k, v], ...]} dict
    {"b": base64} bytes   {"a": base64} bytearray   {"x": "nan" | "inf" | "-inf"} float
    {"i": hex} large int  {"c": [re, im]} complex   {"r": [start, stop, step]} range
    {"h": n} an opaque handle, only where the reader allows them

Frames: an 8-byte big-endian length, then that many bytes of ASCII JSON. A reader refuses a frame
longer than its limit before reading it.

Both sandboxes run this file with the standard library alone (no third-party module is there).
"""

from __future__ import annotations

import binascii
import json
import math
import os

HEADER_BYTES = 8
_LARGE_INT = 2**64
_SPECIAL_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_CONTAINERS = {"t": tuple, "s": set, "f": frozenset}


class NotBuiltin(ValueError):
    """A value that cannot cross: the message names what it was."""


class ChannelClosed(EOFError):
    """The other side ended (or closed its end) before a whole frame arrived."""


def encode(value, handle=None):
    """JSON-ready data for a builtin value; raises NotBuiltin for anything else.

    `handle`, when given, is called with each value that is not builtin and returns its handle
    number instead of refusing it (the candidate's side keeps objects of its own classes so).
    """
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return value
    if kind is int:
        return value if -_LARGE_INT < value < _LARGE_INT else {"i": hex(value)}
    if kind is float:
        return value if math.isfinite(value) else {"x": repr(value)}
    if kind is list:
        return [encode(item, handle) for item in value]
    if kind is tuple:
        return {"t": [encode(item, handle) for item in value]}
    if kind is dict:
        return {"d": [[encode(key, handle), encode(item, handle)] for key, item in value.items()]}
    if kind is set:
        return {"s": [encode(item, handle) for item in value]}
    if kind is frozenset:
        return {"f": [encode(item, handle) for item in value]}
    if kind is bytes:
        return {"b": binascii.b2a_base64(value, newline=False).decode("ascii")}
    if kind is bytearray:
        return {"a": binascii.b2a_base64(value, newline=False).decode("ascii")}
    if kind is complex:
        return {"c": [encode(value.real), encode(value.imag)]}
    if kind is range:
        return {"r": [value.start, value.stop, value.step]}
    return _encode_subclass(value, handle)


def _encode_subclass(value, handle):
    # By value, through the base type's own methods: what the subclass overrides plays no part.
    # bool cannot be subclassed, so an int subclass (an IntEnum, say) is always an int.
    for base, convert in _BASES:
        if isinstance(value, base):
            return encode(convert(value), handle)
    if handle is not None:
        return {"h": handle(value)}
    raise NotBuiltin(f"a {_type_name(value)} object is not a builtin value")


_BASES = (
    (int, int.__int__), (float, float.__float__), (str, str.__str__), (bytes, bytes.__bytes__),
    (complex, complex.__complex__), (list, list), (tuple, tuple), (dict, dict), (set, set),
    (frozenset, frozenset), (bytearray, bytearray),
)


def _type_name(value) -> str:
    kind = type(value)
    module = getattr(kind, "__module__", None)
    return kind.__qualname__ if module in (None, "builtins") else f"{module}.{kind.__qualname__}"


def decode(data, handle=None):
    """The builtin value that encode() gave `data` for; raises NotBuiltin for anything malformed.

    `handle`, when given, turns a handle number into the object it stands for; without it a
    handle is refused like any other malformed part.
    """
    kind = type(data)
    if data is None or kind is bool or kind is str or kind is int or kind is float:
        return data
    if kind is list:
        return [decode(item, handle) for item in data]
    if kind is not dict or len(data) != 1:
        raise NotBuiltin(f"malformed value ({kind.__name__})")
    (tag, body), = data.items()
    try:
        if tag in _CONTAINERS:
            return _CONTAINERS[tag](decode(item, handle) for item in _list(body))
        if tag == "d":
            return {decode(key, handle): decode(item, handle) for key, item in (_pair(p) for p in _list(body))}
        if tag == "b":
            return binascii.a2b_base64(_str(body), strict_mode=True)
        if tag == "a":
            return bytearray(binascii.a2b_base64(_str(body), strict_mode=True))
        if tag == "x":
            return _SPECIAL_FLOATS[_str(body)]
        if tag == "i":
            return int(_str(body), 16)
        if tag == "c":
            real, imag = (decode(part) for part in _pair(body))
            if type(real) is not float or type(imag) is not float:
                raise NotBuiltin("malformed complex number")
            return complex(real, imag)
        if tag == "r":
            start, stop, step = _list(body)
            if not all(type(part) is int for part in (start, stop, step)):
                raise NotBuiltin("malformed range")
            return range(start, stop, step)
        if tag == "h" and handle is not None and type(body) is int:
            return handle(body)
    except (TypeError, ValueError, KeyError, binascii.Error) as error:  # unhashable keys, bad base64, ...
        if isinstance(error, NotBuiltin):
            raise
        raise NotBuiltin(f"malformed value ({tag!r}: {error})") from None
    raise NotBuiltin(f"malformed value (tag {tag!r})")


def _list(body) -> list:
    if type(body) is not list:
        raise NotBuiltin("malformed value (expected a list)")
    return body


def _pair(body) -> list:
    if type(body) is not list or len(body) != 2:
        raise NotBuiltin("malformed value (expected a pair)")
    return body


def _str(body) -> str:
    if type(body) is not str:
        raise NotBuiltin("malformed value (expected a string)")
    return body


class Channel:
    """Frames of JSON data over a pair of pipe descriptors; one request waits for one answer."""

    def __init__(self, read_fd: int, write_fd: int, limit_bytes: int):
        self.read_fd, self.write_fd, self.limit_bytes = read_fd, write_fd, limit_bytes

    def send(self, message) -> None:
        body = json.dumps(message, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")
        view = memoryview(len(body).to_bytes(HEADER_BYTES, "big") + body)
        while view:
            view = view[os.write(self.write_fd, view):]

    def receive(self):
        size = int.from_bytes(self._read(HEADER_BYTES), "big")
        if size > self.limit_bytes:
            raise NotBuiltin(f"a message of {size} bytes is past the limit of {self.limit_bytes}")
        try:
            return json.loads(self._read(size))
        except (ValueError, RecursionError) as error:  # not JSON, or nested past the interpreter's depth
            raise NotBuiltin(f"malformed message ({type(error).__name__})") from None

    def _read(self, size: int) -> bytes:
        chunks, left = [], size
        while left:
            chunk = os.read(self.read_fd, min(left, 1 << 20))
            if not chunk:
                raise ChannelClosed("the other side ended")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
