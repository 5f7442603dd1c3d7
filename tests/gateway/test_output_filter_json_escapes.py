"""Personal data written with JSON escapes in a JSON answer (a `response_format` answer, a native tool-loop turn) or
in a tool call's `arguments`: the client's parser reads "jo\\u0040example.com" as the address, so the output
redaction reads each JSON text's strings decoded (output_filter.EscapeReader), streamed or not, and what it sends
stays valid JSON. Until the twenty-fourth session it read the text as written and each item below passed."""

from __future__ import annotations

import itertools
import json
import random
import re
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.gateway.output_filter import EscapeReader, OutputFilter, json_read, redact_json_answer
from aigrid.security.firewall.injection import InjectionModel
from aigrid.security.firewall.pii import find_pii, redact
from aigrid.security.firewall.pipeline import Action, Firewall, FirewallPolicy
from aigrid.security.firewall.texts import Source
from tests.agents.scripted_engine import ScriptedEngine
from tests.gateway.conftest import _no_sleep, spec_in
from tests.gateway.planted_tool import Planted

ITEMS = {"EMAIL": ("jo@example.com", "jo\\u0040example.com"),
         "CARD": ("4111 1111 1111 1111", "4111\\u00201111\\u00201111\\u00201111"),
         "SSN": ("078-05-1120", "078\\u002d05\\u002d1120")}
"""Kind: (the item, as a model writes it in a JSON string with escapes)."""


def answer_text(escaped: str) -> str:
    return '{"name": "Jo", "contact": "' + escaped + '", "n": 3}'


def assert_redacted(text: str, kind: str, item: str) -> None:
    value = orjson.loads(text)  # still valid JSON
    assert value["contact"] == f"[REDACTED:{kind}]", text
    assert value["name"] == "Jo" and value["n"] == 3
    assert item not in orjson.dumps(value).decode()


def firewall() -> Firewall:
    return Firewall(InjectionModel.load(), {"t": FirewallPolicy(pii_output=Action.REDACT),
                                            "flag": FirewallPolicy(pii_output=Action.FLAG)})


def whole(message: dict[str, Any]) -> bytes:
    return orjson.dumps({"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
                         "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", **message}}]})


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion.chunk", "model": "m", "created": 1,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


def streamed(pieces: list[str], field: str = "content", json_answer: bool = False) -> str:
    """The text a client puts together from a stream of `pieces` of one field (a content, or a call's arguments)."""
    f = OutputFilter(True, strip_usage=False, json_answer=json_answer)

    def delta(piece: str) -> dict[str, Any]:
        if field == "content":
            return {"content": piece}
        return {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}

    sent = [f.event(chunk(delta(p))) for p in pieces] + [f.event(chunk({}, "stop"))]
    assert f.flush_event() is None
    out = []
    for event in sent:
        assert event is not None
        d = event["choices"][0]["delta"]
        out.append(d.get("content") or "" if field == "content" else
                   "".join(c["function"].get("arguments") or "" for c in d.get("tool_calls") or ()))
    return "".join(out)


@pytest.mark.parametrize("kind", ITEMS)
def test_the_json_text_as_written_hides_the_item(kind: str) -> None:
    """The finding itself: find_pii on the text as written sees nothing, the decoded value has the item."""
    item, escaped = ITEMS[kind]
    assert not find_pii(answer_text(escaped))
    assert orjson.loads(answer_text(escaped))["contact"] == item and find_pii(item)


@pytest.mark.parametrize("kind", ITEMS)
def test_a_whole_json_answer_with_an_escaped_item_is_redacted(kind: str) -> None:
    item, escaped = ITEMS[kind]
    fw = firewall()
    out, verdicts = redact_json_answer(fw, "t", whole({"content": answer_text(escaped)}))
    assert_redacted(orjson.loads(out)["choices"][0]["message"]["content"], kind, item)
    assert [v.check for v in verdicts] == ["pii_output"] and kind.lower() in verdicts[0].detail.lower()
    flagged, verdicts = redact_json_answer(fw, "flag", whole({"content": answer_text(escaped)}))
    assert flagged == whole({"content": answer_text(escaped)}) and verdicts  # flagged: sent as it came


@pytest.mark.parametrize("kind", ITEMS)
def test_whole_tool_call_arguments_with_an_escaped_item_are_redacted(kind: str) -> None:
    item, escaped = ITEMS[kind]
    call = {"id": "x", "type": "function", "function": {"name": "mail", "arguments": answer_text(escaped)}}
    out, verdicts = redact_json_answer(firewall(), "t", whole({"content": None, "tool_calls": [call]}))
    assert_redacted(orjson.loads(out)["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"], kind, item)
    assert verdicts


