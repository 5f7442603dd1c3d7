"""A path the gateway does not serve: the API's own 404 envelope, naming the route nearest a typo (difflib on
the app's own routes), nothing for a path near no route, and the client's path said back escaped and cut."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from aigrid.gateway.unknown_path import SHOWN_PATH_CHARS

ANTHROPIC = {"anthropic-version": "2023-06-01"}


def _openai_message(r: httpx.Response) -> str:
    assert r.status_code == 404, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["code"] == "not_found", err
    return str(err["message"])


def _anthropic_message(r: httpx.Response) -> str:
    assert r.status_code == 404, r.text
    body = r.json()
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error", body
    return str(body["error"]["message"])


@pytest.mark.parametrize(("method", "path", "near"), [
    ("POST", "/v1/chat/completion", "/v1/chat/completions"),
    ("POST", "/v1/chat/complete", "/v1/chat/completions"),
    ("POST", "/v2/chat/completions", "/v1/chat/completions"),
    ("POST", "/v1/embedding", "/v1/embeddings"),
    ("GET", "/v1/model", "/v1/models"),
    ("POST", "/v1/model", "GET /v1/models"),  # the route takes another method: said
    ("POST", "/v1/response/compact", "/v1/responses/compact"),
    ("GET", "/v1/files/file-1/contents", "/v1/files/file-1/content"),  # a route's parameter: the client's own value
    ("GET", "/helthz", "/healthz"),
])
async def test_a_typo_of_a_route_is_told_the_route(client: httpx.AsyncClient, method: str, path: str,
                                                    near: str) -> None:
    """`POST /v1/chat/completion` got "Not Found: POST /v1/chat/completion" and nothing more."""
    message = _openai_message(await client.request(method, path, json={}))
    assert message == f"Not Found: {method} {path} (did you mean {near}?)", message


@pytest.mark.parametrize("headers", [{}, ANTHROPIC])
async def test_a_typo_of_the_messages_route_is_answered_in_anthropics_envelope(
        client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """/v1/message is not under /v1/messages, so it was answered in OpenAI's envelope to a client without
    `anthropic-version` (curl); the route it is near is Anthropic's, so is its envelope, with or without."""
    for path, near in (("/v1/message", "/v1/messages"), ("/v1/messages/count-tokens", "/v1/messages/count_tokens"),
                       ("/v1/message/batches", "/v1/messages/batches")):
        r = await client.post(path, json={}, headers=headers)
        assert _anthropic_message(r) == f"Not Found: POST {path} (did you mean {near}?)"
        assert r.headers["request-id"] == r.json()["request_id"]


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/v1/zzzz"),
    ("POST", "/v1/moderations"),  # OpenAI's, not served: not "/v1/conversations"
    ("POST", "/v1/complete"),  # Anthropic's legacy Text Completions: not "/v1/completions"
    ("POST", "/v1/images/generations"),  # not /v1/files/{file_id} filled with "generations"
    ("GET", "/v1/chat/completions/chatcmpl-1"),  # a resource below a route, not a typo of it
    ("GET", "/nothing-here"),
])
async def test_a_path_near_no_route_names_none(client: httpx.AsyncClient, method: str, path: str) -> None:
    message = _openai_message(await client.request(method, path))
    assert message == f"Not Found: {method} {path}", message


async def test_a_path_without_v1_is_told_the_base_url_not_a_route_too(client: httpx.AsyncClient) -> None:
    """/chat/completions is near /v1/chat/completions, but the mistake is the client's base URL, which the
    404 already names: one hint, not two."""
    message = _openai_message(await client.post("/chat/completions", json={}))
    assert "base URL is http://gw/v1" in message and "did you mean" not in message, message


async def test_a_long_path_is_said_back_cut_and_escaped(client: httpx.AsyncClient) -> None:
    """A client's path was said back whole, whatever its length, with what it held (<, ", control
    characters) as they came: now at most SHOWN_PATH_CHARS of it as a URL writes it, its length counted."""
    path = "/v1/" + '<script>"x"</script>%0A%1B' * 300
    r = await client.get(path)
    message = _openai_message(r)
    assert len(message) < SHOWN_PATH_CHARS + 80, len(message)
    assert message.startswith("Not Found: GET /v1/%3Cscript%3E%22x%22%3C/script%3E%0A%1B%3Cscript%3E"), message
    assert message.endswith(f"... ({len(path) - 2 * 2 * 300} characters)"), message  # %0A, %1B: 1 character each
    assert not any(c in message for c in '<>"\n\x1b'), message


async def test_a_routes_parameter_in_the_suggestion_is_escaped(client: httpx.AsyncClient) -> None:
    r = await client.get("/v1/files/<b>/contents")
    assert _openai_message(r) == "Not Found: GET /v1/files/%3Cb%3E/contents (did you mean /v1/files/%3Cb%3E/content?)"


async def test_a_method_a_path_does_not_take_is_still_said_so(client: httpx.AsyncClient) -> None:
    """The 405 under /v1/ answered as a 404 keeps its own sentence (no route is "near" a route it names)."""
    message = _openai_message(await client.get("/v1/chat/completions"))
    assert message == "GET /v1/chat/completions is not served by this gateway (this path takes POST)", message


@pytest.mark.parametrize(("path", "headers", "message"), [
    ("/v1/chat/completions", {}, _openai_message), ("/v1/messages", ANTHROPIC, _anthropic_message)])
