"""Image parts given by URL (gateway/image_urls.py): fetched by the gateway from public addresses only and sent
to the engine inline, never fetched by the engine from the site's network. The resolver is a stand-in (a dict),
the network an httpx.MockTransport recording each request; the real resolver and transport against a loopback
server show that loopback is refused."""

from __future__ import annotations

import asyncio
import base64
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from aigrid.agents.public_only import PublicOnlyTransport
from aigrid.errors import InvalidRequest
from aigrid.gateway.app import Gateway, build_app, build_gateway
from aigrid.gateway.image_urls import MAX_IMAGE_BYTES, MAX_REQUEST_BYTES, ImageUrls
from aigrid.spec.models import ModelSpec, QuotaSpec, TenantSpec
from tests.agents.test_public_only import fake_resolve
from tests.gateway.conftest import FakeEngine, _no_sleep, audit_rows, spec_in

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64


def network(seen: list[httpx.Request], kind: str = "image/png", body: bytes = PNG) -> httpx.AsyncClient:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/moved":
            return httpx.Response(302, headers={"location": "http://meta.example.org/latest/meta-data/"})
        return httpx.Response(200, headers={"content-type": kind}, content=body)
    transport = PublicOnlyTransport(httpx.MockTransport(handler), resolver=fake_resolve, literals=False)  # as the gateway's
    return httpx.AsyncClient(transport=transport, follow_redirects=True, max_redirects=3)


def chat(url: str, shape: str = "openai") -> dict[str, Any]:
    part = {"openai": {"type": "image_url", "image_url": {"url": url}},
            "bare": {"type": "image_url", "image_url": url},
            "responses": {"type": "input_image", "image_url": url},
            "anthropic": {"type": "image", "source": {"type": "url", "url": url}}}[shape]
    return {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]}


def url_of(body: dict[str, Any]) -> str:
    part = body["messages"][0]["content"][1]
    image = part.get("image_url", part.get("source"))
    return image if isinstance(image, str) else image["url"]


@pytest.mark.parametrize("shape", ["openai", "bare", "responses", "anthropic"])
async def test_a_public_image_goes_to_the_engine_inline(shape: str) -> None:
    seen: list[httpx.Request] = []
    body = chat("https://docs.example.org/cat.png", shape)
    await ImageUrls("fetch", network(seen)).inline(body)
    assert url_of(body) == "data:image/png;base64," + base64.b64encode(PNG).decode()
    (r,) = seen
    assert r.url.host == "93.184.215.14" and r.headers["host"] == "docs.example.org"


@pytest.mark.parametrize("url", ["http://meta.example.org/latest/meta-data/", "http://mixed.example.org/a.png",
                                 "http://docs.example.org/moved"],
                         ids=["metadata service", "a private address among public ones", "redirected to one"])
async def test_an_image_on_a_private_address_is_not_fetched(url: str) -> None:
    """The cloud's metadata service, a name with a private address, a public page redirecting to the metadata
    service: a 400 naming the part, nothing sent to a private address (the engine would have fetched each)."""
    seen: list[httpx.Request] = []
    body = chat(url)
    with pytest.raises(InvalidRequest) as info:
        await ImageUrls("fetch", network(seen)).inline(body)
    assert info.value.code == "image_fetch_failed" and info.value.param == "messages[0].content[1].image_url.url"
    assert "not a public address" in info.value.message, info.value.message
    assert all(r.url.host == "93.184.215.14" for r in seen) and url_of(body) == url


async def test_the_real_transport_refuses_loopback() -> None:
    """The gateway's own client (real resolver, real transport): a server on 127.0.0.1 is never asked, and `localhost`
    is not even looked up."""
    images = ImageUrls("fetch")
    try:
        for url in ("http://127.0.0.1:9/secret.png", "http://[::1]:9/x.png", "http://169.254.169.254/latest/meta-data/",
                    "http://[::ffff:10.0.0.1]/x.png"):  # an address written in the URL is judged too
            with pytest.raises(InvalidRequest, match="is not a public address: not fetched"):
                await images.inline(chat(url))
        with pytest.raises(InvalidRequest, match="'localhost' is a name under .localhost, .*not a public address"):
            await images.inline(chat("http://localhost:9/secret.png"))
    finally:
        await images.aclose()


