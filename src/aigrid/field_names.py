"""A field of a request named as its door's official API names it, from the field's parts (keys and list indices):
the one place a field's path is written (gateway/envelope.field_name is this function), so that a check anywhere
(the chat schema, the tool loop, the firewall, a front door's own) can hand its field on as parts
(errors.ApiError's `field`) and each door write it in its own form."""

from __future__ import annotations

from collections.abc import Sequence

Field = tuple[int | str, ...]
"""A field's parts: an object's keys (str) and a list's indices (int); ("messages", 0, "content")."""


def field_name(parts: Sequence[int | str], *, dotted: bool = False) -> str:
    """A field's path as its door's official API names it: OpenAI's (chat, completions, Responses, embeddings,
    their batches) a list's index in brackets and a key after a dot (`messages[0].content[1].text`, as OpenAI's
    "Invalid type for 'messages[0].content'"); Anthropic's (`dotted`: the Messages door, its batches) every part
    after a dot (`messages.0.content.1.text`, as its "messages.0: all messages must have non-empty content").
    Until the thirty-seventh session a schema's 400 said the dotted form on every door, while the grid's own checks
    on the OpenAI doors said brackets."""
    if dotted:
        return ".".join(map(str, parts))
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out
