"""The texts a model will read, per request shape, for the firewall's choke point (security/firewall/screen.py).

Each front door turns its body into `ModelText`s with their source and path, screens them, and writes the
screened texts back with `apply`. A new request shape adds one function here.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from aigrid.security.firewall.pipeline import Screened
from aigrid.security.firewall.texts import ModelText, Source, put

ROLE_SOURCE = {"user": Source.USER, "system": Source.SYSTEM, "developer": Source.SYSTEM,
               "assistant": Source.ASSISTANT, "tool": Source.TOOL_RESULT, "function": Source.TOOL_RESULT}


def chat_texts(body: Mapping[str, Any]) -> list[ModelText]:
    """OpenAI chat messages: string content, or the text parts of a content list."""
    out: list[ModelText] = []
    for i, message in enumerate(body.get("messages") or []):
        if not isinstance(message, Mapping):
            continue
        source = ROLE_SOURCE.get(str(message.get("role")), Source.USER)
        content = message.get("content")
        if isinstance(content, str):
            out.append(ModelText(content, source, ("messages", i, "content")))
        elif isinstance(content, list):
            out += [ModelText(part["text"], source, ("messages", i, "content", j, "text"))
                    for j, part in enumerate(content)
                    if isinstance(part, Mapping) and part.get("type") == "text" and isinstance(part.get("text"), str)]
    return out


def completion_texts(body: Mapping[str, Any]) -> list[ModelText]:
    """OpenAI completion prompt: a string or a list of strings."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [ModelText(prompt, Source.PROMPT, ("prompt",))]
    if isinstance(prompt, list):
        return [ModelText(p, Source.PROMPT, ("prompt", i)) for i, p in enumerate(prompt) if isinstance(p, str)]
    return []


def apply(body: MutableMapping[str, Any], original: list[ModelText], screened: Screened) -> None:
    """Write the texts the firewall changed (redactions) back into the body, in place."""
    for before, after in zip(original, screened.texts, strict=True):
        if after.text != before.text and after.path:
            put(body, after.path, after.text)
