"""Strict checks of what the gateway answers against the official SDKs' own types. The SDKs build their
objects leniently (a missing or mistyped field is no error until a user reads it); these validate the raw JSON
with the type's pydantic validation, so a field the real API always sends and the gateway left out fails."""

from __future__ import annotations

import importlib.metadata
import inspect
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError


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


async def parsed(raw: Any) -> Any:
    """What a raw response (`client.X.with_raw_response.Y(...)`) parses to, in every SDK major: anthropic 1 and
    later parse an async client's raw response with `await raw.parse()`, anthropic 0.x and openai (its
    LegacyAPIResponse) with a plain `raw.parse()`."""
    got = raw.parse()
    return await got if inspect.isawaitable(got) else got


def needs(owner: Any, *path: str) -> Any:
    """`owner.a.b...` (path "a", "b"), or a skip naming it where this SDK version has no such attribute (an older
    major run by scripts/sdk_matrix.py: a feature it lacks is a skip, not a failure)."""
    got = owner
    for name in path:
        if not hasattr(got, name):
            sdk = type(owner).__module__.split(".")[0]
            pytest.skip(f"{sdk} {importlib.metadata.version(sdk)} has no {'.'.join(path)}")
        got = getattr(got, name)
    return got


def needs_mcp_error_objects() -> None:
    """Skip, naming it, where this openai SDK types `mcp_call.error` as a string (majors 1 and 2, run by
    scripts/sdk_matrix.py; their stream helper's accumulated Response then fails to serialize a failed run): the
    gateway writes the object the current API and SDK type (McpToolCallError: `mcp_tool_execution_error`, ...)."""
    import openai
    from openai.types.responses.response_output_item import McpCall

    error: Any = McpCall.model_fields["error"].annotation
    try:
        TypeAdapter(error).validate_python(
            {"type": "mcp_tool_execution_error", "content": []})
    except ValidationError:  # an older SDK's Optional[str]
        pytest.skip(f"openai {openai.__version__} types mcp_call.error as a string, not McpToolCallError")