async def test_a_method_a_path_does_not_take_carries_allow(client: httpx.AsyncClient, path: str,
                                                          headers: dict[str, str], message: Any) -> None:
    """The 405 under /v1/ is answered as the SDKs' 404 (their NotFoundError, as OpenAI's own API answers), in each
    API's envelope; it dropped Starlette's Allow header, so a client could read the methods only from the message.
    A path not served at all has none."""
    r = await client.get(path, headers=headers)
    assert "is not served by this gateway (this path takes POST)" in message(r)
    assert r.headers.get("allow") == "POST", dict(r.headers)
    r = await client.get("/v1/unknown-path")
    assert r.status_code == 404 and "allow" not in r.headers, dict(r.headers)
    r = await client.post("/healthz")  # off /v1/ a 405 stays one, with the Allow it must carry (RFC 9110)
    assert r.status_code == 405 and r.headers.get("allow") == "GET, HEAD", dict(r.headers)


def test_only_the_shown_part_of_a_long_path_is_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A path is said back cut, but was escaped whole first: 5.5 ms of the event loop for a 64 KiB path of "<"
    (a head's most), for 200 characters shown. Now only what is shown is escaped, and the cut tears no %XX."""
    from aigrid.gateway import unknown_path

    escaped: list[int] = []
    quote = unknown_path.quote

    def counting(s: str, safe: str) -> str:
        escaped.append(len(s))
        return quote(s, safe=safe)

    monkeypatch.setattr(unknown_path, "quote", counting)
    path = "/v1/" + "<" * 64 * 1024
    shown = unknown_path.shown_path(path)
    assert max(escaped) <= SHOWN_PATH_CHARS, escaped
    assert shown == "/v1/" + "%3C" * 65 + f"... ({len(path)} characters)", shown  # not "%3C" * 65 + "%"
    for n in range(SHOWN_PATH_CHARS - 3, SHOWN_PATH_CHARS + 3):  # every place a cut can fall: whole, or nothing
        head = unknown_path.shown_path("/" + "a" * n + "<" * 100).split("...")[0]
        assert head.endswith(("a", "%3C")) and len(head) <= SHOWN_PATH_CHARS, (n, head)
    assert unknown_path.shown_path("/" + "<" * 66) == "/" + "%3C" * 66  # 199 escaped: whole, no count


def test_a_file_not_found_under_a_mount_is_told_no_route() -> None:
    """The dashboard's static folder (a Mount) answers a file it does not hold with a 404 through the same
    handler: /dashboard/static/x was told "did you mean /dashboard/state?", a route it is no typo of."""
    from starlette.responses import Response
    from starlette.routing import Mount, Route

    from aigrid.gateway.unknown_path import RouteIndex

    index = RouteIndex([Route("/dashboard/state", Response, methods=["GET"]), Mount("/dashboard/static", app=Response)])
    assert index.nearest("/dashboard/static/x") is None
    assert index.nearest("/dashboard/static/st") is None
    near = index.nearest("/dashboard/stat")  # beside the Mount, a typo still is one
    assert near is not None and near.path == "/dashboard/state"


async def test_the_routes_compared_are_read_once_per_app(client: httpx.AsyncClient,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Every 404 read the app's routes again (their segments, parameters and methods, and difflib's side of each
    route): 0.12 ms a 404. Now once per app (unknown_path.route_index), with the same answers."""
    from aigrid.gateway import unknown_path

    reads: list[int] = []
    templates = unknown_path._templates

    def counting(routes: Any) -> Any:
        reads.append(1)
        return templates(routes)

    monkeypatch.setattr(unknown_path, "_templates", counting)
    for method, path, near in (("POST", "/v1/chat/completion", "/v1/chat/completions"),
                               ("POST", "/v1/embedding", "/v1/embeddings"),
                               ("GET", "/v1/files/file-1/contents", "/v1/files/file-1/content"),
                               ("GET", "/helthz", "/healthz")):
        message = _openai_message(await client.request(method, path))
        assert message == f"Not Found: {method} {path} (did you mean {near}?)", message
    assert len(reads) == 1, reads


def test_two_threads_asking_at_once_each_get_their_own_paths_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """RouteIndex kept one difflib matcher per route for every caller: a thread that had set its path on one
    (set_seq1) and not yet read its ratio had the ratio of another thread's path, set meanwhile: /v1/embedding
    was told nothing. Each thread now compares with matchers of its own. Deterministic: the first thread is held
    between set_seq1 and ratio() until the second has asked."""
    import difflib
    import threading
    import types

    from starlette.responses import Response
    from starlette.routing import Route

    from aigrid.gateway import unknown_path

    first: list[threading.Thread] = []
    held, other_asked = threading.Event(), threading.Event()

    class Held(difflib.SequenceMatcher[str]):
        def ratio(self) -> float:
            if first and threading.current_thread() is first[0] and not held.is_set():
                held.set()
                assert other_asked.wait(10)
            return super().ratio()

    monkeypatch.setattr(unknown_path, "difflib", types.SimpleNamespace(SequenceMatcher=Held))
    index = unknown_path.RouteIndex([Route("/v1/embeddings", Response, methods=["POST"]),
                                     Route("/v1/models", Response, methods=["GET"])])
    said: dict[str, unknown_path.Near | None] = {}
    first.append(threading.Thread(target=lambda: said.update(first=index.nearest("/v1/embedding"))))
    first[0].start()
    assert held.wait(10)
    said["other"] = index.nearest("/v1/xxxxxxxxxx")  # the embeddings route compared, near nothing
    other_asked.set()
    first[0].join(10)
    assert said["other"] is None
    assert said["first"] is not None and said["first"].path == "/v1/embeddings", said