@pytest.mark.parametrize("field", ["content", "arguments"])
@pytest.mark.parametrize("kind", ITEMS)
def test_a_streamed_escaped_item_is_redacted_wherever_the_chunks_are_cut(kind: str, field: str) -> None:
    """Cut once at every place of the text, and twice at every two places inside the item's escapes."""
    item, escaped = ITEMS[kind]
    text = answer_text(escaped)
    for cut in range(1, len(text)):
        assert_redacted(streamed([text[:cut], text[cut:]], field), kind, item)
    start = text.index(escaped)
    inside = range(start + 1, start + len(escaped))
    for a in inside:
        for b in inside:
            if a < b:
                assert_redacted(streamed([text[:a], text[a:b], text[b:]], field), kind, item)
    assert_redacted(streamed(list(text), field), kind, item)  # one character a chunk


CLEAN = '{"title": "caf\\u00e9 \\"menu\\"\\n", "path": "a\\/b", "emoji": "\\ud83d\\ude00", "n": [1, 2.5e3, null]}'


def test_a_clean_json_answer_passes_as_it_came_whole_and_streamed() -> None:
    """Nothing found: a whole answer's texts are kept as written (escapes and all) inside the answer orjson writes
    again (since f779b67c never the engine's bytes: the same JSON value), and so is a streamed JSON text without
    `\\u` or `\\/` escapes; one with them streams as the same JSON value, those escapes written as the characters
    they stand for (what the client's parser reads either way)."""
    message = {"content": CLEAN, "tool_calls": [{"id": "x", "type": "function",
                                                "function": {"name": "f", "arguments": CLEAN}}]}
    # the engine's own bytes: spaces after separators and ASCII escapes, as Python's json writes, not orjson's form
    body = json.dumps(orjson.loads(whole(message)), ensure_ascii=True).encode()
    out, verdicts = redact_json_answer(firewall(), "t", body)
    assert not verdicts and orjson.loads(out) == json.loads(body)
    said = orjson.loads(out)["choices"][0]["message"]
    assert said["content"] == CLEAN and said["tool_calls"][0]["function"]["arguments"] == CLEAN
    plain = '{"title": "menu \\"du jour\\"\\n\\t", "n": [1, 2.5e3, null], "ok": true}'
    for field in ("content", "arguments"):
        assert streamed([plain[:7], plain[7:30], plain[30:]], field) == plain
        got = streamed([CLEAN[:9], CLEAN[9:13], CLEAN[13:50], CLEAN[50:]], field)
        assert orjson.loads(got) == orjson.loads(CLEAN)


def test_a_text_answer_is_read_as_written() -> None:
    """An answer that is not JSON (its first character past spaces is not `{` or `[`) is what the client reads as
    written: an escape there is text, not a character, and passes unchanged."""
    prose = 'In JSON, write "\\u0040" for @ and "\\/" for /.'
    assert streamed([prose[:18], prose[18:]]) == prose
    out, verdicts = redact_json_answer(firewall(), "t", whole({"content": prose}))
    assert orjson.loads(out)["choices"][0]["message"]["content"] == prose and not verdicts


def test_the_reader_gives_the_same_json_value_however_the_text_is_cut() -> None:
    """Random JSON values written with every character escaped at random, cut at random: the reader's text is the
    same value, and holds no \\u escape a JSON string may hold as a character."""
    rng = random.Random(7)
    alphabet = ['a', '@', ' ', '-', '"', '\\', '/', '\n', '\x01', 'é', '\u200b', '😀', '\ud800', '\udc00', '7']
    for _ in range(300):
        value = {"k" + rng.choice(alphabet): ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
                                               for _ in range(rng.randint(1, 4))]}
        text = _escaped(value, rng)
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 6))))
        reader = EscapeReader(True)
        got = "".join(reader.written(reader.feed(text[a:b]), final=False)
                      for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True))
        got += reader.written(reader.flush(), final=True)
        assert got == json_read(text, True)
        assert json.loads(got) == json.loads(text)  # json: lone surrogates too
        assert not [m for m in re.findall(r"\\u([0-9a-f]{4})", got) if int(m, 16) >= 0x20 and m not in ("0022", "005c")
                    and not 0xD800 <= int(m, 16) < 0xE000]