@pytest.mark.parametrize("mode", ["fetch", "pass", "refuse"])
async def test_other_schemes_are_refused_in_every_mode(mode: str) -> None:
    for url in ("file:///etc/passwd", "ftp://docs.example.org/a.png", "gopher://x"):
        with pytest.raises(InvalidRequest) as info:
            await ImageUrls(mode, network([])).inline(chat(url))  # type: ignore[arg-type]
        assert info.value.code == "invalid_image_url", url


async def test_pass_sends_the_url_on_and_refuse_refuses_it() -> None:
    seen: list[httpx.Request] = []
    body = chat("https://docs.example.org/cat.png")
    await ImageUrls("pass", network(seen)).inline(body)
    assert url_of(body) == "https://docs.example.org/cat.png" and seen == []
    with pytest.raises(InvalidRequest) as info:
        await ImageUrls("refuse", network(seen)).inline(body)
    assert info.value.code == "image_url_not_allowed" and seen == []
    inline = chat("data:image/png;base64,AAAA")
    for mode in ("fetch", "pass", "refuse"):
        await ImageUrls(mode, network(seen)).inline(inline)  # type: ignore[arg-type]
    assert url_of(inline) == "data:image/png;base64,AAAA" and seen == []


@pytest.mark.parametrize("kind,body,says", [("text/html", b"<html>", "text/html, not an image"),
                                            ("image/png", b"x" * (MAX_IMAGE_BYTES + 1), "larger than 10 MiB")])
async def test_what_is_not_an_image_or_too_large_is_refused(kind: str, body: bytes, says: str) -> None:
    with pytest.raises(InvalidRequest, match=says):
        await ImageUrls("fetch", network([], kind, body)).inline(chat("https://docs.example.org/x"))


async def vision_gateway(tmp: Path, fakes: dict[str, FakeEngine],
                         **tenants: TenantSpec) -> tuple[Gateway, list[httpx.Request]]:
    """A gateway whose models read images, fetching through the recording stand-in network (its requests)."""
    spec = spec_in(tmp)
    models = {name: ModelSpec(**{**m.model_dump(), "vision": True}) for name, m in spec.models.items()}
    gw = build_gateway(spec.model_copy(update={"models": models, "tenants": {**spec.tenants, **tenants}}), fakes,
                       rng=random.Random(7), sleep=_no_sleep)
    seen: list[httpx.Request] = []
    gw.images = ImageUrls("fetch", network(seen))
    await gw.scraper.scrape_once()
    return gw, seen


async def test_the_gateway_fetches_the_image_and_the_engine_gets_it_inline(tmp_path: Path,
                                                                           fakes: dict[str, FakeEngine]) -> None:
    """Through the chat route of a grid whose model reads images: the engine gets a data: URL; a private URL is
    the client's 400 and no engine is asked."""
    gw, seen = await vision_gateway(tmp_path, fakes)
    body = {**chat("https://docs.example.org/cat.png"), "model": "smollm2-135m", "max_tokens": 4}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200, r.text
        received = [b for e in fakes.values() for b in e.received]
        assert url_of(received[-1]).startswith("data:image/png;base64,")
        before = len(received)
        r = await c.post("/v1/chat/completions", json={**body, **chat("http://meta.example.org/x.png"),
                                                       "model": "smollm2-135m"})
        assert r.status_code == 400 and r.json()["error"]["code"] == "image_fetch_failed", r.text
        assert len([b for e in fakes.values() for b in e.received]) == before


