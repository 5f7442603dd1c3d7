"""http_fetch's transport reaches public addresses only (agents/public_only.py): a name on the allow-list that
resolves to a private, loopback or link-local address is not fetched, and the address checked is the one
connected to. The resolver is a stand-in (a dict), the network an httpx.MockTransport recording each request."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest

from aigrid.agents.fetch import HttpFetch
from aigrid.agents.public_only import PublicOnlyTransport, resolve
from aigrid.agents.tool import ToolError
from tests.agents.test_fetch import NO_CONTEXT
from tests.security.test_quota_ops import until

DNS = {"docs.example.org": ["93.184.215.14"], "meta.example.org": ["169.254.169.254"],
       "mixed.example.org": ["93.184.215.14", "10.0.0.7"], "six.example.org": ["::ffff:127.0.0.1"],
       "intranet.example.org": ["10.1.2.3"], "v6.example.org": ["2606:2800:21f:cb07:6820:80da:af6b:8b2c"]}


async def fake_resolve(host: str, port: int) -> list[str]:
    if host not in DNS:
        raise OSError(f"no such host {host}")
    return DNS[host]


def fetcher(seen: list[httpx.Request], private: tuple[str, ...] = ()) -> HttpFetch:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"content-type": "text/plain"}, text="hello")
    transport = PublicOnlyTransport(httpx.MockTransport(handler), private=private, resolver=fake_resolve)
    allow = [*DNS, "127.0.0.1:8000"]
    return HttpFetch(allow, httpx.AsyncClient(transport=transport))


async def test_a_public_name_is_fetched_at_the_address_checked_with_its_name_for_tls() -> None:
    seen: list[httpx.Request] = []
    out = await fetcher(seen).run({"url": "https://docs.example.org/a?b=1"}, NO_CONTEXT)
    assert out.endswith("hello")
    (r,) = seen
    assert r.url.host == "93.184.215.14" and r.url.path == "/a" and r.url.params["b"] == "1"
    assert r.headers["host"] == "docs.example.org" and r.extensions["sni_hostname"] == "docs.example.org"
    await fetcher(seen).run({"url": "http://v6.example.org:8080/"}, NO_CONTEXT)
    assert seen[-1].url.host == "2606:2800:21f:cb07:6820:80da:af6b:8b2c" and seen[-1].url.port == 8080
    assert seen[-1].headers["host"] == "v6.example.org:8080" and "sni_hostname" not in seen[-1].extensions


@pytest.mark.parametrize("host,address", [("meta.example.org", "169.254.169.254"), ("mixed.example.org", "10.0.0.7"),
                                          ("six.example.org", "::ffff:7f00:1")])
async def test_a_name_that_resolves_to_a_private_address_is_not_fetched(host: str, address: str) -> None:
    """The cloud's metadata service, an address of the site's network among public ones, loopback mapped into
    IPv6: refused before any connection, the reason in the tool's error (which the model reads)."""
    seen: list[httpx.Request] = []
    with pytest.raises(ToolError, match=f"resolves to {address}, which is not a public address"):
        await fetcher(seen).run({"url": f"http://{host}/latest/meta-data/"}, NO_CONTEXT)
    assert seen == []