def _escaped(value: Any, rng: random.Random) -> str:
    """`value` as JSON, each string character escaped as \\uXXXX at random (surrogate pairs for astral ones)."""

    def string(s: str) -> str:
        out = []
        for c in s:
            if rng.random() < 0.5 or c in '"\\' or ord(c) < 0x20 or 0xD800 <= ord(c) < 0xE000:
                data = c.encode("utf-16-be", "surrogatepass")
                out.append("".join(f"\\u{int.from_bytes(data[i:i + 2], 'big'):04x}" for i in range(0, len(data), 2)))
            else:
                out.append(c)
        return '"' + "".join(out) + '"'

    if isinstance(value, dict):
        return "{" + ", ".join(f"{string(k)}: {_escaped(v, rng)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_escaped(v, rng) for v in value) + "]"
    return string(value) if isinstance(value, str) else json.dumps(value)


def test_an_item_written_as_a_json_number_is_redacted_as_a_string() -> None:
    """A card number written as a JSON number was redacted as text: `{"card": [REDACTED:CARD]}`, not JSON. Its
    placeholder outside a string is now written as a string; one inside a string stays as it is."""
    text = '{"card": 4111111111111111, "all": [4111111111111111, "[REDACTED:CARD]", "4111 1111 1111 1111"], "n": 7}'
    want = {"card": "[REDACTED:CARD]", "all": ["[REDACTED:CARD]"] * 3, "n": 7}
    out, _ = redact_json_answer(firewall(), "t", whole({"content": text}))
    assert orjson.loads(orjson.loads(out)["choices"][0]["message"]["content"]) == want
    for field in ("content", "arguments"):
        for cut in range(1, len(text)):
            assert orjson.loads(streamed([text[:cut], text[cut:]], field)) == want


PIECES = ["4111", " ", "1111", "-", "078", "05", "1120", "jo", "@", "example", ".com", '"', "\\", "\n", "\t", "\x01",
          "\u200b", "+44", "20", "7946", "0958", ".", "(", ")", "DE89", "3704", "0044", "0532", "0130", "00", "\u00a0",
          "\uff10", "\U000e0041", "x", "n", "u", "/", "é"]


def test_whatever_the_strings_hold_and_however_they_are_escaped_and_cut_the_redacted_text_is_valid_json() -> None:
    """Strings of personal-data pieces, quotes, backslashes and control characters (escaped as `\\n`, `\\u0022`...,
    which must not be read into an item: `\\njo@example.com`) and a number that may be an item, each string's
    characters escaped at random, the text cut at random and streamed as content and as arguments: what the client
    gets is valid JSON, each value of it redacted as the text it is (`pii.redact`; a number that is an item as its
    placeholder, a string), and the same value as a whole answer's redaction."""
    rng = random.Random(11)
    fw = firewall()
    for _ in range(400):
        value: list[Any] = ["".join(rng.choice(PIECES) for _ in range(rng.randint(1, 8)))
                            for _ in range(rng.randint(1, 4))]
        value.insert(rng.randint(0, len(value)), rng.choice([4111111111111111, 442079460958, 7, None]))
        text = _escaped(value, rng)
        cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, 8))))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        out, _ = redact_json_answer(fw, "t", whole({"content": text}))
        redacted = json.loads(orjson.loads(out)["choices"][0]["message"]["content"])
        assert redacted == [redact(v) if isinstance(v, str) else redact(str(v)) if find_pii(str(v)) else v
                            for v in value], text  # each value redacted as the text it is
        for field in ("content", "arguments"):
            assert json.loads(streamed(pieces, field)) == redacted, (text, pieces)


def redacting_gateway(tmp_path: Path) -> tuple[Gateway, ScriptedEngine]:
    """A gateway whose default tenant redacts answers (`pii_output: redact`), every endpoint a scripted engine."""
    from aigrid.spec.models import FirewallSpec

    spec = spec_in(tmp_path)
    redacts = spec.tenants["default"].model_copy(update={"firewall": FirewallSpec(pii_output="redact")})
    spec = spec.model_copy(update={"tenants": {**spec.tenants, "default": redacts}})
    engine = ScriptedEngine([])
    gw = build_gateway(spec, dict.fromkeys((e.id for e in spec.endpoints), engine), rng=random.Random(2),
                       sleep=_no_sleep)
    return gw, engine


