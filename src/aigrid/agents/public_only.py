"""An HTTP transport that connects to public addresses only: http_fetch's guard against server-side request
forgery through a name on its allow-list.

The allow-list (fetch.HostAllowList) judges host names. A name resolves to whatever its DNS says, and a name
whose DNS an attacker controls (or that an operator allowed by mistake, or that rebinds between two look-ups)
can point the site's agent at the cloud's metadata service (169.254.169.254), the loopback interface or the
site's own network. So every request resolves its host once, refuses it when any address is not a global one
(private, loopback, link-local, shared, reserved, multicast, unspecified; an IPv4 address carried in IPv6,
mapped, behind NAT64's well-known prefix or 6to4, is judged as the IPv4 one: `is_public`), and connects to the
addresses it checked, in order (no second look-up to rebind): the request's URL carries that address, its
`Host` header and TLS server name (`sni_hostname`) the name, so the certificate is still verified against the
name.

A host written as an address on the allow-list (`127.0.0.1:8000`) was named by the operator: it is reached
whatever it is, as is every address of `private` (networks, for an intranet the operator means to allow).

A name of a local or internal namespace (`special_use`: `localhost`, mDNS's `.local`, `.home.arpa`, the cloud's
`.internal` (metadata.google.internal, *.ec2.internal), `.lan`, `.corp`, ..., and a name of one label, which the
resolver completes with the site's own search domains) is the site's by definition, whatever its DNS answers: a
split-horizon resolver can give it a public address (a company's own public range, used inside), so its
addresses prove nothing. Without `private` networks it is refused before it is looked up; with them it is
fetched only when every address it resolves to lies in one of them (the operator's intranet). A host whose last
label is a number (`2130706433`, `0x7f.1`, `0177.0.0.1`) is an IPv4 address written in a form the system
resolver reads (inet_aton's), never a name: refused, whatever it would resolve to.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextvars import ContextVar
from typing import Any

import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]


DNS_THREADS = 32
"""Look-ups at once (`resolve`) of callers without a tenant, on threads of their own, started as needed (an idle one
is reused). A look-up that hangs holds its thread until the system resolver gives up, whatever `resolve` waited. A
tenant's look-ups do not run here but on TENANT_LOOKUPS threads of the tenant's own (`_Share.pool`): when every
tenant shared this pool, DNS_THREADS / TENANT_LOOKUPS tenants hanging at once (16) filled it and every other
tenant's look-ups timed out (with 8 threads, four tenants did)."""
DNS_TIMEOUT_S = 5.0
"""How long a look-up is waited for."""
_DNS = ThreadPoolExecutor(DNS_THREADS, thread_name_prefix="aigrid-dns")
FAILED_FOR_S = 30.0
"""How long a name whose look-up got no answer within DNS_TIMEOUT_S is refused without being looked up again (its
thread may still be waiting on the resolver). A quick error (no such name) is not remembered: it costs the pool
nothing, and a passing one would refuse a good name to every tenant."""
ASKED_FOR_SHARE = 0.5
"""A name is remembered as failed only when its own look-up ran at least this share of DNS_TIMEOUT_S unanswered:
the timeout also counts the wait for the caller's share (`lookups_at_once`) and for a thread of the pool, and a
look-up that began just before it ran out says nothing of the name."""
FAILURES_KEPT = 4096
"""The most failed names remembered (the oldest forgotten first)."""
_failed: OrderedDict[str, tuple[float, str]] = OrderedDict()
"""A name that got no answer (lower case) -> (when it may be looked up again, on the monotonic clock; why)."""
TENANT_LOOKUPS = 2
"""The most look-ups one tenant runs at once, all its requests together (`lookups_at_once`'s `tenant`), on as many
threads of its own, started while it has look-ups waiting or running and let go after (so at most TENANT_LOOKUPS
threads per tenant of the grid's spec, beside DNS_THREADS): a tenant whose names hang waits on its own threads only,
however many tenants hang at once. Before, a request's share alone let four requests of one tenant, each hanging on
names no name server answers (new ones, not yet remembered), hold all the threads; then 16 tenants at 2 each held
all 32 of the shared pool, and every other tenant's look-ups timed out meanwhile."""


