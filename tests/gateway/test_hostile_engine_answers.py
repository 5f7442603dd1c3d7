"""The answer path with one engine an attacker runs (a FAKE engine on a real socket, hostile_engine.py, read by the
gateway's real adapter; the grid of test_hostile_engines.py): what of its answer reaches the client, and how much
of it the gateway reads."""

from __future__ import annotations

import orjson
import pytest

from tests.gateway import hostile_engine as H
from tests.gateway.test_exit_paths import the_one_record
from tests.gateway.test_hostile_engines import SANE, grid

HOSTILE_HEADERS = ["set-cookie: session=stolen; Path=/", "location: https://evil.example/",
                   "content-security-policy: default-src *", "access-control-allow-origin: *",
                   "access-control-allow-credentials: true", "x-frame-options: ALLOWALL", "link: <https://evil.example>"]


@pytest.mark.parametrize("door", ["chat", "completions"])
@pytest.mark.parametrize("stream", [False, True])
async def test_an_engines_headers_never_make_its_answer_a_page_nor_reach_the_client(
        tmp_path, door: str, stream: bool) -> None:
    """The engine's content-type was passed on as it wrote it, once it named JSON (`"json" in` it) or began
    `text/event-stream`: `text/html; x=json` (or `text/event-stream, text/html`, which a browser reads as its last
    type, text/html) made an answer the model (or the engine) wrote `<script>` into a page of the gateway's origin
    (a cross-site form can POST a text/plain body that is JSON). Now the client gets the type the gateway checked
    the answer has: application/json, or text/event-stream. The engine's other headers never reach the client."""
    page = "<script>alert(document.domain)</script>"

    def script(path: str, req: dict) -> H.Script:
        if req.get("stream"):
            return [H.head(200, "text/event-stream, text/html", chunked=True, extra=HOSTILE_HEADERS),
                    *H.sse(H.token(page), H.token("", "stop"))]
        return H.whole(orjson.dumps(H.answer_of(page)), content_type="text/html; x=json", extra=HOSTILE_HEADERS)

    async for g in grid(tmp_path, script, good=script):
        r = await g.post(door, stream)
        assert r.status_code == 200, r.text
        assert page.encode() in r.content  # the answer itself is passed on
        assert r.headers["content-type"] == ("text/event-stream" if stream else "application/json")
        for name in ("set-cookie", "location", "content-security-policy", "access-control-allow-origin",
                     "access-control-allow-credentials", "x-frame-options", "link"):
            assert name not in r.headers, name
        assert (await the_one_record(g.gw))["outcome"] == "ok"


async def test_a_sane_answer_keeps_its_type(tmp_path) -> None:
    """The common case unchanged: an engine's `application/json` answer is application/json."""
    async for g in grid(tmp_path, lambda p, r: H.whole(orjson.dumps(SANE))):
        r = await g.post("chat", False)
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
