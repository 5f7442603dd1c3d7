"""Strict checks of what the gateway answers against the official SDKs' own types. The SDKs build their
objects leniently (a missing or mistyped field is no error until a user reads it); these validate the raw JSON
with the type's pydantic validation, so a field the real API always sends and the gateway left out fails."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter


def strict(kind: Any, raw: Any) -> None:
    """`raw` (JSON already parsed) is a valid `kind` (an SDK model or a union of them), else AssertionError
    saying which fields are wrong."""
    try:
        TypeAdapter(kind).validate_python(raw)
    except Exception as e:  # pydantic's ValidationError: every wrong field, for the assertion's message
        raise AssertionError(f"not a valid {getattr(kind, '__name__', kind)}: {e}\n{raw}") from e


def sse_data(text: str) -> list[Any]:
    """The JSON of every `data:` line of an event stream, [DONE] left out."""
    import orjson

    return [orjson.loads(line[6:]) for line in text.splitlines()
            if line.startswith("data: ") and line[6:].strip() != "[DONE]"]