async def test_a_tenant_past_its_quota_has_no_image_fetched(tmp_path: Path, fakes: dict[str, FakeEngine]) -> None:
    """The image URLs are fetched once the request is within its quotas: a tenant past its requests per minute
    made the gateway fetch every image (up to 20 MiB a request) before its 429."""
    gw, seen = await vision_gateway(tmp_path, fakes, default=TenantSpec(quotas=QuotaSpec(requests_per_min=1)))
    gw.guard.quotas.clock = lambda: 1_800_000_030.0  # one quota minute for the whole test
    body = {**chat("https://docs.example.org/cat.png"), "model": "smollm2-135m", "max_tokens": 4}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json=body)
        assert r.status_code == 200 and len(seen) == 1, r.text
        r = await c.post("/v1/chat/completions", json=body)
        assert r.status_code == 429, r.text
        assert len(seen) == 1  # not fetched for a request refused by its quota


async def test_the_request_s_images_together_are_bounded_and_the_first_refusal_stops_the_rest(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Each image within its own bound, together past the request's: refused as they arrive (not after every byte
    of every image was held), `image_too_large`; a refused fetch stops the others."""
    from aigrid.gateway import image_urls

    monkeypatch.setattr(image_urls, "MAX_REQUEST_BYTES", 3 * len(PNG) - 1)
    body = chat("https://docs.example.org/1.png")
    body["messages"][0]["content"] += [{"type": "image_url", "image_url": {"url": f"https://docs.example.org/{i}.png"}}
                                       for i in (2, 3)]
    with pytest.raises(InvalidRequest) as info:
        await ImageUrls("fetch", network([])).inline(body)
    assert info.value.code == "image_too_large" and "more than" in info.value.message
    body["messages"][0]["content"][2]["image_url"]["url"] = "http://meta.example.org/x.png"
    with pytest.raises(InvalidRequest) as refused:
        await ImageUrls("fetch", network([])).inline(body)
    assert refused.value.code == "image_fetch_failed" and refused.value.param == "messages[0].content[2].image_url.url"


def served(stream: httpx.AsyncByteStream, **headers: str) -> httpx.AsyncClient:
    """A network whose every image is `stream`, sent as it comes, with `headers`."""
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "image/png", **headers}, stream=stream)
    return httpx.AsyncClient(transport=PublicOnlyTransport(httpx.MockTransport(handler), resolver=fake_resolve))


class Pieces(httpx.AsyncByteStream):
    def __init__(self, data: bytes, size: int = 65_536, pause_s: float = 0.0) -> None:
        self.data, self.size, self.pause_s = data, size, pause_s

    async def __aiter__(self) -> Any:
        for i in range(0, len(self.data), self.size):
            if self.pause_s:
                await asyncio.sleep(self.pause_s)
            yield self.data[i:i + self.size]


async def test_a_compressed_image_is_inflated_no_further_than_its_bound() -> None:
    """httpx inflates each piece read off the network whole: 64 KiB of gzip is 66 MB, before the image's size was
    counted. A server the client names sent 200 KB of gzip as `image/png`: 149 MB held for one image, 1.09 GB for a
    request of 8 (one request of 60 would take a gateway's memory). Now the body is inflated here, at most what the
    image may still take; a compressed image within the bound is read as before."""
    import gzip
    import tracemalloc

    bomb = gzip.compress(b"\0" * (50 * 2**20), 9)
    body = chat("https://docs.example.org/1.png")
    body["messages"][0]["content"] += [{"type": "image_url", "image_url": {"url": f"https://docs.example.org/{i}.png"}}
                                       for i in (2, 3, 4)]
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRequest) as info:
            await ImageUrls("fetch", served(Pieces(bomb), **{"content-encoding": "gzip"})).inline(body)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == "image_too_large"
    # each image within its bound, the request's images within theirs: at most an image's bytes and the piece being
    # added to them, each a request's worth at most (42 MB measured; 448 MB before)
    assert peak < 3 * MAX_REQUEST_BYTES, f"{peak / 1e6:.0f} MB held for a request of at most {MAX_REQUEST_BYTES / 1e6:.0f} MB"
    small = chat("https://docs.example.org/cat.png")
    await ImageUrls("fetch", served(Pieces(gzip.compress(PNG)), **{"content-encoding": "gzip"})).inline(small)
    assert url_of(small) == "data:image/png;base64," + base64.b64encode(PNG).decode()


async def test_an_image_sent_a_byte_at_a_time_is_refused_at_the_fetch_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """httpx's timeout bounds each read, not the fetch: a server that sent a byte every few seconds held the fetch
    (and the request, before any engine) as long as it liked. Now the whole fetch has FETCH_TIMEOUT_S."""
    import time

    from aigrid.gateway import image_urls

    monkeypatch.setattr(image_urls, "FETCH_TIMEOUT_S", 0.3)
    start = time.monotonic()
    with pytest.raises(InvalidRequest) as info:
        # a byte every 0.2 s: 14 s for the whole image, uncut
        await ImageUrls("fetch", served(Pieces(PNG, size=1, pause_s=0.2))).inline(chat("https://docs.example.org/a.png"))
    assert info.value.code == "image_fetch_failed" and "0.3" in info.value.message
    assert time.monotonic() - start < 5.0  # cut at 0.3 s; the margin is a loaded machine's


@pytest.mark.parametrize("url,code,says", [
    ("http://0177.0.0.1/x.png", "invalid_image_url", "not a valid URL"),          # octal IPv4: httpx.InvalidURL
    ("http://[::1/x.png", "invalid_image_url", "not a valid URL"),
    ("http://2130706433/x.png", "image_fetch_failed", "written as a number"),      # decimal IPv4 (127.0.0.1)
    ("http://0x7f.1/x.png", "image_fetch_failed", "written as a number"),
    ("http://public@127.0.0.1/x.png", "image_fetch_failed", "not a public address"),  # userinfo: the host is 127.0.0.1
    ("http://[fe80::1%25eth0]/x.png", "image_fetch_failed", "not a public address"),  # an IPv6 zone id
    ("http://metadata.google.internal/computeMetadata/v1/", "image_fetch_failed", "local or internal namespace"),
    ("http://printer.local/x.png", "image_fetch_failed", "local or internal namespace"),
    ("http://metadata/x.png", "image_fetch_failed", "one label"),
])
async def test_an_odd_url_is_the_client_s_400_naming_its_part(tmp_path: Path, fakes: dict[str, FakeEngine], url: str,
                                                            code: str, says: str) -> None:
    """Through the chat route: a URL httpx cannot parse (an octal IPv4 address) raised httpx.InvalidURL, not an
    httpx.HTTPError, out of the fetch's task group: a 500. Every other odd form is refused before any
    request, as a 400 naming the part."""
    gw, seen = await vision_gateway(tmp_path, fakes)
    body = {**chat(url), "model": "smollm2-135m", "max_tokens": 4}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["param"] == "messages[0].content[1].image_url.url", error
    assert says in error["message"], error["message"]
    assert seen == [] and not [b for e in fakes.values() for b in e.received]


async def test_the_gateway_s_client_keeps_no_cookie(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gateway's own image client (ImageUrls._http) fetches for every tenant: a site that set cookies had them
    sent back on every tenant's later fetch, and one setting 30 cookies of 3 KB under new paths at each answer
    grew the jar by 100 KB a fetch, for good (300 fetches: 9,000 cookies, 34 MB)."""
    sent: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.headers.get("cookie"))
        return httpx.Response(200, content=PNG, headers=[("content-type", "image/png"), *[
            ("set-cookie", f"c{len(sent)}-{i}={'v' * 3000}; Path=/p{len(sent)}-{i}; Max-Age=86400") for i in range(30)],
            ("set-cookie", "session=tenant-a; Path=/")])

    monkeypatch.setattr("aigrid.gateway.image_urls.PublicOnlyTransport",
                        lambda **kw: PublicOnlyTransport(httpx.MockTransport(handler), resolver=fake_resolve, **kw))
    images = ImageUrls("fetch")
    try:
        for _ in range(3):
            await images.inline(chat("https://docs.example.org/p1-0/cat.png"))
        assert sent == [None, None, None] and len(images._http().cookies.jar) == 0
    finally:
        await images.aclose()


