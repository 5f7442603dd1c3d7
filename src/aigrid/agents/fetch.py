"""http_fetch: GET a URL, but only on hosts the operator allowed.

The allow-list holds host names (`docs.python.org`) or subdomain wildcards (`*.wikipedia.org`), optionally
with a port (`127.0.0.1:8000`). Every URL is checked after parsing (so `http://allowed@evil/` is judged by
its real host, `evil`), URLs with credentials are refused, only http and https are spoken, and redirects
are followed by hand, each hop checked against the same list: a redirect off the list is refused, never
followed. The body is read as a stream and cut at max_bytes; every read has a timeout, and the whole fetch
(connect, headers, body, every redirect) a deadline (`deadline_s`): httpx's timeout bounds each read only, so a
server that sends a byte every few seconds held the fetch as long as the loop's tool timeout. No cookie is kept
(`cookieless`): the tool fetches for every tenant alike.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator, Iterable, Mapping
from html import unescape
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from aigrid.agents.public_only import lookups_at_once
from aigrid.agents.tool import ToolContext, ToolError, require_str
from aigrid.security.firewall.texts import Source

MAX_OUTPUT = 4_000
DEADLINE_S = 10.0
"""A whole fetch (every hop, connect to the body's last byte) by default."""
TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml", "application/ld+json")
_SPACE = re.compile(r"\s+")


class HostAllowList:
    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(p.strip().lower() for p in patterns if p.strip())

    def allows(self, url: httpx.URL) -> bool:
        host = url.host.lower().rstrip(".")
        port = url.port or (443 if url.scheme == "https" else 80)
        for pattern in self.patterns:
            p_host, _, p_port = pattern.rpartition(":") if pattern.count(":") == 1 else (pattern, "", "")
            if p_port and (not (p_port.isascii() and p_port.isdigit()) or int(p_port) != port):
                continue
            if p_host.startswith("*."):
                if host.endswith(p_host[1:]) and host != p_host[2:]:
                    return True
            elif host == p_host:
                return True
        return False


_OPEN = re.compile(r"<(?:/?[A-Za-z]|[!?])")
"""A `<` that opens a tag, a comment, a declaration or a processing instruction (any other `<` is text)."""
_NAME = re.compile(r"/?([A-Za-z][A-Za-z0-9:-]*)")
_TAG_END = re.compile(r"[>\"']")
_SKIPPED = ("script", "style")


def html_to_text(html: str) -> str:
    """The visible text of an HTML page: tags (quoted attribute values holding `>` included), comments,
    declarations, scripts and styles removed, character references decoded. Linear time: each step finds, in C,
    the next tag or the end of what it opened and moves past it, and what is never closed ends the page.
    (Python's HTMLParser, used before, is quadratic on markup left open: a page of `<a` repeated, 200 KB, took
    28 s of the event loop.)"""
    lower = html.lower()
    parts: list[str] = []
    i, n = 0, len(html)
    while i < n:
        opened = _OPEN.search(html, i)
        if opened is None:
            parts.append(html[i:])
            break
        lt = opened.start()
        parts.append(html[i:lt])
        if html.startswith("<!--", lt):
            end = html.find("-->", lt + 4)
            if end < 0:
                break
            i = end + 3
            continue
        gt = _tag_end(html, lt + 1)
        if gt < 0:
            break  # a tag left open ends the page
        i = gt + 1
        tag = _NAME.match(html, lt + 1, gt)
        name = tag.group(1).lower() if tag is not None else ""
        if name in _SKIPPED and not html.startswith("/", lt + 1):
            close = lower.find("</" + name, i)
            gt = -1 if close < 0 else html.find(">", close)
            if gt < 0:
                break
            i = gt + 1
    return _SPACE.sub(" ", unescape(" ".join(parts))).strip()


def _tag_end(html: str, start: int) -> int:
    """Where the tag opened before `start` ends (its `>`, past quoted attribute values); -1 if it never does."""
    while (found := _TAG_END.search(html, start)) is not None:
        if found.group() == ">":
            return found.start()
        close = html.find(found.group(), found.end())
        if close < 0:
            return -1
        start = close + 1
    return -1


ACCEPT_ENCODING = "gzip, deflate"


class Inflate:
    """A gzip or deflate body decompressed at most `room` bytes at a time (a few MB of gzip inflate to gigabytes)."""

    def __init__(self, raw_deflate_fallback: bool) -> None:
        self._z = zlib.decompressobj(32 + zlib.MAX_WBITS)  # a gzip or a zlib header, read from the data
        self._fallback = raw_deflate_fallback  # servers that send "deflate" without its zlib header
        self._started = False
        self.done = False

    @classmethod
    def of(cls, content_encoding: str) -> Inflate | None:
        codings = [c.strip().lower() for c in content_encoding.split(",") if c.strip().lower() not in ("", "identity")]
        if not codings:
            return None
        if len(codings) > 1 or codings[0] not in ("gzip", "x-gzip", "deflate"):
            raise ToolError(f"the server sent its body as {content_encoding!r}, which is not read here "
                            f"(asked for: {ACCEPT_ENCODING})")
        return cls(raw_deflate_fallback=codings[0] == "deflate")

    def feed(self, data: bytes, room: int) -> bytes:
        try:
            out = self._z.decompress(data, max(room, 1))
        except zlib.error as e:
            if self._started or not self._fallback:
                raise ToolError(f"the body could not be decompressed: {e}") from e
            self._z, self._fallback = zlib.decompressobj(-zlib.MAX_WBITS), False
            return self.feed(data, room)
        self._started = True
        self.done = self._z.eof
        return out


def raw_body(response: httpx.Response) -> tuple[Inflate | None, AsyncIterator[bytes]]:
    """The body as it comes off the network and how to inflate it (None: as it is): httpx's own decoder inflates
    each piece whole (64 KiB of gzip is up to 66 MB) before the reader can count it. ToolError for a coding not
    read here."""
    if response.is_stream_consumed:  # built in memory (httpx.MockTransport): already read and decoded
        return None, response.aiter_bytes()
    return Inflate.of(response.headers.get("content-encoding", "")), response.aiter_raw()


def cookieless() -> CookieJar:
    """A cookie jar that keeps no cookie and so sends none, for a client that fetches for every tenant (http_fetch,
    image URLs). httpx's client keeps each Set-Cookie it is sent, for good: a site set a cookie in one tenant's
    fetch and read it back in another's (a session one tenant's fetch opened, another's used), and one that set 30
    cookies of 3 KB under new paths at every answer grew the gateway by 100 KB a fetch, never given back, and every
    later request to it by the cookies' size. (A jar, not httpx.Cookies: httpx copies those into a jar of its own.)"""
    return CookieJar(DefaultCookiePolicy(allowed_domains=[]))


class HttpFetch:
    name = "http_fetch"
    source = Source.WEB_PAGE
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {"url": {"type": "string", "pattern": "^https?://[^ ]{1,500}$"}},
        "required": ["url"],
        "additionalProperties": False,
    }

    def __init__(self, allow: Iterable[str], client: httpx.AsyncClient, *, max_bytes: int = 200_000,
                 timeout_s: float = 5.0, max_redirects: int = 3, deadline_s: float = DEADLINE_S) -> None:
        self.allow = HostAllowList(allow)
        self._client = client
        client.cookies = cookieless()  # the client is the tool's (gateway/agent_runtime.py makes it for it)
        self.max_bytes = max_bytes
        self.timeout = httpx.Timeout(timeout_s)
        self.deadline_s = deadline_s
        self.max_redirects = max_redirects
        hosts = ", ".join(self.allow.patterns) or "none"
        self.description = f"Fetch a web page or JSON document by URL (GET). Allowed hosts: {hosts}."

    def check(self, raw: str) -> httpx.URL:
        """The parsed URL if it may be fetched; ToolError saying why not otherwise."""
        try:
            url = httpx.URL(raw)
        except (httpx.InvalidURL, ValueError, TypeError) as e:
            raise ToolError(f"not a valid URL: {raw[:200]!r}") from e
        if url.scheme not in ("http", "https"):
            raise ToolError(f"only http and https URLs can be fetched, not {url.scheme or 'none'!r}")
        if url.userinfo:
            raise ToolError("URLs with credentials are not allowed")
        if not url.host or not self.allow.allows(url):
            raise ToolError(f"host {url.host!r} is not on this site's allow-list")
        return url

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> str:
        url = self.check(require_str(arguments, "url", max_len=2_000))
        try:  # its look-ups within the tenant's share of the DNS threads (public_only.TENANT_LOOKUPS)
            with lookups_at_once(None, tenant=context.tenant):
                async with asyncio.timeout(self.deadline_s):
                    return await self._fetch(url)
        except TimeoutError:
            raise ToolError(f"fetching {url} took longer than {self.deadline_s:g}s (the whole fetch's deadline)"
                            ) from None

    async def _fetch(self, url: httpx.URL) -> str:
        for _ in range(self.max_redirects + 1):
            try:
                status, headers, body, truncated = await self._get(url)
            except httpx.HTTPError as e:
                raise ToolError(f"fetching {url} failed: {type(e).__name__}: {e}") from e
            location = headers.get("location")
            if 300 <= status < 400 and location:
                url = self.check(str(url.join(location)))  # a hop off the list raises here
                continue
            return self._render(url, status, headers, body, truncated)
        raise ToolError(f"more than {self.max_redirects} redirects")

    async def _get(self, url: httpx.URL) -> tuple[int, httpx.Headers, bytes, bool]:
        """Status, headers and at most max_bytes of the body, decompressed here (`Inflate`), never by httpx: its
        decoder inflates each chunk read off the network whole, and 64 KiB of gzip is up to 66 MB."""
        chunks, size, truncated = [], 0, False
        async with self._client.stream("GET", url, timeout=self.timeout, follow_redirects=False,
                                       headers={"accept-encoding": ACCEPT_ENCODING}) as response:
            inflate, body = raw_body(response)
            async for raw in body:
                chunk = raw if inflate is None else inflate.feed(raw, self.max_bytes - size)
                chunks.append(chunk)
                size += len(chunk)
                if size >= self.max_bytes:
                    truncated = True
                    break
                if inflate is not None and inflate.done:
                    break
        return response.status_code, response.headers, b"".join(chunks)[: self.max_bytes], truncated

    @staticmethod
    def _render(url: httpx.URL, status: int, headers: httpx.Headers, body: bytes, truncated: bool) -> str:
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        head = f"HTTP {status} {url} ({ctype or 'unknown type'}{', truncated' if truncated else ''})"
        if ctype and not ctype.startswith(TEXT_TYPES):
            return f"{head}: {len(body)} bytes of binary content"
        text = body.decode("utf-8", errors="replace")
        if "html" in ctype:
            text = html_to_text(text)
        if len(text) > MAX_OUTPUT:
            text = text[:MAX_OUTPUT] + f"... ({len(text) - MAX_OUTPUT} more characters)"
        return f"{head}\n{text}"
