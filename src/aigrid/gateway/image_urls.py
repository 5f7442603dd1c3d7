"""Images given by URL are fetched by the gateway, from public addresses only, and reach the engine inline.

An engine serving a vision model (vLLM, SGLang, llama.cpp with a projector) fetches an image part's web address
itself, from the site's network: a client that names `http://169.254.169.254/latest/meta-data/` or
`http://10.0.0.5/admin` has the engine send that request (server-side request forgery; vLLM's CVE-2025-6242),
and a name that resolves to a public address when checked can resolve to a private one when the engine looks it
up again. So with `security.image_urls: fetch` (the default) the gateway fetches each such image once, through
agents/public_only.PublicOnlyTransport (every address of the host global, connected to as checked, each
redirect checked again), at most MAX_IMAGE_BYTES an image and MAX_REQUEST_BYTES a request, with an image
content type, the whole fetch within FETCH_TIMEOUT_S (httpx's timeout bounds each read only: a server that sent a
byte every few seconds held it as long as it liked); the engine gets it as a `data:` URL. A compressed body is
inflated here, no further than the image may still take (agents/fetch.Inflate): httpx inflates each piece read
off the network whole, and 200 KB of gzip sent as `image/png` held 149 MB, 1.09 GB for a request of 8 images. `pass` sends the URL on (an engine
whose network is fenced off); `refuse` serves inline images only. A URL of another scheme (`file:`, `ftp:`) is
refused whatever the mode: engines read local files for some (vLLM's `--allowed-local-media-path`).

Image parts (schemas.IMAGE_PARTS) as a chat body carries them: `image_url: {"url": ...}` (OpenAI; also a bare
string), `input_image` with `image_url` (the Responses API's, when sent to chat), and `image` with a `source` of
type `url` (Anthropic's). The Messages and Responses APIs reach engines through the chat pipeline, so their
images are fetched the same way.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterator
from typing import Any, Literal

import httpx

from aigrid.agents.fetch import ACCEPT_ENCODING, cookieless, raw_body
from aigrid.agents.public_only import PublicOnlyTransport, lookups_at_once
from aigrid.agents.tool import ToolError
from aigrid.errors import InvalidRequest
from aigrid.field_names import Field, field_name
from aigrid.gateway.schemas import IMAGE_PARTS

ImageUrlMode = Literal["fetch", "pass", "refuse"]
MAX_IMAGE_BYTES = 10 * 1024 * 1024
MAX_REQUEST_BYTES = 20 * 1024 * 1024
FETCH_TIMEOUT_S = 10.0
MAX_IMAGE_URLS = 100
"""The most images a request may give by URL when the gateway fetches them (Anthropic's API takes 100 images a
request): each was fetched at once, a connection each, and a request of 400 KB with 5,000 URLs had 5,000 fetches in
flight, each a file descriptor for up to FETCH_TIMEOUT_S (the gateway's connections to the engines and its clients'
fail once they run out)."""
FETCHES_AT_ONCE = 8
"""A request's images fetched at the same time."""
LOOKUPS_AT_ONCE = 2
"""A request's DNS look-ups at the same time (public_only.lookups_at_once), well under the DNS_THREADS every tenant
shares: 100 URLs under a domain whose name server never answers, 8 at a time, held all 8 threads as long as the
resolver tried, and every other tenant's look-ups timed out meanwhile."""
REQUEST_TIMEOUT_S = 30.0
"""All of a request's images within this (each within FETCH_TIMEOUT_S)."""
MAX_REDIRECTS = 3
WEB = ("http://", "https://")
PUBLIC_ONLY = ("the gateway fetches images from public addresses only; send the image inline as a data: URL, or set "
               "security.image_urls: pass to have the engine fetch it")


def image_urls(messages: Any) -> Iterator[tuple[Field, dict[str, Any], str]]:
    """(where, holder, key) of each image part's URL that is not inline: holder[key] is the URL, `where` its
    field's parts."""
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        content = message.get("content") if isinstance(message, dict) else None
        for j, part in enumerate(content if isinstance(content, list) else ()):
            if not isinstance(part, dict) or part.get("type") not in IMAGE_PARTS:
                continue
            where: Field = ("messages", i, "content", j)
            image = part.get("image_url")
            source = part.get("source")
            if isinstance(image, dict) and isinstance(image.get("url"), str):
                holder, key, where = image, "url", (*where, "image_url", "url")
            elif isinstance(image, str):
                holder, key, where = part, "image_url", (*where, "image_url")
            elif isinstance(source, dict) and source.get("type") == "url" and isinstance(source.get("url"), str):
                holder, key, where = source, "url", (*where, "source", "url")
            else:
                continue
            if not holder[key].startswith("data:"):
                yield where, holder, key