@pytest.mark.parametrize(("answer", "shown"), [
    ("64:ff9b::a9fe:a9fe", "64:ff9b::a9fe:a9fe"),    # NAT64's well-known prefix: a NAT64 gateway connects to 169.254.169.254
    ("64:ff9b::a00:5", "64:ff9b::a00:5"),            # ... and to 10.0.0.5 on the site's network
    ("64:ff9b:1::a00:5", "64:ff9b:1::a00:5"),        # the local-use NAT64 prefix: the operator's own translator
    ("2002:a9fe:a9fe::1", "2002:a9fe:a9fe::1"),      # 6to4 carrying 169.254.169.254
    ("::127.0.0.1", "::7f00:1"),                     # IPv4-compatible (reserved)
    ("::ffff:0:7f00:1", "::ffff:0:7f00:1"),          # IPv4-translated (reserved)
])
async def test_an_ipv6_address_carrying_a_private_ipv4_one_is_not_fetched(answer: str, shown: str) -> None:
    """Python's `is_global` calls each of these global (3.11): on an IPv6-only network with DNS64 and NAT64 (an
    IPv6-only cloud subnet), a name answering 64:ff9b::a00:5 reached 10.0.0.5."""
    seen: list[httpx.Request] = []
    DNS["nat64.example.org"] = [answer]
    try:
        with pytest.raises(ToolError, match=f"resolves to {shown}, which is not a public address"):
            await fetcher(seen).run({"url": "http://nat64.example.org/"}, NO_CONTEXT)
    finally:
        del DNS["nat64.example.org"]
    assert seen == []


async def test_a_public_ipv4_address_behind_nat64_is_fetched() -> None:
    """DNS64 writes every IPv4-only host's address under 64:ff9b::/96: those that carry a public address are fetched."""
    seen: list[httpx.Request] = []
    DNS["nat64.example.org"] = ["64:ff9b::5db8:d70e"]  # 93.184.215.14
    try:
        assert (await fetcher(seen).run({"url": "http://nat64.example.org/"}, NO_CONTEXT)).endswith("hello")
    finally:
        del DNS["nat64.example.org"]
    assert seen[0].url.host == "64:ff9b::5db8:d70e"


async def test_what_the_operator_names_is_reached() -> None:
    """An address written on the allow-list, and a name in a network the operator allows (an intranet)."""
    seen: list[httpx.Request] = []
    await fetcher(seen).run({"url": "http://127.0.0.1:8000/x"}, NO_CONTEXT)
    assert seen[-1].url.host == "127.0.0.1"
    with pytest.raises(ToolError, match="not a public address"):
        await fetcher(seen).run({"url": "http://intranet.example.org/"}, NO_CONTEXT)
    await fetcher(seen, private=("10.0.0.0/8",)).run({"url": "http://intranet.example.org/"}, NO_CONTEXT)
    assert seen[-1].url.host == "10.1.2.3" and seen[-1].headers["host"] == "intranet.example.org"


async def test_an_unknown_name_is_a_tool_error() -> None:
    seen: list[httpx.Request] = []
    tool = fetcher(seen)
    tool.allow.patterns += ("nowhere.example.org",)
    with pytest.raises(ToolError, match="cannot resolve 'nowhere.example.org'"):
        await tool.run({"url": "http://nowhere.example.org/"}, NO_CONTEXT)


async def test_the_system_resolver_answers_for_localhost() -> None:
    assert "127.0.0.1" in await resolve("localhost", 80) or "::1" in await resolve("localhost", 80)


async def test_through_the_real_transport_to_a_loopback_server() -> None:
    """The real resolver and httpx's own transport: `localhost` resolves to loopback, refused; allowed as a
    private network, the request reaches the address checked and the server reads the name in `Host`."""
    heard: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heard.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        for private, outcome in [((), "not a public address"), (("127.0.0.0/8", "::1/128"), None)]:
            async with httpx.AsyncClient(transport=PublicOnlyTransport(private=private), trust_env=False) as client:
                tool = HttpFetch([f"localhost:{port}"], client)
                if outcome:
                    with pytest.raises(ToolError, match=outcome):
                        await tool.run({"url": f"http://localhost:{port}/page"}, NO_CONTEXT)
                    assert heard == []
                else:
                    assert (await tool.run({"url": f"http://localhost:{port}/page"}, NO_CONTEXT)).endswith("hi")
    assert len(heard) == 1 and f"host: localhost:{port}".encode() in heard[0].lower()


