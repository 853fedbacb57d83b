"""Journal payloads: how a command is stored in a record.

A payload is the orjson serialisation of the JSON array ``[type, field1, field2, ...]``: the
command's registered name, then its fields in declaration order (``cls._FIELDS``; the
envelope ``seq``/``ts`` is stored beside the payload, not in it)::

    ["place_order","B047","CEA-2026","main","buy",87,8336,"limit","GTC",false,null]

Positional rather than an object: about half the bytes (79 against 189 for that order) and
about 45 % fewer instructions to write, and writing it is on the core's path for every
command. The price is a rule for command classes: **never reorder, rename or remove a
field; add new fields at the end, with a default.** An older (shorter) record then decodes
with the new field's default, and tests/test_journal.py pins every command's field order so
a change that breaks old records fails CI.

Records written before this format hold the object form of ``encode_command``
(``{"type": ..., field: value, ...}``); every reader here takes both.

The generated encoders and decoders are the replay and submit hot paths: a decoder sets the
fields on a bare instance instead of going through the dataclass ``__init__`` (several times
faster); lists become tuples, as in :func:`decode_command`, for every field not annotated as a
scalar; anything unusual (missing or extra fields, a ``__post_init__``) takes the slow path
(``decode_command``).
"""

from __future__ import annotations

from typing import Any, Callable

import orjson

from ..core.commands import COMMAND_TYPES, Command, decode_command

#: a command's encoder: the command -> its payload followed by a newline
LineEncoder = Callable[[Command], bytes]
#: a loaded payload's decoder: payload -> the command (its envelope is the record's seq/ts)
Decoder = Callable[[Any], Command]

_dumps = orjson.dumps
_NL = orjson.OPT_APPEND_NEWLINE
_SCALAR = {
    "str",
    "int",
    "bool",
    "float",
    "str | None",
    "int | None",
    "bool | None",
    "float | None",
    "None | str",
    "None | int",
}


def _tup(v: list[Any]) -> tuple[Any, ...]:
    return tuple(tuple(x) if isinstance(x, list) else x for x in v)


# --------------------------------------------------------------------------- encoding


def _make_line_encoder(cls: type[Command]) -> LineEncoder:
    if not all(f.isidentifier() for f in cls._FIELDS):
        return lambda c: _dumps((c.TYPE, *(getattr(c, f) for f in c._FIELDS)), option=_NL)
    body = "".join(f" c.{f}," for f in cls._FIELDS)
    ns: dict[str, Any] = {"dumps": _dumps, "NL": _NL}
    exec(f"def enc(c):\n    return dumps(({cls.TYPE!r},{body}), option=NL)", ns)
    enc: LineEncoder = ns["enc"]
    return enc


try:  # the same encoder in C (_accel.c: append_line, used by its Submitter), built with
    # the package where a compiler is; it takes the classes registered here
    from ._accel import register as _c_register
except ImportError:  # pragma: no cover - an install without the extension
    _c_register = None


class _LineEncoders(dict[type[Command], LineEncoder]):
    def __missing__(self, cls: type[Command]) -> LineEncoder:
        enc = self[cls] = _make_line_encoder(cls)
        if _c_register is not None:
            _c_register(cls, _dumps([cls.TYPE])[:-1], tuple(cls._FIELDS))
        return enc


LINE_ENCODERS = _LineEncoders()  # class -> fn(cmd) -> payload + b"\n"


#: whether the C encoder (byte for byte this module's, tests/test_journal_hotpath.py) is built
C_ENCODER = _c_register is not None


def payload_line(cmd: Command) -> bytes:
    """``cmd``'s payload followed by a newline (what :class:`~.base.Frames` holds)."""
    return LINE_ENCODERS[cmd.__class__](cmd)


def payload_bytes(cmd: Command) -> bytes:
    """``cmd``'s payload."""
    return LINE_ENCODERS[cmd.__class__](cmd)[:-1]