class _Share:
    """At most `most` of the pool's threads held at once by the look-ups that take it (`resolve`)."""

    def __init__(self, most: int, tenant: str | None = None) -> None:
        self.slots = asyncio.Semaphore(most)
        self.loop = asyncio.get_running_loop() if tenant is not None else None
        self.tenant = tenant
        self.users = 0
        """Look-ups waiting for it or holding a thread with it: a tenant's is forgotten when none is left."""
        self.pool = ThreadPoolExecutor(most, thread_name_prefix="aigrid-dns-tenant") if tenant is not None else None
        """A tenant's own threads, as many as its look-ups at once (`slots`): never another tenant's to wait for."""


_tenants: dict[str, _Share] = {}
"""A tenant with look-ups waiting or running -> its share of the threads."""
_share: ContextVar[tuple[tuple[_Share, ...], str | None]] = ContextVar("aigrid_dns_share", default=((), None))
"""The caller's own shares, and its tenant, whose share is found as each look-up starts."""


def _tenant_share(tenant: str) -> _Share:
    share = _tenants.get(tenant)
    if share is None or share.loop is not asyncio.get_running_loop():
        share = _tenants[tenant] = _Share(TENANT_LOOKUPS, tenant)
    return share


@contextlib.contextmanager
def lookups_at_once(most: int | None, *, tenant: str | None = None) -> Iterator[None]:
    """Within it (and the tasks it starts), at most `most` of `resolve`'s threads held at once (None: no bound of its
    own), and with a `tenant`, at most TENANT_LOOKUPS by that tenant's look-ups, its other requests' included: one
    caller (a request's image URLs, a tenant's requests) cannot take the pool the other tenants' look-ups share. A
    thread counts until its look-up returns, not until `resolve` stops waiting for it (a name server that never
    answers holds it past DNS_TIMEOUT_S). Used within a running loop."""
    own, outer = _share.get()
    token = _share.set(((*own, *(() if most is None else (_Share(most),))), tenant or outer))
    try:
        yield
    finally:
        _share.reset(token)


def _failure(name: str) -> str | None:
    """Why `name`'s look-up failed, if it did less than FAILED_FOR_S ago."""
    known = _failed.get(name)
    if known is None:
        return None
    if known[0] <= time.monotonic():
        del _failed[name]
        return None
    return known[1]


def _remember(name: str, why: str) -> None:
    _failed[name] = (time.monotonic() + FAILED_FOR_S, why)
    _failed.move_to_end(name)
    while len(_failed) > FAILURES_KEPT:
        _failed.popitem(last=False)


