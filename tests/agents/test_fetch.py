"""http_fetch: only allow-listed hosts, redirects checked hop by hop, bodies and time bounded.

The network is an httpx.MockTransport: every request the tool makes is recorded, so the tests also prove
that nothing off the list was ever contacted."""

from __future__ import annotations

import gzip
import time
import tracemalloc
import zlib

import httpx
import pytest

from aigrid.agents.fetch import HostAllowList, HttpFetch, html_to_text
from aigrid.agents.tool import NO_CONTEXT, ToolError

ALLOW = ["docs.example.org", "*.wiki.example", "127.0.0.1:8000"]


def site(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path == "/page":
        return httpx.Response(200, html="<html><script>var x=1;</script><h1>Hello</h1><p>grid</p></html>")
    if path == "/json":
        return httpx.Response(200, json={"ok": True})
    if path == "/hop":
        return httpx.Response(302, headers={"location": "/page"})
    if path == "/evil-redirect":
        return httpx.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data/"})
    if path == "/loop":
        return httpx.Response(302, headers={"location": "/loop"})
    if path == "/big":
        return httpx.Response(200, text="x" * 1_000_000)
    if path == "/image":
        return httpx.Response(200, content=b"\x89PNG....", headers={"content-type": "image/png"})
    return httpx.Response(404, text="not here")


@pytest.fixture
def seen() -> list[str]:
    return []


@pytest.fixture
async def tool(seen: list[str]) -> HttpFetch:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return site(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    yield HttpFetch(ALLOW, client, max_bytes=10_000)
    await client.aclose()


async def test_allowed_fetches(tool: HttpFetch) -> None:
    page = await tool.run({"url": "https://docs.example.org/page"}, NO_CONTEXT)
    assert page.startswith("HTTP 200 https://docs.example.org/page (text/html)") and page.endswith("Hello grid")
    assert '"ok":true' in (await tool.run({"url": "https://en.wiki.example/json"}, NO_CONTEXT)).replace(" ", "")
    hop = await tool.run({"url": "https://docs.example.org/hop"}, NO_CONTEXT)
    assert hop.startswith("HTTP 200 https://docs.example.org/page")
    assert "truncated" in await tool.run({"url": "http://127.0.0.1:8000/big"}, NO_CONTEXT)
    assert "binary content" in await tool.run({"url": "https://docs.example.org/image"}, NO_CONTEXT)
    assert (await tool.run({"url": "https://docs.example.org/nope"}, NO_CONTEXT)).startswith("HTTP 404")


@pytest.mark.parametrize("url", [
    "https://evil.example.com/",
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:8001/",            # allowed host, other port
    "http://127.0.0.1/",
    "https://docs.example.org.evil.com/",
    "https://docs.example.org@evil.com/",  # userinfo: the real host is evil.com
    "https://user:pw@docs.example.org/page",
    "https://wiki.example/",              # the wildcard covers subdomains only
    "file:///etc/passwd",
    "gopher://docs.example.org/",
    "ftp://docs.example.org/",
    "not a url",
    "http://[::1]:8000/",
])
async def test_urls_off_the_list_are_refused_without_a_request(tool: HttpFetch, seen: list[str], url: str) -> None:
    with pytest.raises(ToolError):
        await tool.run({"url": url}, NO_CONTEXT)
    assert seen == []


async def test_redirect_off_the_list_is_not_followed(tool: HttpFetch, seen: list[str]) -> None:
    with pytest.raises(ToolError, match="not on this site's allow-list"):
        await tool.run({"url": "https://docs.example.org/evil-redirect"}, NO_CONTEXT)
    assert seen == ["https://docs.example.org/evil-redirect"]
    with pytest.raises(ToolError, match="more than 3 redirects"):
        await tool.run({"url": "https://docs.example.org/loop"}, NO_CONTEXT)


async def test_timeouts_become_tool_errors() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(slow)) as client:
        with pytest.raises(ToolError, match="ReadTimeout"):
            await HttpFetch(ALLOW, client).run({"url": "https://docs.example.org/"}, NO_CONTEXT)


def test_allow_list_and_html() -> None:
    allow = HostAllowList(["Example.org"])
    assert allow.allows(httpx.URL("https://EXAMPLE.org./x"))
    assert not allow.allows(httpx.URL("https://sub.example.org/"))
    assert html_to_text("<p>a<style>p{}</style> <b>b</b></p>") == "a b"
    assert html_to_text("<script>" * 20_000) == ""  # linear: no regex over markup


@pytest.mark.parametrize("page", [
    "<a" * 50_000,                      # a tag left open, again and again: 6.7 s with HTMLParser (200 KB: 28 s)
    "<p title='" + "<a" * 50_000,
    "x<!--" + "<a" * 50_000,
    "<script>" + "</scrip" * 15_000,
    "<a>" * 35_000,
])
def test_html_is_read_in_linear_time(page: str) -> None:
    start = time.process_time()  # CPU time: a loaded machine's other processes do not count against it
    html_to_text(page)  # on the event loop: http_fetch reduces a page to text as it renders the result
    assert time.process_time() - start < 1.0


def test_html_to_text_keeps_the_text_and_only_the_text() -> None:
    assert html_to_text("<!DOCTYPE html><!-- c --><p title='a>b' class=\"x\">t&amp;u</p>") == "t&u"
    assert html_to_text("1 < 2 and 3 > 2, a<b") == "1 < 2 and 3 > 2, a"  # "<b" opens a tag left open: the end
    assert html_to_text("<SCRIPT type=x>alert(1)</SCRIPT >after<style>p{}</style><br/>end") == "after end"
    assert html_to_text("<p>unclosed <a href='x") == "unclosed"


def _zipped(data: bytes, wbits: int) -> bytes:
    z = zlib.compressobj(9, zlib.DEFLATED, wbits)
    return z.compress(data) + z.flush()


async def test_a_compressed_body_is_inflated_no_further_than_max_bytes() -> None:
    bomb = _zipped(b"a" * (64 << 20), 31)  # 64 MiB of gzip in 64 KB: read whole by httpx's decoder before
    asked: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        asked.append(request.headers.get("accept-encoding", ""))
        return httpx.Response(200, headers={"content-type": "text/plain", "content-encoding": "gzip"},
                              stream=httpx.ByteStream(bomb))  # as off the network: not read yet

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        tool = HttpFetch(ALLOW, client, max_bytes=10_000)
        tracemalloc.start()
        try:
            out = await tool.run({"url": "https://docs.example.org/"}, NO_CONTEXT)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert "truncated" in out and "\n" + "a" * 4_000 + "... (6000 more characters)" in out
    assert peak < 4 << 20  # about the compressed body (held by the test's transport) and max_bytes; 64 MiB before
    assert asked == ["gzip, deflate"]


@pytest.mark.parametrize(("encoding", "body"), [
    ("gzip", gzip.compress(b"<p>Hello</p>")),
    ("x-gzip", gzip.compress(b"<p>Hello</p>")),
    ("deflate", _zipped(b"<p>Hello</p>", 15)),     # zlib-wrapped, as the RFC says
    ("deflate", _zipped(b"<p>Hello</p>", -15)),    # raw deflate, as some servers send it
    ("identity", b"<p>Hello</p>"),
])
async def test_compressed_pages_are_read(encoding: str, body: bytes) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/html", "content-encoding": encoding},
                              stream=httpx.ByteStream(body))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        out = await HttpFetch(ALLOW, client).run({"url": "https://docs.example.org/"}, NO_CONTEXT)
    assert out.endswith("\nHello")


