"""agents/prompt_size.py: one count of a prompt's characters, whatever form its messages come in."""
from __future__ import annotations

from types import MappingProxyType

from aigrid.agents.prompt_size import message_chars, prompt_chars


def test_a_message_that_is_a_mapping_but_not_a_dict_is_counted_as_its_json_form() -> None:
    # prompt_chars takes any Mapping; a read-only view of a message must be read by its keys, as a dict is, not as a
    # validated message's attributes (it raised AttributeError on `.content` when only dict was read by key)
    message = {"role": "assistant", "content": "hello", "refusal": "no",
               "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    assert message_chars(MappingProxyType(message)) == message_chars(message) > len("hello") + len("no")
    assert prompt_chars({"messages": [MappingProxyType(message)]}) == prompt_chars({"messages": [message]})