async def test_an_escaped_item_in_a_json_answer_through_the_gateway_is_redacted(tmp_path: Path) -> None:
    """The proxy path (a JSON `response_format`, no tools: the engine's answer goes to the client as it wrote it) and
    a native-mode tool loop's last turn (the one without tools, which carries the format), whole and streamed (the engine's content in pieces of 3 characters, cutting
    each escape)."""
    gw, engine = redacting_gateway(tmp_path)
    gw.agents.tools.add(Planted("crm", Source.TOOL_RESULT, "Customer 7 is Jo."))
    await gw.scraper.scrape_once()
    body = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "Contact as JSON"}],
            "response_format": {"type": "json_object"}}
    native = {**body, "tools": [{"type": "function", "function": {"name": "crm"}}], "aigrid_tool_mode": "native"}
    first_turns: list[tuple[dict[str, Any], list[dict[str, Any]]]] = [
        (body, []), (native, [{"tool_calls": [{"name": "crm", "arguments": {}}]}, {"content": "Jo."}])]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        for (kind, (item, escaped)), (request, first) in itertools.product(ITEMS.items(), first_turns):
            engine.replies = [*first, {"content": answer_text(escaped)}]
            r = await c.post("/v1/chat/completions", json=request)
            assert r.status_code == 200 and not engine.replies, r.text  # every turn asked
            assert_redacted(r.json()["choices"][0]["message"]["content"], kind, item)
            engine.replies = [*first, {"content": answer_text(escaped)}]
            r = await c.post("/v1/chat/completions", json={**request, "stream": True})
            assert r.status_code == 200 and not engine.replies, r.text
            events = [orjson.loads(line[6:]) for line in r.text.splitlines()
                      if line.startswith("data: {")]
            text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
            assert_redacted(text, kind, item)


BARE = '"jo\\u0040example.com"'
"""A JSON answer that is a bare string (a json_schema of `"type": "string"`): its client reads jo@example.com."""
AFTER_PROSE = 'Here it is: {"contact": "jo\\u0040example.com"}'
"""JSON after a line of prose, which a lenient client's parser (the first `{` on) reads."""


@pytest.mark.parametrize("text", [BARE, AFTER_PROSE])
def test_an_answer_under_a_json_response_format_is_read_as_json_whatever_its_first_character(text: str) -> None:
    """The request's `response_format` asks for JSON (routes.py passes it as `json_answer`): the answer is read as
    JSON even where its first character is not `{` or `[`. Until the twenty-fourth session the first character
    decided, and the escaped address passed, whole and streamed (the first assertion of each pair shows it)."""
    assert "jo@example.com" in json_read(text, True) and not find_pii(text)
    out, verdicts = redact_json_answer(firewall(), "t", whole({"content": text}), json_answer=True)
    content = orjson.loads(out)["choices"][0]["message"]["content"]
    assert "[REDACTED:EMAIL]" in content and "0040" not in content and verdicts
    for cut in range(1, len(text)):
        sent = streamed([text[:cut], text[cut:]], json_answer=True)
        assert "[REDACTED:EMAIL]" in sent and "0040" not in sent, (cut, sent)
    assert orjson.loads(streamed(list(BARE), json_answer=True)) == "[REDACTED:EMAIL]"
    # the reasoning beside it is prose, read as written
    prose = 'In JSON, write "\\u0040" for @.'
    out, verdicts = redact_json_answer(firewall(), "t", whole({"content": BARE, "reasoning_content": prose}), True)
    message = orjson.loads(out)["choices"][0]["message"]
    assert message["reasoning_content"] == prose and orjson.loads(message["content"]) == "[REDACTED:EMAIL]"


async def test_a_bare_json_string_answer_to_a_json_response_format_through_the_gateway_is_redacted(
        tmp_path: Path) -> None:
    """The proxy path: a request with a json_schema `response_format` whose answer is a bare JSON string, whole and
    streamed; the same answer to a request without one is prose, passed as written."""
    gw, engine = redacting_gateway(tmp_path)
    await gw.scraper.scrape_once()
    body: dict[str, Any] = {
        "model": "smollm2-135m", "messages": [{"role": "user", "content": "Jo's address?"}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": "string"}}}}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        for stream in (False, True):
            for request, expected in ((body, '"[REDACTED:EMAIL]"'),
                                      ({k: v for k, v in body.items() if k != "response_format"}, BARE)):
                engine.replies = [{"content": BARE}]
                r = await c.post("/v1/chat/completions", json={**request, "stream": stream})
                assert r.status_code == 200 and not engine.replies, r.text
                if stream:
                    events = [orjson.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
                    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
                else:
                    text = r.json()["choices"][0]["message"]["content"]
                assert text == expected, (stream, request.keys(), text)