@pytest.mark.parametrize(("encoding", "body", "error"), [
    ("br", b"\x0b\x02\x80hello\x03", "not read here"),
    ("gzip, gzip", gzip.compress(gzip.compress(b"x")), "not read here"),
    ("gzip", b"not gzip at all", "could not be decompressed"),
])
async def test_a_body_that_cannot_be_read_is_a_tool_error(encoding: str, body: bytes, error: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/plain", "content-encoding": encoding},
                              stream=httpx.ByteStream(body))

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(ToolError, match=error):
            await HttpFetch(ALLOW, client).run({"url": "https://docs.example.org/"}, NO_CONTEXT)


async def test_no_cookie_is_kept_from_one_fetch_to_the_next() -> None:
    """The tool fetches for every tenant through one client: a cookie a site set in one fetch (a session opened
    by one tenant's URL) went with every later fetch to that site, any tenant's, and the jar grew for good."""
    cookies: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        cookies.append(request.headers.get("cookie"))
        return httpx.Response(200, text="ok", headers=[("set-cookie", "session=tenant-a; Path=/"),
                                                       ("set-cookie", f"c{len(cookies)}={'v' * 3000}; Path=/p")])

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        tool = HttpFetch(ALLOW, client)
        for _ in range(3):
            await tool.run({"url": "https://docs.example.org/p/login?token=a"}, NO_CONTEXT)
        assert cookies == [None, None, None] and len(client.cookies.jar) == 0


async def test_a_server_that_drips_its_body_is_cut_at_the_whole_fetch_deadline() -> None:
    """A local server sends its headers, then a byte a second: each read is within httpx's timeout, so before
    the whole-fetch deadline the fetch went on as long as the loop's tool timeout (which had no upper bound)."""
    import asyncio

    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 100000\r\n\r\n")
            for _ in range(100_000):
                writer.write(b"x")
                await writer.drain()
                await asyncio.sleep(1)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(drip, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient() as client:
            fetch = HttpFetch([f"127.0.0.1:{port}"], client, timeout_s=5.0, deadline_s=2.5)
            start = time.monotonic()
            with pytest.raises(ToolError, match=r"longer than 2.5s \(the whole fetch's deadline\)"):
                await asyncio.wait_for(fetch.run({"url": f"http://127.0.0.1:{port}/slow"}, NO_CONTEXT), 20)
            assert time.monotonic() - start < 6
    finally:
        server.close()
        await server.wait_closed()
