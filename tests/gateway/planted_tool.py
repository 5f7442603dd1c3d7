"""A server-side tool whose result is a planted text (test_choke_point.py's walk, and the tests of what the firewall,
the output filter and a key's tool scopes do with a tool's result, share it)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aigrid.agents.tool import ToolContext
from aigrid.security.firewall.texts import Source


class Planted:
    """A server-side tool whose result is the text under test, with the source a real tool of that kind
    declares (the mapping of real tools to sources is checked in test_choke_point.py)."""

    description = "returns a planted text"
    parameters: Mapping[str, Any] = {"type": "object", "properties": {}}

    def __init__(self, name: str, source: Source, text: str) -> None:
        self.name, self.source, self.text = name, source, text

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> str:
        return self.text