def many(count: int) -> dict[str, Any]:
    body = chat("https://docs.example.org/0.png")
    body["messages"][0]["content"] += [{"type": "image_url", "image_url": {"url": f"https://docs.example.org/{i}.png"}}
                                       for i in range(1, count)]
    return body


async def test_a_request_s_image_urls_are_bounded_in_number_at_once_and_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every image URL of a request was fetched at once, a connection each: 5,000 URLs in a request of 200 KB held
    5,000 of the gateway's file descriptors (its engines' connections and its clients' fail once they run out).
    Now at most MAX_IMAGE_URLS a request (a 400 naming the first past it, nothing fetched), FETCHES_AT_ONCE at a
    time, all within REQUEST_TIMEOUT_S."""
    from aigrid.gateway import image_urls

    seen: list[httpx.Request] = []
    with pytest.raises(InvalidRequest) as info:
        await ImageUrls("fetch", network(seen)).inline(many(101))
    assert info.value.code == "too_many_image_urls" and info.value.param == "messages[0].content[101].image_url.url"
    assert seen == []

    at_once, most = [0], [0]

    async def slow(request: httpx.Request) -> httpx.Response:
        at_once[0] += 1
        most[0] = max(most[0], at_once[0])
        await asyncio.sleep(0.05)
        at_once[0] -= 1
        return httpx.Response(200, headers={"content-type": "image/png"}, content=PNG)
    client = httpx.AsyncClient(transport=PublicOnlyTransport(httpx.MockTransport(slow), resolver=fake_resolve))
    body = many(100)
    await ImageUrls("fetch", client).inline(body)
    assert all(p["image_url"]["url"].startswith("data:image/png") for p in body["messages"][0]["content"][1:])
    assert most[0] == 8, most

    monkeypatch.setattr(image_urls, "REQUEST_TIMEOUT_S", 0.2, raising=False)
    with pytest.raises(InvalidRequest, match="the request's images were not fetched within 0.2 s") as info:
        await ImageUrls("fetch", client).inline(many(40))  # 5 rounds of 8 at 0.05 s, each fetch within its 10 s
    assert info.value.code == "image_fetch_failed"


async def test_an_image_url_whose_name_cannot_be_encoded_is_a_400() -> None:
    # a label over 63 characters: the system resolver's idna encoding raised UnicodeError out of the task group, a 500
    images = ImageUrls("fetch")
    try:
        with pytest.raises(InvalidRequest, match="not a valid host name") as info:
            await images.inline(chat(f"http://{'a' * 64}.example.org/x.png"))
        assert info.value.code == "image_fetch_failed"
    finally:
        await images.aclose()


async def test_one_request_s_image_urls_under_a_dead_name_server_leave_dns_threads_to_other_tenants(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A request of 100 image URLs under a domain whose name server never answers, fetched 8 at a time, held all 8
    of the DNS threads every tenant shares until the resolver gave up: another tenant's look-up of a good name
    timed out meanwhile. Now a request holds LOOKUPS_AT_ONCE of them at most (the stand-in resolver never answers
    for *.never.example)."""
    import socket
    import threading
    from collections import OrderedDict

    from aigrid.agents import public_only

    answer = threading.Event()

    def system(host: str, port: int, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        if host.endswith("never.example"):
            answer.wait(10)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", port))]

    monkeypatch.setattr(socket, "getaddrinfo", system)
    monkeypatch.setattr(public_only, "DNS_TIMEOUT_S", 0.5)
    monkeypatch.setattr(public_only, "_failed", OrderedDict(), raising=False)  # no name remembered by others
    body = many(100)
    for i, part in enumerate(body["messages"][0]["content"][1:]):
        part["image_url"]["url"] = f"https://n{i}.never.example/a.png"
    images = ImageUrls("fetch")
    hanging = asyncio.ensure_future(images.inline(body))
    try:
        await asyncio.sleep(0.1)  # the request's look-ups are in flight
        assert await public_only.resolve("docs.example.org", 443) == ["93.184.215.14"]
        with pytest.raises(InvalidRequest, match="no answer from DNS"):
            await hanging
    finally:
        answer.set()
        await asyncio.gather(hanging, return_exceptions=True)
        await images.aclose()


async def test_the_route_fetches_a_request_s_images_on_its_tenant_s_share(tmp_path: Path,
                                                                         fakes: dict[str, FakeEngine]) -> None:
    """A tenant's DNS look-ups hold at most public_only.TENANT_LOOKUPS threads (ImageUrls.inline's `tenant`); the
    chat route called inline without the tenant, so every tenant's image look-ups shared one share."""
    gw, _ = await vision_gateway(tmp_path, fakes, acme=TenantSpec())
    asked: list[str | None] = []
    real = gw.images.inline

    async def inline(body: dict[str, Any], tenant: str | None = None) -> None:
        asked.append(tenant)
        await real(body, tenant)

    gw.images.inline = inline  # type: ignore[method-assign]
    body = {**chat("https://docs.example.org/cat.png"), "model": "smollm2-135m", "max_tokens": 4}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
        r = await c.post("/v1/chat/completions", json=body, headers={"x-aigrid-tenant": "acme"})
    assert r.status_code == 200, r.text
    assert asked == ["acme"]  # before: [None]


@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}, "uuid": "invoice-2026-001"},
    {"type": "image_url", "image_url": None, "uuid": "invoice-2026-001"},  # vLLM: the cached image, no media sent
    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "uuid": "x"}])