async def resolve(host: str, port: int) -> list[str]:
    """The host's addresses, as the system resolver gives them, off the loop, within DNS_TIMEOUT_S (OSError after
    it). On DNS_THREADS threads of their own: the loop's getaddrinfo, used before, runs on its default executor
    (min(32, CPUs + 4) threads), which the batch store, the files API and the rest share, and a blocking look-up
    holds its thread until the system resolver gives up (the resolver's timeout, times its attempts and servers):
    a client naming images under a domain whose name server never answers held every thread, and the gateway's
    batch and file calls waited on them. The pool is shared by every tenant, so a caller may hold a few of its
    threads only (`lookups_at_once`: a request of 100 image URLs under such a domain, fetched 8 at a time, held 8
    threads for as long as the resolver tried, and every other tenant's look-ups timed out); a tenant's look-ups run
    on TENANT_LOOKUPS threads of its own (`_Share.pool`: before, on this pool, so DNS_THREADS / TENANT_LOOKUPS tenants
    hanging at once filled it), and a name that got no answer is refused for FAILED_FOR_S without being looked up
    again."""
    name = host.lower().rstrip(".")
    why = _failure(name)
    if why is not None:
        raise OSError(f"{why} (a look-up less than {FAILED_FOR_S:g} s ago; not tried again yet)")
    loop = asyncio.get_running_loop()
    began: list[float] = []  # when a thread began asking the resolver (a look-up may wait for the share, the pool)

    def lookup() -> list[Any]:
        began.append(time.monotonic())
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)

    own, tenant = _share.get()  # the request's, then the tenant's: taken in that order by every look-up
    shares = own if tenant is None else (*own, _tenant_share(tenant))
    pool = shares[-1].pool if tenant is not None else None
    held: list[_Share] = []
    job: Future[list[Any]] | None = None
    for share in shares:
        share.users += 1
    try:
        async with asyncio.timeout(DNS_TIMEOUT_S):
            for share in shares:  # within the timeout: the caller's own look-ups that hang delay it alone
                await share.slots.acquire()
                held.append(share)
            job = (pool or _DNS).submit(lookup)
            if shares:  # released when the thread is done with the look-up, not when it is given up on
                job.add_done_callback(lambda _: _release(loop, shares))
            infos = await asyncio.wrap_future(job)
    except TimeoutError:
        if job is None:
            whose = "this request's" if len(held) < len(own) else "this tenant's"
            raise OSError(f"not looked up within {DNS_TIMEOUT_S} s: {whose} other look-ups still wait on DNS"
                          ) from None
        if job.cancel():  # still queued (asyncio's cancel has reached it, or this does): never asked: the pool was busy, which says nothing of the name
            raise OSError(f"not looked up within {DNS_TIMEOUT_S} s: the gateway's DNS look-ups are busy") from None
        why = f"no answer from DNS within {DNS_TIMEOUT_S} s"
        asked_s = time.monotonic() - began[0] if began else 0.0
        if asked_s < DNS_TIMEOUT_S * ASKED_FOR_SHARE:  # it began late (the share, the pool busy): that says little
            # of the name, which is not remembered (else a busy pool refused a good name to every tenant for 30 s)
            raise OSError(f"{why} (asked for {asked_s:.1f} s only: the look-ups were busy)") from None
        _remember(name, why)
        raise OSError(why) from None
    except ValueError as e:  # a name the resolver cannot encode (a label over 63 characters: idna's UnicodeError),
        # which httpx takes: it escaped the transport, an image URL's fetch a 500
        raise OSError(f"not a valid host name ({e})") from None
    finally:
        if job is None:  # no thread asked: what was taken is given back now (a timeout, a cancel, a full pool)
            _given_back(shares, held)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _given_back(shares: tuple[_Share, ...], held: Iterable[_Share]) -> None:
    for share in held:
        share.slots.release()
    for share in shares:
        share.users -= 1
        if share.users == 0 and share.tenant is not None:
            if _tenants.get(share.tenant) is share:
                del _tenants[share.tenant]
            if share.pool is not None:  # no look-up of the tenant left: its idle threads end
                share.pool.shutdown(wait=False)


def _release(loop: asyncio.AbstractEventLoop, shares: tuple[_Share, ...]) -> None:
    """`shares` released on their loop, from the look-up's thread (or the loop's, for a look-up cancelled unrun)."""
    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing waits on it any more
        loop.call_soon_threadsafe(_given_back, shares, shares)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


NAT64 = ipaddress.ip_network("64:ff9b::/96")
"""The well-known NAT64 prefix (RFC 6052): the last 32 bits are an IPv4 address a NAT64 gateway connects to."""
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
"""The local-use NAT64 prefix (RFC 8215): the operator's own translator, where the IPv4 part sits is its choice."""


SPECIAL_USE = ("localhost", "local", "home.arpa", "internal", "lan", "home", "corp", "intranet", "private",
               "localdomain", "test", "invalid", "onion", "alt", "arpa")
"""The suffixes of names that are never public ones: `localhost`, `test`, `invalid` (RFC 6761), `local` (mDNS,
RFC 6762), `home.arpa` (RFC 8375), `internal` (reserved for private use by ICANN, 2024: Google Cloud's
`metadata.google.internal`, AWS's `*.ec2.internal`), the private suffixes RFC 6762 (appendix G) found in use
(`lan`, `home`, `corp`, `intranet`, `private`), `localdomain`, `onion` (RFC 7686), `alt` (RFC 9476) and `arpa`
(reverse look-ups and `home.arpa`: no web host lives there)."""
_NUMBER = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)


def numeric(host: str) -> bool:
    """A host that is not an address as `ipaddress` reads one and whose last label is a number: an IPv4 address
    in a form inet_aton reads (`2130706433`, `0x7f.1`, `0177.0.0.1`, `127.1`), never a DNS name."""
    return _NUMBER.fullmatch(host.rstrip(".").rpartition(".")[2]) is not None


def special_use(host: str) -> str | None:
    """Why `host` (a name, not an address) is never a public one (module docstring), or None when it may be."""
    labels = host.lower().rstrip(".").split(".")
    for suffix in SPECIAL_USE:
        if labels[-1] == suffix or ".".join(labels[-2:]) == suffix:
            return f"a name under .{suffix}, a local or internal namespace"
    if len(labels) == 1:
        return "a name of one label, which the resolver completes with the site's own domains"
    return None