class ImageUrls:
    """The gateway's handling of image URLs (module docstring); its HTTP client is made on the first fetch."""

    def __init__(self, mode: ImageUrlMode = "fetch", client: httpx.AsyncClient | None = None) -> None:
        self.mode = mode
        self._client = client

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            transport = PublicOnlyTransport(literals=False, hint=PUBLIC_ONLY)
            self._client = httpx.AsyncClient(transport=transport, trust_env=False, follow_redirects=True,
                                             max_redirects=MAX_REDIRECTS, timeout=FETCH_TIMEOUT_S,
                                             cookies=cookieless())  # no site's cookie kept from tenant to tenant
        return self._client

    async def inline(self, body: dict[str, Any], tenant: str | None = None) -> None:
        """The chat body's image URLs fetched and written in place as `data:` URLs (per the mode); a URL that
        cannot be is the client's 400 naming its part. `tenant`: whose request it is (its look-ups hold at most
        public_only.TENANT_LOOKUPS of the DNS threads, all its requests together)."""
        found = list(image_urls(body.get("messages")))
        for where, holder, key in found:
            if not holder[key].lower().startswith(WEB):
                raise InvalidRequest(f"{field_name(where)}: an image is given as an http(s) URL or a data: URL, not "
                                     f"{holder[key][:40]!r}", param=where, code="invalid_image_url")
            if self.mode == "refuse":
                raise InvalidRequest(f"{field_name(where)}: this grid takes images inline only (a data: URL with the image in "
                                     "base64), not by URL", param=where, code="image_url_not_allowed")
        if self.mode != "fetch" or not found:
            return
        if len(found) > MAX_IMAGE_URLS:
            where = found[MAX_IMAGE_URLS][0]
            raise InvalidRequest(f"{field_name(where)}: a request gives at most {MAX_IMAGE_URLS} images by URL ({len(found)} "
                                 "given); send the others inline as data: URLs", param=where,
                                 code="too_many_image_urls")
        budget = [MAX_REQUEST_BYTES]  # what the request's images may still take together, as their bytes arrive
        gate = asyncio.Semaphore(FETCHES_AT_ONCE)

        async def fetch(where: Field, url: str) -> tuple[str, bytes]:
            async with gate:
                return await self._fetch(where, url, budget)
        try:
            with lookups_at_once(LOOKUPS_AT_ONCE, tenant=tenant):  # its tasks take the request's (and tenant's)
                # share of the DNS threads
                async with asyncio.timeout(REQUEST_TIMEOUT_S), asyncio.TaskGroup() as group:  # a refusal stops the rest
                    tasks = [group.create_task(fetch(where, holder[key])) for where, holder, key in found]
        except* InvalidRequest as refused:
            raise refused.exceptions[0] from None
        except* TimeoutError:
            raise InvalidRequest(f"the request's images were not fetched within {REQUEST_TIMEOUT_S} s",
                                 param="messages", code="image_fetch_failed") from None
        for (_, holder, key), task in zip(found, tasks, strict=True):
            kind, data = task.result()
            holder[key] = f"data:{kind};base64,{base64.b64encode(data).decode()}"

    async def _fetch(self, where: Field, url: str, budget: list[int]) -> tuple[str, bytes]:
        """(content type, bytes) of one image; InvalidRequest naming `where` when it cannot be had. `budget`: the
        bytes the request's images may still take, shared by its fetches."""
        def refused(why: str, code: str = "image_fetch_failed") -> InvalidRequest:
            return InvalidRequest(f"{field_name(where)}: the image at {url[:200]!r} could not be fetched: {why}",
                                  param=where,
                                  code=code)

        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, ValueError):  # not an httpx.HTTPError: it escaped as a 500
            raise refused("it is not a valid URL", "invalid_image_url") from None
        try:
            async with asyncio.timeout(FETCH_TIMEOUT_S), self._http().stream(
                    "GET", parsed, headers={"accept": "image/*", "accept-encoding": ACCEPT_ENCODING}) as r:
                if r.status_code != 200:
                    raise refused(f"HTTP {r.status_code}")
                kind = r.headers.get("content-type", "").split(";")[0].strip().lower()
                if not kind.startswith("image/"):
                    raise refused(f"it is {kind or 'of no content type'}, not an image")
                inflate, body = raw_body(r)
                data = bytearray()
                async for raw in body:
                    room = min(MAX_IMAGE_BYTES - len(data), budget[0]) + 1  # one byte past either bound refuses
                    piece = raw if inflate is None else inflate.feed(raw, room)
                    data += piece
                    budget[0] -= len(piece)
                    if len(data) > MAX_IMAGE_BYTES:
                        raise refused(f"larger than {MAX_IMAGE_BYTES // 2**20} MiB", "image_too_large")
                    if budget[0] < 0:
                        raise refused(f"the request's images come to more than {MAX_REQUEST_BYTES // 2**20} MiB",
                                      "image_too_large")
                return kind, bytes(data)
        except TimeoutError:
            raise refused(f"not fetched within {FETCH_TIMEOUT_S} s") from None
        except ToolError as e:  # a body encoded as it was not asked for, or that does not inflate
            raise refused(str(e)) from None
        except httpx.TooManyRedirects:
            raise refused(f"more than {MAX_REDIRECTS} redirects") from None
        except httpx.HTTPError as e:  # a private address (PublicOnlyTransport), DNS, connection, timeout
            raise refused(str(e) or type(e).__name__) from None

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
