"""`aigrid bench` sends a base URL's user:password@ as HTTP Basic credentials, as curl and the OpenAI SDKs' httpx
do: the load generator redacted it in every error (thirty-third session) but never sent it, so every request to a
gateway behind a proxy that asks for them was a 401. An Authorization the user gives (--header, --api-key) wins.
The Host header is the URL's host and port alone (an IPv6 literal in brackets)."""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from typer.testing import CliRunner

from aigrid.cli import app

runner = CliRunner()
DONE = (b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":8,"completion_tokens":1,"total_tokens":9}}\n\n'
        b"data: [DONE]\n\n")


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Door(ThreadingHTTPServer):
    """A tiny OpenAI endpoint that answers only the Authorization it expects (401 to any other), and records
    each request's method, path and Authorization headers."""

    def __init__(self, wanted: str) -> None:
        self.wanted = wanted
        self.seen: list[tuple[str, str, list[str]]] = []
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, with a Content-Length on every answer
    server: Door

    def answer(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("content-type", kind)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_one(self, method: str) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        auth = self.headers.get_all("authorization") or []
        self.server.seen.append((method, self.path, auth))
        if auth != [self.server.wanted]:
            self.answer(401, b'{"error":{"message":"unauthorized"}}', "application/json")
        elif method == "GET" and self.path == "/v1/models":
            self.answer(200, b'{"object":"list","data":[{"id":"m","object":"model"}]}', "application/json")
        elif method == "POST" and self.path == "/v1/chat/completions":
            self.answer(200, DONE, "text/event-stream")
        else:
            self.answer(404, b"{}", "application/json")

    def do_GET(self) -> None:
        self.handle_one("GET")

    def do_POST(self) -> None:
        self.handle_one("POST")

    def log_message(self, *args: object) -> None:  # no access log on the test's stderr
        pass


@pytest.fixture
def door(request: pytest.FixtureRequest) -> Iterator[Door]:
    server = Door(request.param)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize(("door", "userinfo"), [
    (basic("ann", "s3cret"), "ann:s3cret"),
    (basic("ann", "p@ss:w"), "ann:p%40ss%3Aw"),  # percent-encoded in the URL, decoded when sent (as curl does)
    (basic("ann", ""), "ann"),  # a user alone: an empty password, as curl and httpx send it
], indirect=["door"])
def test_a_urls_user_and_password_are_sent_as_basic_auth(door: Door, userinfo: str) -> None:
    url = f"http://{userinfo}@127.0.0.1:{door.server_address[1]}/v1"
    r = runner.invoke(app, ["bench", url, "--mode", "closed", "-n", "3", "--concurrency", "1", "--quiet"],
                      env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert [(m, p) for m, p, _ in door.seen] == [("GET", "/v1/models")] + [("POST", "/v1/chat/completions")] * 3
    assert all(auth == [door.wanted] for _, _, auth in door.seen), door.seen
    assert "s3cret" not in r.output and "401" not in r.output, r.output


@pytest.mark.parametrize("door", ["Bearer k-1"], indirect=True)
@pytest.mark.parametrize("given", [["--header", "Authorization: Bearer k-1"], ["--api-key", "k-1"]])
def test_an_authorization_given_wins_over_the_urls_credentials(door: Door, given: list[str]) -> None:
    """With --header or --api-key the URL's user:password is not sent: one Authorization, the one given (GET
    /models sent the URL's Basic over it: httpx puts a URL's userinfo over the headers)."""
    url = f"http://ann:s3cret@127.0.0.1:{door.server_address[1]}/v1"
    r = runner.invoke(app, ["bench", url, "--mode", "closed", "-n", "2", "--concurrency", "1", "--quiet", *given],
                      env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert [auth for _, _, auth in door.seen] == [["Bearer k-1"]] * 3, door.seen


@pytest.mark.parametrize(("url", "host"), [
    ("http://ann:s3cret@127.0.0.1:8080/v1", "host: 127.0.0.1:8080"),
    ("http://[::1]:8080/v1", "host: [::1]:8080"),  # was `host: ::1:8080`, which no server reads as host and port
])
def test_the_host_header_is_the_urls_host_and_port_without_its_userinfo(url: str, host: str) -> None:
    from aigrid.bench.http import Target

    head = Target(url).request_head("/chat/completions", 2, {}).decode().split("\r\n")
    assert head[1] == host and "s3cret" not in head[1], head