async def test_the_real_transport_and_its_tls_context_are_made_at_the_first_request_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway builds one PublicOnlyTransport per start and most never fetch: httpx's transport (its TLS context,
    the CA bundle read: ~20 ms of CPU) is made at the first request, once, and closing one never used is fine."""
    made: list[httpx.AsyncHTTPTransport] = []
    real = httpx.AsyncHTTPTransport

    class Counted(real):  # type: ignore[misc, valid-type]
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__(*a, **k)
            made.append(self)

    monkeypatch.setattr(httpx, "AsyncHTTPTransport", Counted)
    unused = PublicOnlyTransport()
    await unused.aclose()
    assert made == []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, httpx.AsyncClient(transport=PublicOnlyTransport(private=("127.0.0.0/8",)),
                                         trust_env=False) as client:
        assert made == []
        for _ in range(2):
            assert (await client.get(f"http://127.0.0.1:{port}/")).text == "hi"
    assert len(made) == 1


async def test_each_checked_address_is_tried_in_turn() -> None:
    """A name with two addresses, the first not answering: the second is connected to (never an address that
    was not checked)."""
    DNS["two.example.org"] = ["93.184.215.14", "93.184.215.15"]
    tried: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        tried.append(request.url.host)
        if request.url.host == "93.184.215.14":
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, text="second")
    transport = PublicOnlyTransport(httpx.MockTransport(handler), resolver=fake_resolve)
    async with httpx.AsyncClient(transport=transport) as client:
        assert (await client.get("http://two.example.org/")).text == "second"
    assert tried == ["93.184.215.14", "93.184.215.15"]


SPECIAL = ["metadata.google.internal", "ip-10-0-0-5.ec2.internal", "printer.local", "Printer.LOCAL.", "nas.lan",
           "router.home.arpa", "app.localhost", "localhost", "metadata", "wiki.corp", "abc.onion"]


def split_horizon(asked: list[str], answer: str = "93.184.215.14"):  # noqa: ANN201 - a Resolver
    """A resolver that gives every name a public address (a split-horizon DNS answering the site's own names with
    a public range it uses inside), recording each name asked."""
    async def resolver(host: str, port: int) -> list[str]:
        asked.append(host)
        return [answer]
    return resolver


@pytest.mark.parametrize("host", SPECIAL)
@pytest.mark.parametrize("literals", [True, False], ids=["http_fetch", "image URL"])
async def test_a_special_use_name_is_refused_before_it_is_looked_up(host: str, literals: bool) -> None:
    """mDNS's .local, the cloud's .internal, .home.arpa, .lan, *.localhost, a one-label name the resolver completes
    with the site's search domains: the site's own names, whatever public address a split-horizon DNS gives them.
    Before: each was looked up, found public (93.184.215.14 here) and fetched."""
    asked: list[str] = []
    seen: list[httpx.Request] = []
    transport = PublicOnlyTransport(httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200)),
                                    resolver=split_horizon(asked), literals=literals)
    async with httpx.AsyncClient(transport=transport) as client:
        with pytest.raises(httpx.ConnectError, match="not a public address") as info:
            await client.get(f"http://{host}/computeMetadata/v1/")
    assert asked == [] and seen == []
    assert "local or internal namespace" in str(info.value) or "one label" in str(info.value)
    tool = HttpFetch([host.lower().rstrip(".")], httpx.AsyncClient(transport=transport))
    with pytest.raises(ToolError, match=f"{host.lower()!r} is a .*not a public address"):
        await tool.run({"url": f"http://{host}/"}, NO_CONTEXT)
    assert asked == [] and seen == []


async def test_a_special_use_name_reaches_the_private_networks_allowed_only() -> None:
    """With agents.http_private, an intranet name is fetched when every address lies in those networks; the same
    name answered with a public address (split horizon) is refused."""
    seen: list[httpx.Request] = []
    for answer, ok in [("10.1.2.3", True), ("93.184.215.14", False)]:
        asked: list[str] = []
        transport = PublicOnlyTransport(httpx.MockTransport(lambda r: seen.append(r) or httpx.Response(200)),
                                        private=("10.0.0.0/8",), resolver=split_horizon(asked, answer))
        async with httpx.AsyncClient(transport=transport) as client:
            if ok:
                assert (await client.get("http://wiki.corp/")).status_code == 200
                assert seen[-1].url.host == answer and seen[-1].headers["host"] == "wiki.corp"
            else:
                with pytest.raises(httpx.ConnectError, match="resolves to 93.184.215.14, outside the private"):
                    await client.get("http://wiki.corp/")
        assert asked == ["wiki.corp"]
    assert len(seen) == 1


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "127.1", "0x7f000001", "0177.1", "10.0.0.0x5"])
async def test_an_ipv4_address_written_as_a_number_is_refused(host: str) -> None:
    """Decimal, hexadecimal, octal and short IPv4 forms: not addresses to `ipaddress`, so they were looked up as
    names, and the system resolver (inet_aton) reads them as addresses; refused as what they are, even where the
    network they name is allowed (the operator writes the dotted address)."""
    asked: list[str] = []
    transport = PublicOnlyTransport(httpx.MockTransport(lambda r: httpx.Response(200)), private=("127.0.0.0/8",),
                                    resolver=split_horizon(asked, "127.0.0.1"), literals=False)
    request = httpx.Request("GET", httpx.URL("http://x/").copy_with(host=host))
    with pytest.raises(httpx.ConnectError, match="IPv4 address written as a number"):
        await transport.handle_async_request(request)
    assert asked == []


async def test_a_dns_that_never_answers_holds_neither_the_shared_threads_nor_the_fetch(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Look-ups ran on the loop's default executor (loop.getaddrinfo), shared with the batch store, the files API
    and every asyncio.to_thread: 40 names under a name server that never answers (a client's image URLs) held
    all its threads, and a to_thread call behind them waited as long. Now they run on threads of their own and
    each is waited for DNS_TIMEOUT_S at most."""
    import threading

    from aigrid.agents import public_only

    answer = threading.Event()

    def stuck(host: str, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        answer.wait(10)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 80))]

    monkeypatch.setattr(socket, "getaddrinfo", stuck)
    monkeypatch.setattr(public_only, "DNS_TIMEOUT_S", 0.3)
    lookups = [asyncio.ensure_future(resolve(f"n{i}.slow.example", 80)) for i in range(40)]
    try:
        await asyncio.sleep(0.05)
        # the shared threads free: at once (5 s for a loaded machine); held, not before the look-ups' 10 s
        assert await asyncio.wait_for(asyncio.to_thread(lambda: "free"), 5.0) == "free"
        with pytest.raises(OSError, match="no answer from DNS within 0.3 s"):
            await lookups[0]
    finally:
        answer.set()
        await asyncio.gather(*lookups, return_exceptions=True)


