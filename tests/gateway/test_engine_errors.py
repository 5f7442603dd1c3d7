"""An engine's own error in OpenAI's envelope (gateway/engine_errors.py): what it keeps and what it hides."""

from __future__ import annotations

import orjson

from aigrid.gateway.engine_errors import HIDE_CHARS, MAX_FIELD, MAX_MESSAGE, engine_refusal

URL = "http://10.1.2.3:8000"


def hide(text: str) -> str:
    return text.replace(URL, "fra-vllm")


def test_an_address_at_the_cut_is_hidden_whole_and_param_and_code_are_hidden_and_bounded() -> None:
    """The message was cut before addresses were hidden: an address straddling the cut was not matched and its
    first part reached the client; `param` and `code` were passed on unhidden and unbounded."""
    message = "x" * (MAX_MESSAGE - 10) + f" at {URL}/v1/chat"
    body = orjson.dumps({"error": {"message": message, "type": "BadRequestError", "param": f"{URL} " + "p" * 5000,
                                   "code": "c" * 5000}})
    err = orjson.loads(engine_refusal(body, 400, hide)[0])["error"]
    assert "10.1.2" not in err["message"] and len(err["message"]) <= MAX_MESSAGE
    assert err["param"].startswith("fra-vllm ") and len(err["param"]) == MAX_FIELD and len(err["code"]) == MAX_FIELD
    assert err["type"] == "invalid_request_error"


def test_types_follow_the_status_unless_the_engine_sent_one_of_openais() -> None:
    assert orjson.loads(engine_refusal(b"{}", 429)[0])["error"]["type"] == "rate_limit_error"
    assert orjson.loads(engine_refusal(b"oops", 503)[0])["error"] == {"message": "oops", "type": "server_error",
                                                                  "param": None, "code": None}
    kept = orjson.loads(engine_refusal(b'{"error": {"message": "m", "type": "permission_error", "code": 403}}', 403)[0])
    assert kept["error"] == {"message": "m", "type": "permission_error", "param": None, "code": None}


def test_the_message_of_a_body_cut_short_is_pulled_out_of_it() -> None:
    """A refusal cut at proxy.REFUSAL_MAX_BYTES (a 400 echoing a long request) is not valid JSON: its raw head
    (`{"error": {"message": ...`) was the client's message. Its message string is decoded up to where it was cut,
    an escape cut in two dropped; TGI's `error` string too; a body with neither is passed on as it is."""
    echoed = orjson.dumps({"error": {"message": "bad \"input\" \u00e9 " + "y" * 50_000, "type": "BadRequestError"}})
    cut = echoed[:30_000]
    err = orjson.loads(engine_refusal(cut, 400)[0])["error"]
    assert err["message"] == ("bad \"input\" \u00e9 " + "y" * 50_000)[:MAX_MESSAGE]
    assert orjson.loads(engine_refusal(b'{"error": {"message": "cut inside \\u00', 400)[0])["error"]["message"] \
        == "cut inside"
    assert orjson.loads(engine_refusal(b'{"error": "TGI\'s words, cut', 400)[0])["error"]["message"] == "TGI's words, cut"
    assert orjson.loads(engine_refusal(b"<html>bad gateway", 400)[0])["error"]["message"] == "<html>bad gateway"


def test_an_address_at_the_cut_of_a_body_cut_short_is_hidden_whole() -> None:
    """A body cut short had its message cut to 2 x MAX_MESSAGE characters before addresses were hidden, then to
    MAX_MESSAGE after: an address cut in two at the first cut was not matched, and where hiding shortened the text
    before it (an adapter's repr dropped: up to 4 KB) below MAX_MESSAGE, its first part reached the client."""
    dropped = "z" * 3_000  # what hiding removes, as engine_names.EngineNames.hide drops an adapter's repr

    def shortening(text: str) -> str:
        return hide(text).replace(dropped, "")

    head = dropped + "y" * (2 * MAX_MESSAGE - len(dropped) - len("http://10.1.2") - 4) + " at "  # cut after 10.1.2
    body = orjson.dumps({"error": {"message": head + URL + "/v1 " + "w" * 50_000}})[:30_000]
    message = orjson.loads(engine_refusal(body, 400, shortening)[0])["error"]["message"]
    assert "10.1" not in message and dropped not in message
    assert message.startswith("y" * 100)


def test_a_long_message_is_cut_at_a_space_before_it_is_hidden_and_an_address_at_that_edge_never_shows() -> None:
    """An engine's whole message was hidden, then cut to MAX_MESSAGE: hiding read all of it (up to
    proxy.REFUSAL_MAX_BYTES). It is cut first, at the last whitespace within HIDE_CHARS (never inside an address), then
    hidden, then cut again: an address straddling HIDE_CHARS is dropped whole, even where hiding shortened the text
    before it (adapters' reprs dropped) so far that the edge falls within MAX_MESSAGE."""
    dropped = "z" * 3_000
    read: list[int] = []

    def shortening(text: str) -> str:
        read.append(len(text))
        return hide(text).replace(dropped, "")

    head = (dropped + " ") * 2
    head += "y" * (HIDE_CHARS - len(head) - len("http://10.1.2") - 4) + " at "  # HIDE_CHARS falls after 10.1.2
    body = orjson.dumps({"error": {"message": head + URL + "/v1 " + "w" * 50_000}})
    message = orjson.loads(engine_refusal(body, 400, shortening)[0])["error"]["message"]
    assert "10.1" not in message and message.startswith("y" * 100) and message.endswith("y at")
    assert max(read) <= HIDE_CHARS
    read.clear()  # no whitespace to cut at: hidden whole, as before
    body = orjson.dumps({"error": {"message": "q" * (HIDE_CHARS - 10) + URL + "q" * 50_000}})
    message = orjson.loads(engine_refusal(body, 400, shortening)[0])["error"]["message"]
    assert "10.1" not in message and len(message) == MAX_MESSAGE and max(read) > 50_000