async def test_an_image_parts_uuid_is_refused_and_audited(
        tmp_path: Path, fakes: dict[str, FakeEngine], part: dict) -> None:
    """(7 Dec 2026, thirty-third session) vLLM reads a chat image part's `uuid` (PR 23449) as the key of its
    multimodal caches in place of the image's hash, as written, in caches every tenant's requests on the engine
    share: a request naming another tenant's uuid (with any image, or none: vLLM then takes the cached one) was
    answered about that tenant's image (vllm-project/vllm issue 55439; PR 53471, which scoped it, closed unmerged).
    The grid passed the part, uuid and all, to the engine of a model that reads images; now it is the client's 400
    naming the message's content, before any engine, audited. The image without a uuid is served."""
    gw, _ = await vision_gateway(tmp_path, fakes)
    await gw.guard.start()
    body = {"model": "smollm2-135m", "max_tokens": 4,
            "messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]}
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=build_app(gw)), base_url="http://gw") as c:
            r = await c.post("/v1/chat/completions", json=body)
            assert r.status_code == 400, r.text
            err = r.json()["error"]
            assert err["param"] == "messages[0].content" and err["type"] == "invalid_request_error", err
            assert "content[1].uuid is not served" in err["message"], err
            assert all(not f.received for f in fakes.values())
            rows = [row for row in await audit_rows(gw) if row["extra"]["route"] == "/v1/chat/completions"]
            assert [row["outcome"] for row in rows] == ["error:invalid_request"], rows
            if part["image_url"] is not None:
                body["messages"][0]["content"][1] = {k: v for k, v in part.items() if k != "uuid"}
                assert (await c.post("/v1/chat/completions", json=body)).status_code == 200
                sent = [got for f in fakes.values() for got in f.received]
                assert len(sent) == 1 and "uuid" not in sent[0]["messages"][0]["content"][1], sent
    finally:
        await gw.guard.stop()