async def test_a_name_the_resolver_cannot_encode_is_an_oserror_and_a_tool_error() -> None:
    # a label over 63 characters passes httpx's URL parsing, and getaddrinfo's idna encoding raised UnicodeError
    # (a ValueError), which escaped the transport and the tool
    host = "a" * 64 + ".example.org"
    with pytest.raises(OSError, match="not a valid host name"):
        await resolve(host, 80)
    tool = HttpFetch([host], httpx.AsyncClient(transport=PublicOnlyTransport(literals=True, hint="h")))
    with pytest.raises(ToolError, match=f"cannot resolve '{host}': not a valid host name"):
        await tool.run({"url": f"http://{host}/"}, NO_CONTEXT)


async def test_a_caller_s_share_of_dns_threads_and_a_name_without_answer_remembered(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Within lookups_at_once(2) no more than 2 look-ups run at once, counted until the resolver returns (not
    until resolve gives up on it); a name that got no answer is refused for FAILED_FOR_S without a second look-up,
    a bounded number of them kept; a look-up that never left the queue (the pool busy) is not remembered."""
    import threading
    from collections import OrderedDict
    from concurrent.futures import ThreadPoolExecutor

    from aigrid.agents import public_only

    answer, lock = threading.Event(), threading.Lock()
    running, most, asked = [0], [0], []

    def stuck(host: str, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        with lock:
            asked.append(host)
            running[0] += 1
            most[0] = max(most[0], running[0])
        answer.wait(10)
        with lock:
            running[0] -= 1
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 80))]

    monkeypatch.setattr(socket, "getaddrinfo", stuck)
    monkeypatch.setattr(public_only, "DNS_TIMEOUT_S", 0.2)
    monkeypatch.setattr(public_only, "_DNS", ThreadPoolExecutor(8))  # a pool of 8, to fill it below
    monkeypatch.setattr(public_only, "_failed", OrderedDict())
    monkeypatch.setattr(public_only, "FAILURES_KEPT", 3)
    try:
        with public_only.lookups_at_once(2):
            one = await asyncio.gather(*(resolve(f"n{i}.slow.example", 80) for i in range(6)), return_exceptions=True)
        assert most[0] == 2 and sorted(asked) == ["n0.slow.example", "n1.slow.example"], (most, asked)
        assert [str(e) for e in one[2:]] == ["not looked up within 0.2 s: this request's other look-ups still wait "
                                             "on DNS"] * 4
        with pytest.raises(OSError, match="no answer from DNS within 0.2 s .a look-up less than 30 s ago"):
            await resolve("N0.slow.example.", 80)
        assert len(asked) == 2
        busy = [asyncio.ensure_future(resolve(f"m{i}.slow.example", 80)) for i in range(8)]  # 6 threads left
        done = await asyncio.gather(*busy, return_exceptions=True)
        assert sum("the gateway's DNS look-ups are busy" in str(e) for e in done) == 2
        assert list(public_only._failed) == ["m3.slow.example", "m4.slow.example", "m5.slow.example"]
    finally:
        await _threads_back(answer, running)


async def test_a_look_up_that_began_late_is_not_remembered_as_a_name_without_answer(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """resolve's timeout also counts the wait for the caller's share of the threads: a name whose look-up got that
    share just before the timeout ran out (its own look-up asked for 0.5 s of 2 s) is not refused to every tenant
    for FAILED_FOR_S: looked up again, it answers (review R4)."""
    import threading
    import time
    from collections import OrderedDict

    from aigrid.agents import public_only

    asked: list[str] = []
    lock = threading.Lock()

    def slow(host: str, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        with lock:
            asked.append(host)
        time.sleep(1.5 if host == "first.example" else 1.0)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 80))]

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    monkeypatch.setattr(public_only, "DNS_TIMEOUT_S", 2.0)
    monkeypatch.setattr(public_only, "_failed", OrderedDict())
    with public_only.lookups_at_once(1):  # "good" waits 1.5 s for the share, then gets 0.5 s of its own
        first, good = await asyncio.gather(resolve("first.example", 80), resolve("good.example", 80),
                                           return_exceptions=True)
    assert first == ["93.184.215.14"]
    assert isinstance(good, OSError) and "s only: the look-ups were busy" in str(good), good
    assert "good.example" not in public_only._failed
    assert await resolve("good.example", 80) == ["93.184.215.14"]
    assert asked.count("good.example") == 2


def _dead_or_docs_fetch() -> tuple[HttpFetch, list[httpx.Request]]:
    """http_fetch allowed *.dead.example and docs.example.org behind the public-only transport, and the requests
    that reached the (mock) network: each answered "hello"."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, headers={"content-type": "text/plain"}, text="hello")

    return HttpFetch(["*.dead.example", "docs.example.org"],
                     httpx.AsyncClient(transport=PublicOnlyTransport(httpx.MockTransport(handler)))), seen


def _dead_names_and_a_good_one(monkeypatch: pytest.MonkeyPatch) -> tuple[object, list[int], list[str]]:
    """getaddrinfo that never answers (until the returned event is set) for a name under dead.example, and answers
    at once for any other; [threads held now], [names asked]."""
    import threading
    from collections import OrderedDict

    from aigrid.agents import public_only

    answer, lock = threading.Event(), threading.Lock()
    running, asked = [0], []

    def dns(host: str, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        with lock:
            asked.append(host)
            running[0] += 1
        try:
            if host.endswith("dead.example"):
                answer.wait(10)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 80))]
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(socket, "getaddrinfo", dns)
    monkeypatch.setattr(public_only, "DNS_TIMEOUT_S", 1.0)
    monkeypatch.setattr(public_only, "_failed", OrderedDict())
    return answer, running, asked