def is_public(address: Address) -> bool:
    """A global unicast address. An IPv6 address that carries an IPv4 one (mapped, NAT64's well-known prefix, 6to4)
    is judged as that IPv4 address: a network with a NAT64 gateway (IPv6-only clouds, with DNS64) connects
    64:ff9b::a00:5 to 10.0.0.5; an IPv6 address reserved by the IETF (IPv4-compatible `::a.b.c.d` included) or
    of the local-use NAT64 prefix is not public."""
    if isinstance(address, ipaddress.IPv6Address):
        if address in NAT64:
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return is_public(embedded)
        if address.is_reserved or address in NAT64_LOCAL:
            return False
    return address.is_global and not address.is_multicast


class PublicOnlyTransport(httpx.AsyncBaseTransport):
    """Wraps a transport (`inner`): each request goes to a checked address of its host (module docstring)."""

    ALLOW_LIST_HINT = ("a name on the allow-list reaches public addresses only; write the address itself on the list, "
                       "or its network in agents.http_private, to allow it")

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None, *,
                 private: Iterable[str] = (), resolver: Resolver = resolve, literals: bool = True,
                 hint: str = ALLOW_LIST_HINT) -> None:
        """`literals`: an address written in the URL is reached as written (http_fetch: the operator's allow-list
        named it); False: it is judged as a name's addresses are (a URL the client wrote). `hint`: what the
        refusal tells the reader to do."""
        self._inner = inner
        """None until the first request (_transport()): a gateway builds one per start and most never fetch, and
        its TLS context alone (the CA bundle read) costs ~20 ms of CPU."""
        self._private = tuple(ipaddress.ip_network(n, strict=False) for n in private)
        self._resolve = resolver
        self._literals = literals
        self._hint = hint

    def _transport(self) -> httpx.AsyncBaseTransport:
        if self._inner is None:
            # no connection kept: the pool knows a connection by address, and a TLS one made for one name must not
            # carry a request for another name on the same address (its certificate was not checked for it)
            self._inner = httpx.AsyncHTTPTransport(trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))
        return self._inner

    def _allowed(self, address: Address) -> bool:
        return is_public(address) or self._in_private(address)

    def _in_private(self, address: Address) -> bool:
        return any(address in net for net in self._private)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        host = request.url.host
        literal = _literal(host)
        if literal is not None and not self._literals and not self._allowed(literal):
            raise httpx.ConnectError(f"{host} is not a public address: not fetched ({self._hint})", request=request)
        if literal is None:
            if numeric(host):
                raise httpx.ConnectError(f"{host!r} is an IPv4 address written as a number, not a public address: "
                                         f"not fetched ({self._hint})", request=request)
            special = special_use(host)
            if special is not None and not self._private:
                raise httpx.ConnectError(f"{host!r} is {special}, not a public address: not fetched ({self._hint})",
                                         request=request)
            try:
                found = [a for a in map(_literal, await self._resolve(host, request.url.port or 0)) if a is not None]
            except OSError as e:
                raise httpx.ConnectError(f"cannot resolve {host!r}: {e}", request=request) from e
            if not found:
                raise httpx.ConnectError(f"{host!r} resolves to no address", request=request)
            refused = [a for a in found if not (self._in_private(a) if special else self._allowed(a))]
            if refused and special is not None:
                raise httpx.ConnectError(
                    f"{host!r} is {special}, not a public address, and resolves to {refused[0]}, outside the private "
                    f"networks allowed: not fetched ({self._hint})", request=request)
            if refused:
                raise httpx.ConnectError(
                    f"{host!r} resolves to {refused[0]}, which is not a public address: not fetched ({self._hint})",
                    request=request)
            if request.url.scheme == "https":
                request.extensions = {**request.extensions, "sni_hostname": host}
            for address in found[:-1]:  # each checked address in turn, as a client tries a name's (no bytes sent)
                request.url = request.url.copy_with(host=str(address))
                try:
                    return await self._transport().handle_async_request(request)
                except httpx.ConnectError:
                    continue
            request.url = request.url.copy_with(host=str(found[-1]))
        return await self._transport().handle_async_request(request)

    async def aclose(self) -> None:
        if self._inner is not None:
            await self._inner.aclose()
