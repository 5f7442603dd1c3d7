"""An item that is only part of a JSON number (`4111111111111111.5`), redacted in an answer that is JSON: the answer
stays JSON, whole and streamed (gateway/output_filter.py, EscapeReader.written). Until the twenty-fifth session the
placeholder, written as a string, left the rest of the number beside it: `"[REDACTED:CARD]".5`."""

from __future__ import annotations

import json
import random
from typing import Any

import orjson
import pytest

from aigrid.gateway.output_filter import redact_json_answer
from aigrid.security.firewall.pii import find_pii, redact
from tests.gateway.test_output_filter_json_escapes import firewall, streamed, whole

PART = ('{"a": 4111111111111111.5, "b": -4155550100, "c": [0.4111111111111111e3, 4111111111111111.4111111111111111],'
        ' "d": "4111111111111111.5", "e": 1E+4111111111111111, "n": 7}')
WANT = {"a": "[REDACTED:CARD]", "b": "[REDACTED:PHONE]", "c": ["[REDACTED:CARD]", "[REDACTED:CARD]"],
        "d": "[REDACTED:CARD].5", "e": "[REDACTED:CARD]", "n": 7}
"""Each number an item is part of, as one placeholder (a string); in a string, the item alone (it is text)."""


def whole_content(text: str, json_answer: bool = False) -> str:
    out, _ = redact_json_answer(firewall(), "t", whole({"content": text}), json_answer)
    content: str = orjson.loads(out)["choices"][0]["message"]["content"]
    return content


def test_an_item_that_is_part_of_a_json_number_is_redacted_with_the_whole_number_whole_and_streamed() -> None:
    assert json.loads(whole_content(PART)) == WANT
    assert json.loads(streamed(list(PART))) == WANT  # a character a chunk
    for field in ("content", "arguments"):
        for cut in range(1, len(PART)):
            assert json.loads(streamed([PART[:cut], PART[cut:]], field)) == WANT, (field, cut)


def test_a_bare_number_answer_to_a_json_response_format_is_redacted_as_a_json_value() -> None:
    """An answer under a JSON `response_format` (json_answer) that is a bare number, whole and streamed: a JSON string.
    Without one it is prose (a stream cannot know that it parses before its end), redacted as text, whole and
    streamed alike."""
    for text, want in (("4111111111111111.5", "[REDACTED:CARD]"), (" -4155550100", "[REDACTED:PHONE]")):
        assert json.loads(whole_content(text, json_answer=True)) == want
        for cut in range(1, len(text)):
            assert json.loads(streamed([text[:cut], text[cut:]], json_answer=True)) == want, cut
    assert whole_content("call 4155550100.") == streamed(["call 415", "5550100."]) == "call [REDACTED:PHONE]."
    assert whole_content("4111111111111111.5") == streamed(["4111111111111111.5"]) == "[REDACTED:CARD].5"


def test_numbers_holding_items_cut_anywhere_stay_json_and_redacted() -> None:
    """Random numbers around items (a sign, a fraction, an exponent), in arrays, objects and strings, cut at random
    and streamed: valid JSON, no item left in it, the same value as the whole answer's redaction."""
    rng = random.Random(25)
    items = ["4111111111111111", "4155550100", "442079460958", "5555555555554444"]
    for _ in range(300):
        def digits() -> str:
            return rng.choice([*items, "7", "0", "12"])

        def number() -> str:  # a JSON number: an item as its whole part, its fraction or its exponent
            return (rng.choice(["", "-"]) + digits() + rng.choice(["", "." + digits()])
                    + rng.choice(["", "e" + digits(), "E+" + digits(), "e-" + digits()]))
        values = [number() for _ in range(rng.randint(1, 4))]
        quoted = [rng.random() < 0.3 for _ in values]
        text = "[" + ", ".join(f'"{v}"' if q else v for v, q in zip(values, quoted, strict=True)) + "]"
        json.loads(text)  # JSON to begin with (json, not orjson: an exponent of 16 digits is JSON, read as infinity)
        redacted = json.loads(whole_content(text))
        # each number an item found in the text is part of: its placeholder; a string: redacted as text; else as it was
        found = find_pii(text)
        want, at = [], 1
        for v, q in zip(values, quoted, strict=True):
            start, at = at + q, at + len(v) + 2 * q + 2
            mine = [m for m in found if start <= m.start < start + len(v)]
            want.append(redact(v) if q else f"[REDACTED:{mine[0].kind.upper()}]" if mine else json.loads(v))
        assert redacted == want, (text, redacted)
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(1, 6))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        got: Any = json.loads(streamed(pieces))
        assert got == redacted, (text, pieces)


@pytest.mark.timeout(60)
def test_a_long_run_of_digits_before_an_item_outside_a_string_is_read_in_linear_time() -> None:
    """A JSON answer of a number of 200,000 digits then an item outside a string, whole and sent in one chunk: redacted in
    milliseconds. Until the twenty-fifth session's review each number ending a text was looked for by a regex anchored
    at the end, tried from every start in the run: quadratic (20,000 digits: 1.7 s; 200,000: minutes, past the
    timeout, which leaves a margin of hundreds of times the linear reading's cost on a loaded machine)."""
    text = "[0." + "1" * 200_000 + ", 4111111111111111, null" + " " * 200 + "]"
    want = [0.1111111111111111, "[REDACTED:CARD]", None]
    assert json.loads(whole_content(text)) == want
    assert json.loads(streamed([text])) == want


@pytest.mark.parametrize("text,want", [
    ("[1] Call 4155550100. Thanks", "[1] Call [REDACTED:PHONE]. Thanks"),
    ("[1]\nCall +1 415 555 0100.", "[1]\nCall [REDACTED:PHONE]."),
    ("{see} card 4111111111111111e5 x", "{see} card [REDACTED:CARD]e5 x"),
    ('[1, 4111111111111111.5, {"b": -4155550100.5}]', '[1, "[REDACTED:CARD]", {"b": "[REDACTED:PHONE]"}]'),
])
def test_a_placeholder_where_no_json_value_is_stays_as_it_is(text: str, want: str) -> None:
    """An answer that begins with a bracket but is prose is read as JSON: a placeholder there is written as a string
    standing for a whole number only where JSON's grammar lets a number stand (after `[`, `,` or `:`, or alone).
    Until the twenty-fifth session's review a placeholder anywhere outside a string was, and the `.`, `-`, `+` or `e`
    beside it was dropped as part of the number: `[1] Call "[REDACTED:PHONE]" Thanks`."""
    assert whole_content(text) == want
    assert streamed(list(text)) == want
    for cut in range(1, len(text)):
        assert streamed([text[:cut], text[cut:]]) == want, cut