async def _threads_back(answer: object, running: list[int]) -> None:
    answer.set()  # type: ignore[attr-defined]
    for _ in range(3000):  # the pool's threads back before the next test
        if not running[0]:
            return
        await asyncio.sleep(0.01)


async def test_one_tenant_s_fetches_on_dead_names_leave_the_other_tenants_a_dns_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """http_fetch's look-ups had no share of the DNS threads: tenant A's model fetching 8 pages under names whose
    name server never answers (new names: none remembered yet) held all 8, and tenant B's fetch of a good page
    waited behind them until its look-up timed out ("the gateway's DNS look-ups are busy"). A tenant's look-ups now
    hold public_only.TENANT_LOOKUPS threads at most, whatever number it runs."""
    from aigrid.agents import public_only
    from aigrid.agents.tool import ToolContext

    answer, running, asked = _dead_names_and_a_good_one(monkeypatch)
    tool, seen = _dead_or_docs_fetch()
    a = ToolContext(tenant="a")
    try:
        hanging = [asyncio.ensure_future(tool.run({"url": f"http://n{i}.dead.example/"}, a)) for i in range(8)]
        # tenant a's 2 threads asked before b's look-up (waited for, not a fixed 0.1 s: a loaded machine starts them late)
        assert await until(lambda: running[0] == public_only.TENANT_LOOKUPS == 2), running
        page = await tool.run({"url": "http://docs.example.org/"}, ToolContext(tenant="b"))
        assert page.startswith("HTTP 200") and "hello" in page
        assert running[0] == public_only.TENANT_LOOKUPS == 2, running
        assert [r.url.host for r in seen] == ["93.184.215.14"]
        done = await asyncio.gather(*hanging, return_exceptions=True)
        assert all(isinstance(e, ToolError) for e in done), done
        assert sum("this tenant's other look-ups still wait on DNS" in str(e) for e in done) == 6, done
        assert len([h for h in asked if h.endswith("dead.example")]) == 2
    finally:
        await _threads_back(answer, running)
    assert public_only._tenants == {}  # a tenant's share is forgotten once none of its look-ups is left


