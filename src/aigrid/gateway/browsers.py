"""What a web browser sends on a page's behalf, to a grid without keys: cross-site requests and DNS rebinding.

A gateway whose keys are not enforced (the demo grid on 127.0.0.1, a keyless grid inside a private network)
answers whoever reaches its port, and a web browser reaches it for any page the user visits:
- **cross-site requests**: a page may POST to any address without asking (a form, or fetch with a "simple"
  content type such as text/plain, which the gateway reads as JSON); it cannot read the answer, but the
  request runs: a generation, server-side tools that act (an MCP tool, `sql`, `http_fetch`), a batch. The
  browser names the page in the `Origin` header; a request whose Origin is not the gateway's own address (as
  its `Host` header names it) is refused. The SDKs, curl and every other program send no Origin.
- **DNS rebinding**: a page of evil.example has its name re-resolved to 127.0.0.1, and its own script then
  reads the gateway as evil.example (same origin to the browser: every answer readable). The request arrives
  on a loopback address with `Host: evil.example:8080`. A request that arrives on a loopback address must name
  a Host no DNS answer can give a page (`names_this_machine`: `localhost`, `*.localhost`, an address written out,
  `0.0.0.0` and `[::]` included, or this machine's own host name) or one of `gateway.allowed_hosts`; with
  `allowed_hosts` set, every request must (a keyless gateway listening beyond loopback is its network's to
  use anyway, as Ollama's rule has it; the list closes rebinding there too).
With keys enforced neither applies (a page cannot send the key; an operator's reverse proxy may send any Host),
and the check costs nothing. Refusals are 403 in the API's envelope, audited like any refused call
(routes.Audited, the WebSocket's handshake). The WebSocket's handshake checks its Origin with keys too
(responses_socket.py): a browser lets a page read a socket of any origin."""

from __future__ import annotations

import functools
import ipaddress
import socket
from collections.abc import Iterable

from starlette.types import Scope

from aigrid.errors import PermissionDenied

LOOPBACK_NAMES = ("localhost",)
LOOPBACK_MEMO = 1024
"""The names and addresses whose `is_loopback` answer is kept (least recently asked dropped first): a keyless gateway
asks it of the server's address and the Host of every request, slow_clients of every connection's client address;
each answer was an `ipaddress` parse (3-4 us, two a request; the thirty-second session)."""
MEMO_NAME_MAX = 253
"""The longest name whose answer is kept (a DNS name's most; an address is at most 45 characters): a client's Host
of any length is answered, and the names kept hold at most LOOPBACK_MEMO x MEMO_NAME_MAX characters."""


def host_name(host: str) -> str:
    """The name of a Host header's value, its port dropped: "[::1]:8080" -> "::1", "Example.com:80" -> "example.com"."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host[1:]
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else host


def is_loopback(name: str) -> bool:
    """A loopback address or name: 127.0.0.0/8, ::1, localhost, *.localhost (RFC 6761), and 127.0.0.0/8 written as
    an IPv4-mapped IPv6 address (`::ffff:127.0.0.1`: where a dual-stack socket, bound on `::`, sees a connection to
    127.0.0.1 arrive; Python before 3.13 does not count it as loopback). A pure function of `name`: the answers of
    names up to MEMO_NAME_MAX characters are kept (LOOPBACK_MEMO of them)."""
    return _kept_loopback(name) if len(name) <= MEMO_NAME_MAX else _loopback(name)


def _loopback(name: str) -> bool:
    if name in LOOPBACK_NAMES or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return (mapped or address).is_loopback


_kept_loopback = functools.lru_cache(maxsize=LOOPBACK_MEMO)(_loopback)


def names_this_machine(name: str, hostname: str = "") -> bool:
    """A Host no DNS answer can give a web page: a loopback name, an address written out (0.0.0.0 and :: that the
    banner of a gateway listening on every interface prints, 127.0.1.1, a LAN address: a page with such an origin is
    served by that address itself, never re-pointed), or this machine's own `hostname` (Debian resolves it to
    127.0.1.1). Ollama's rule, less its *.local and *.internal."""
    if is_loopback(name) or (hostname and name in (hostname, hostname.split(".", 1)[0])):
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def same_origin(origin: str, host: str | None) -> bool:
    """Whether a page's Origin ("https://gw.example:8443") is the gateway's own address as the request's Host names
    it; "null" (a sandboxed frame, a file) and any other scheme are not."""
    scheme, _, netloc = origin.strip().lower().partition("://")
    return scheme in ("http", "https") and bool(netloc) and host is not None and netloc == host.strip().lower()


def check_origin(origin: str | None, host: str | None, code: str, what: str, why: str) -> None:
    """403 `code` (param origin) for `what` a browser sent for a page whose Origin is not the gateway's own address
    (same_origin); `why`: the door's reason. No Origin (a program): nothing to check."""
    if origin is not None and not same_origin(origin, host):
        raise PermissionDenied(f"origin: {what} ({origin[:100]!r}) is refused: {why}", param="origin", code=code)


class BrowserGuard:
    """The two checks above, for a keyless gateway (Guard.check_browser calls it when keys are not enforced):
    `allowed_hosts` (gateway.allowed_hosts) names the hosts besides loopback it answers to ("gw.internal",
    "*.example.com")."""

    def __init__(self, allowed_hosts: Iterable[str] = ()) -> None:
        hosts = [h.strip().lower() for h in allowed_hosts]
        self._exact = frozenset(h for h in hosts if not h.startswith("*."))
        self._suffixes = tuple(h[1:] for h in hosts if h.startswith("*."))
        self._everywhere = bool(hosts)
        self._hostname = socket.gethostname().strip().lower()

    def check(self, scope: Scope) -> None:
        """403 for a request sent by a browser for another site's page, or reaching the gateway by another name
        than its own (DNS rebinding)."""
        host = origin = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value.decode("latin-1")
            elif name == b"origin":
                origin = value.decode("latin-1")
        check_origin(origin, host, "cross_origin_request", "a request from a web page of another site",
                     "this gateway has no keys (security.enforce is off), and a page may not use it with the "
                     "visitor's reach; programs send no Origin header")
        if host is None or not (self._everywhere or _arrived_on_loopback(scope)):
            return
        name = host_name(host)
        if names_this_machine(name, self._hostname) or name in self._exact or name.endswith(self._suffixes):
            return
        raise PermissionDenied(f"host: this gateway has no keys (security.enforce is off) and answers only to "
                               f"localhost, an address, this machine's name and gateway.allowed_hosts, not to "
                               f"{name[:100]!r} "
                               "(a web page's name pointed at it, DNS rebinding, is refused so); add the name to "
                               "gateway.allowed_hosts, or enforce keys", param="host", code="host_not_allowed")


def _arrived_on_loopback(scope: Scope) -> bool:
    server = scope.get("server")
    return server is not None and is_loopback(str(server[0]))
