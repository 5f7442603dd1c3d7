"""JSON written after prose in an answer without a JSON `response_format` (`Here: {"contact": "jo\\u0040example.com"}`):
its strings are read as its client's parser reads them, from the first `{` or `[` on (output_filter.EscapeReader,
prose). Until the twenty-fifth session such an answer was read as written and the escaped address passed."""

from __future__ import annotations

import orjson
import pytest

from aigrid.gateway.output_filter import json_read, redact_json_answer
from aigrid.security.firewall.pii import find_pii
from tests.gateway.test_output_filter_json_escapes import firewall, streamed, whole

AFTER_PROSE = ['Here: {"contact": "jo\\u0040example.com", "n": 1}',
               'Sure!\n```json\n[{"card": "4111\\u00201111\\u00201111\\u00201111"}]\n```\nAnything else?',
               'The "ssn" is [\n  "078\\u002d05\\u002d1120"\n]',
               # a stray quote in the prose after a bracket (one that no JSON string follows, or one left open before a
               # line break) is prose: until the twenty-fifth session's review it flipped every string after it
               'Sizes [1]: 5" wide. {"c": "jo\\u0040example.com"}',
               'Sizes [1]: "5 wide\n{"c": "jo\\u0040example.com"}']


@pytest.mark.parametrize("text", AFTER_PROSE)
def test_json_after_prose_is_read_as_its_parser_reads_it_whole_and_streamed(text: str) -> None:
    assert not find_pii(text)  # as written, no item
    out, verdicts = redact_json_answer(firewall(), "t", whole({"content": text}))
    content = orjson.loads(out)["choices"][0]["message"]["content"]
    assert "[REDACTED:" in content and "\\u00" not in content and verdicts, content
    assert streamed(list(text)) == content  # a character a chunk
    for cut in range(1, len(text)):
        assert streamed([text[:cut], text[cut:]]) == content, cut


def test_prose_around_json_is_read_and_sent_as_written() -> None:
    """Before the first `{` or `[`, and outside the strings after it, the text is as written: an escape there is
    prose; a raw NUL and the escapes a JSON string may not hold raw go out as they came."""
    for text in ['In JSON, write "\\u0040" for @.', 'write \\u0040 {"a": "\\"q\\" \\\\ \\n"} \\u0040 \x00 "\x00"',
                 '[1] "x\\u00e9" and "y"', 'See [1] "x\\u00e9", "y"']:
        assert streamed(list(text)) == json_read(text, None)
    assert json_read('In JSON, write "\\u0040" for @.', None) == 'In JSON, write "\\u0040" for @.'
    assert json_read('write \\u0040 {"a": "\\"q\\" \\\\ \\n"} \\u0040 \x00', None) == \
        'write \\u0040 {"a": "\\"q\\" \\\\ \\n"} \\u0040 \x00'
    assert json_read('[1] "x\\u00e9"', None) == '[1] "xé"'  # a string after a bracket: its JSON value
    assert json_read('See [1] "x\\u00e9"', None) == 'See [1] "x\\u00e9"'  # in prose, a quote after "]" is prose
    assert json_read('See [1, "x\\u00e9"]', None) == 'See [1, "xé"]'
    out, _ = redact_json_answer(firewall(), "t", whole({"content": '{"n": "caf\\u00e9"} ok'}))
    assert orjson.loads(out)["choices"][0]["message"]["content"] == '{"n": "caf\\u00e9"} ok'  # nothing found: as it was