async def test_one_tenant_s_image_requests_on_dead_names_leave_the_other_tenants_a_dns_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Four requests of tenant A, each of image URLs under names no name server answers, held 2 DNS threads each
    (lookups_at_once's request share): all 8, and tenant B's image under a good name was not looked up before its
    timeout. Tenant A's requests now hold TENANT_LOOKUPS threads together."""
    from aigrid.errors import InvalidRequest
    from aigrid.gateway.image_urls import ImageUrls

    answer, running, asked = _dead_names_and_a_good_one(monkeypatch)
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "image/png"}, content=png)

    images = ImageUrls("fetch", httpx.AsyncClient(transport=PublicOnlyTransport(httpx.MockTransport(handler),
                                                                                literals=False, hint="h")))

    def body(*urls: str) -> dict[str, object]:
        return {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": u}}
                                                          for u in urls]}]}
    try:
        hanging = [asyncio.ensure_future(images.inline(body(*(f"http://r{r}n{i}.dead.example/x.png"
                                                               for i in range(4))), tenant="a"))
                   for r in range(4)]
        assert await until(lambda: running[0] == 2), running  # waited for, not a fixed 0.1 s
        good = body("http://docs.example.org/cat.png")
        await images.inline(good, tenant="b")
        assert good["messages"][0]["content"][0]["image_url"]["url"].startswith("data:image/png;base64,")  # type: ignore[index]
        assert running[0] == 2, running  # still tenant a's 2 alone (the wait above may have seen 2 on the way up)
        done = await asyncio.gather(*hanging, return_exceptions=True)
        assert all(isinstance(e, InvalidRequest) for e in done), done
    finally:
        await _threads_back(answer, running)


