"""Records read back from state that gateways of several versions share (a Redis of `gateway.stores`, the workers'
hub): a rolling upgrade or a rollback runs an older and a newer aigrid on one store at once, and a record the newer
one wrote holds fields the older one does not know (`listed` of StoredResponse, thirty-eighth session).

`read_record` rebuilds a record dataclass from its JSON fields: a field this version does not know is left out
(logged at INFO once per record type and field, so that an operator sees a newer writer), a field missing takes its
default (a record of an older writer), and a record that is truly unreadable (not an object, a required field missing,
a known field of the wrong type) is logged as an error and read as absent (None), never a 500. Before (thirty-eighth
session, review RV1) every reader did `StoredResponse(**d)`, which raised on the first field it did not know.

Older versions cannot be fixed: from this version on a reader tolerates what a newer writer adds, so a newer record is
safe to read here; an older gateway (before this version) still fails on one (docs/upgrading.md).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar, Union

import orjson

log = logging.getLogger("aigrid.gateway")
T = TypeVar("T")
TOLD_MOST = 1_000
"""(record type, unknown field) pairs logged at most per process: past it, new ones are dropped unlogged (a writer
that adds fields without end, which no aigrid is, would otherwise grow the set and the log without bound)."""
_told: set[tuple[str, str]] = set()
"""The pairs already logged: each once per process (the log line, not a store, is what is shared)."""


class Unreadable(ValueError):
    """A record no version of aigrid wrote as it is (its reason in args[0])."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The type of each field of dataclass `cls` (its annotations resolved)."""
    resolved = typing.get_type_hints(cls)
    return {f.name: resolved[f.name] for f in dataclasses.fields(cls)}


def _plain(hint: Any) -> type | None:
    """The class a value of type `hint` need only be an instance of: a class but int and float (a bool is neither
    here), or a list or dict of anything (`dict[str, Any]`: the keys of a JSON object are strings); else None."""
    if hint in (int, float) or hint is type(None):
        return None
    origin = typing.get_origin(hint)
    if origin is None:
        return hint if isinstance(hint, type) else None
    args = typing.get_args(hint)
    if origin is list and (not args or args[0] is Any):
        return list
    if origin is dict and (not args or args[1] is Any):
        return dict
    return None


@functools.cache
def _check(hint: Any) -> Callable[[object], bool]:
    """Whether a JSON value is one of type `hint` (the types a record's fields have: classes, unions, lists and
    dicts of them, Any); a bool is no int. Built once per type: a record's items are checked at about the cost of
    an isinstance each (a conversation of 1,000 items read twice as slowly as orjson parsed it when each value
    went through a generic check)."""
    if hint is Any:
        return lambda v: True
    plain = _plain(hint)
    if plain is not None:
        return lambda v: isinstance(v, plain)
    if hint is type(None):
        return lambda v: v is None
    if hint is int:
        return lambda v: isinstance(v, int) and not isinstance(v, bool)
    if hint is float:
        return lambda v: isinstance(v, int | float) and not isinstance(v, bool)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union or origin is types.UnionType:
        parts = [_check(arg) for arg in args]
        return lambda v: any(part(v) for part in parts)
    if origin is list:
        each_plain, each = _plain(args[0]), _check(args[0])
        if each_plain is not None:
            return lambda v: isinstance(v, list) and all(isinstance(x, each_plain) for x in v)
        return lambda v: isinstance(v, list) and all(each(x) for x in v)
    if origin is dict:
        value = _check(args[1])
        return lambda v: isinstance(v, dict) and all(value(x) for x in v.values())
    return lambda v: isinstance(origin, type) and isinstance(v, origin)


def _shown(hint: Any) -> str:
    """A field's type as its annotation reads (`dict[str, Any]`, `str | None`, `int`)."""
    if typing.get_origin(hint) is None and isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "")


def known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """`data`'s fields that dataclass `cls` has; each other one logged at INFO, once per type and field. Raises
    Unreadable for a known field of the wrong type."""
    hints = _hints(cls)
    known = {}
    for name, value in data.items():
        hint = hints.get(name)
        if hint is None:
            _tell(cls.__name__, name)
        elif not _check(hint)(value):
            raise Unreadable(f"field {name!r}: expected {_shown(hint)}, got {type(value).__name__}")
        else:
            known[name] = value
    return known


def read_record(cls: type[T], data: object, what: str) -> T | None:
    """Record `cls` rebuilt from its JSON fields `data` (known_fields); None, logged as an error naming `what`
    (where it was read: "a stored response in Redis"), for one that is unreadable."""
    try:
        if not isinstance(data, dict):
            raise Unreadable(f"not an object but {type(data).__name__}")
        return cls(**known_fields(cls, data))
    except (Unreadable, TypeError) as e:  # TypeError: a required field missing
        rid = data.get("id") if isinstance(data, dict) else None
        log.error("%s%s is unreadable (%s): read as absent", what, f" ({rid})" if isinstance(rid, str) else "", e)
        return None


def read_json_record(cls: type[T], raw: bytes | str, what: str, **more: object) -> T | None:
    """read_record of the JSON object `raw` with `more` fields added (a field kept beside it); None, logged, for
    `raw` that is not JSON."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        log.error("%s is unreadable (not JSON: %s): read as absent", what, e)
        return None
    return read_record(cls, {**data, **more} if isinstance(data, dict) else data, what)


def _tell(kind: str, name: str) -> None:
    told = (kind, name)
    if told in _told or len(_told) >= TOLD_MOST:
        return
    _told.add(told)
    log.info("a %s record holds field %r, which this aigrid does not know (written by a newer version sharing this "
             "store: a rolling upgrade or a rollback): the field is ignored here", kind, name)