def dict_payload(d: dict[str, Any]) -> bytes:
    """The payload of a command given as its :func:`encode_command` dict. Anything else (a
    type this process has not registered, missing or extra fields) is stored as given, in
    the object form, which every reader takes too."""
    cls: type[Command] | None = COMMAND_TYPES.get(d.get("type", ""))
    if cls is None or set(d) != {"type", *cls._FIELDS}:
        return _dumps(d)
    return _dumps([d["type"], *[d[f] for f in cls._FIELDS]])


# --------------------------------------------------------------------------- decoding


def _annotations(cls: type[Command]) -> dict[str, Any]:
    ann: dict[str, Any] = {}
    for klass in reversed(cls.__mro__):
        ann.update(getattr(klass, "__annotations__", {}))
    return ann


def _make_decoder(name: str, positional: bool) -> Decoder:
    cls: type[Command] = COMMAND_TYPES[name]
    fields = cls._FIELDS
    slow: Decoder = _slow_array if positional else decode_command
    if hasattr(cls, "__post_init__") or not all(f.isidentifier() for f in fields):
        return slow
    ann = _annotations(cls)
    lines = [
        "def dec(d):",
        f"    if len(d) != {len(fields) + 1}:",
        "        return slow(d)",
        "    c = new(cls)",
    ]
    for i, f in enumerate(fields, 1):
        src = f"d[{i}]" if positional else f"d[{f!r}]"
        if str(ann.get(f, "")).strip() in _SCALAR:
            lines.append(f"    c.{f} = {src}")
        else:
            lines.append(f"    v = {src}")
            lines.append(f"    c.{f} = tup(v) if v.__class__ is list else v")
    lines.append("    return c")
    ns: dict[str, Any] = {"new": object.__new__, "cls": cls, "slow": slow, "tup": _tup}
    exec("\n".join(lines), ns)
    dec: Decoder = ns["dec"]
    if positional:
        return dec

    def safe(d: dict[str, Any]) -> Command:
        # a dict without one of the fields: decode_command's defaults
        try:
            return dec(d)
        except KeyError:
            return decode_command(d)

    return safe


def _slow_array(a: list[Any]) -> Command:
    return decode_command(payload_dict(a))


class _Decoders(dict[str, Decoder]):
    def __init__(self, positional: bool) -> None:
        super().__init__()
        self.positional = positional

    def __missing__(self, name: str) -> Decoder:
        dec = self[name] = _make_decoder(name, self.positional)
        return dec


_ARRAY_DECODERS = _Decoders(True)
_DICT_DECODERS = _Decoders(False)


def decode_payload(obj: list[Any] | dict[str, Any]) -> Command:
    """The command of a loaded payload (``orjson.loads`` of it, either form); its envelope
    is the record's ``seq``/``ts``, which the reader passes to ``apply`` beside it. KeyError
    for a type this process has not registered."""
    if isinstance(obj, list):
        return _ARRAY_DECODERS[obj[0]](obj)
    return _DICT_DECODERS[obj["type"]](obj)


def payload_dict(obj: list[Any] | dict[str, Any]) -> dict[str, Any]:
    """A loaded payload (either form) as the :func:`encode_command` dict. A positional
    record of an unregistered type comes back as ``{"type": ..., "values": [...]}``."""
    if not isinstance(obj, list):
        return obj
    name, values = obj[0], obj[1:]
    cls: type[Command] | None = COMMAND_TYPES.get(name)
    if cls is None:
        return {"type": name, "values": values}
    if len(values) > len(cls._FIELDS):
        raise ValueError(
            f"{name} record has {len(values)} fields; this version of the "
            f"command has {len(cls._FIELDS)}"
        )
    return {"type": name, **dict(zip(cls._FIELDS, values))}


def is_payload(obj: object) -> bool:
    """Whether a loaded payload has the shape of one (either form)."""
    if isinstance(obj, list):
        return bool(obj) and isinstance(obj[0], str)
    return isinstance(obj, dict) and "type" in obj


__all__ = [
    "payload_line",
    "payload_bytes",
    "dict_payload",
    "decode_payload",
    "payload_dict",
    "is_payload",
]