async def test_four_tenants_hanging_on_dead_names_leave_a_fifth_tenant_a_dns_thread(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant holds TENANT_LOOKUPS (2) threads at most, but the pool had 8: four tenants each looking up names
    no name server answers held all of them, and a fifth tenant's look-up of a good name waited in the pool's
    queue until its timeout ("the gateway's DNS look-ups are busy"). The pool now has room beside them."""
    from aigrid.agents import public_only

    answer, running, asked = _dead_names_and_a_good_one(monkeypatch)

    async def look_up(tenant: str, host: str) -> list[str]:
        with public_only.lookups_at_once(None, tenant=tenant):
            return await resolve(host, 80)
    try:
        hanging = [asyncio.ensure_future(look_up(t, f"{t}{i}.dead.example")) for t in "abcd" for i in range(3)]
        assert await until(lambda: running[0] == 4 * public_only.TENANT_LOOKUPS == 8), running  # not a fixed 0.1 s
        assert await look_up("e", "docs.example.org") == ["93.184.215.14"]
        assert running[0] == 8, running  # still 2 a tenant (the wait above may have seen 8 on the way up)
        done = await asyncio.gather(*hanging, return_exceptions=True)
        assert sum("no answer from DNS" in str(e) for e in done) == 8, done
        assert sum("this tenant's other look-ups still wait on DNS" in str(e) for e in done) == 4, done
    finally:
        await _threads_back(answer, running)


async def test_sixteen_tenants_hanging_on_dead_names_leave_another_tenant_s_fetch_its_look_up(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Every tenant's look-ups shared the DNS_THREADS (32) pool, 2 of them each: 16 tenants whose models fetch
    pages under names no name server answers held all 32, and a 17th tenant's fetch of a good page waited in the
    pool's queue until its look-up timed out ("the gateway's DNS look-ups are busy"). A tenant's look-ups now run on
    threads of its own (TENANT_LOOKUPS of them), so no number of tenants hanging leaves another without one."""
    from aigrid.agents import public_only
    from aigrid.agents.tool import ToolContext

    answer, running, asked = _dead_names_and_a_good_one(monkeypatch)
    tool, seen = _dead_or_docs_fetch()
    hangers = [f"t{i}" for i in range(public_only.DNS_THREADS // public_only.TENANT_LOOKUPS)]
    try:
        hanging = [asyncio.ensure_future(tool.run({"url": f"http://{t}n{i}.dead.example/"}, ToolContext(tenant=t)))
                   for t in hangers for i in range(3)]
        # every hanging tenant's 2 threads asked (48 fetches and 32 thread starts: not a fixed pause, on a loaded machine)
        assert await until(lambda: running[0] == public_only.DNS_THREADS == 32), running
        page = await tool.run({"url": "http://docs.example.org/"}, ToolContext(tenant="other"))
        assert page.startswith("HTTP 200") and "hello" in page
        assert [r.url.host for r in seen] == ["93.184.215.14"]
        done = await asyncio.gather(*hanging, return_exceptions=True)
        assert all(isinstance(e, ToolError) for e in done), done
        assert sum("no answer from DNS" in str(e) for e in done) == 32, done
    finally:
        await _threads_back(answer, running)
    assert public_only._tenants == {}
