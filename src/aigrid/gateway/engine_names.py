"""An engine's address and credentials never reach a client or a screen: the rule that names them by endpoint.

EngineNames.hide reads an error's text (an engine's refusal, a socket error, a health reason) and writes each engine
address in it as the id of the endpoint it serves, whatever its textual form: a URL (with or without a scheme's
default port, a user and password before the host, httpx's masked `user:[secure]@`), host:port, the host alone (any
case, a trailing dot), `[v6]:port`, an IPv6 address written any way (`fd00:0:0::1` is `fd00::1`, upper case, a zone
`%eth0`, IPv4-mapped), a loopback engine as `localhost`, 127.0.0.1 or ::1, and a socket error's ('host', port). The
user and password before an engine's host go with it, and any URL's user and password are dropped wherever one shows.

Each candidate token is normalised (lower case, no trailing dot, percent-decoded, ipaddress's compressed form) and
looked up in a dict, so no engine's form can be missed by spelling. Cost: one linear regex scan of the text (each
token starts only at a word boundary, every quantifier bounded or possessive; a plain word is no candidate) plus a dict
look-up per address-like token (an ipaddress parse only for one with a colon or a percent sign). Measured (6 Dec 2026,
2 shared cores at load 8.5, best of 3): 23 us for a 200-character error, 188 us for a 2,000-character one (120 us of
it the adapter-repr scan, as before), about 0.2 s for 200 KB of hostile text (runs of letters, `f:`, `a.b `: review
RV12 measured 192 ms for `a.b `, best of 3, load 6.0). It runs on error paths only (an attempt's failure, a refusal,
a health reason, a decision read), never per chunk. A decision read hides the same few texts again and again (each
record's rejection reasons and attempt errors), so hide remembers its answers per (text, endpoint) (CACHED_TEXTS,
CACHED_CHARS): scripts/bench_decisions_read.py, 1,000 decisions of 4 rejections and 3 failed attempts each on 12
engines (158 distinct texts), the read's hiding took 307/358 ms (medians, two runs) before, 33/28 ms after (the first
read of a fresh gateway 36/59 ms), 2 shared cores at load 10.5-10.7.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import unquote

import httpx

from aigrid.engines.protocol import Engine

_ENGINE = re.compile(r"\b\w+Engine\([^()]{0,4096}\): ?")
r"""An adapter's repr in an error (its kind and base URL): for the log and the decision, not for a client. Linear:
it was `\w+Engine\([^()]*\)`, which retried from every character of a run of word characters (and read to the end
from each `Engine(`): an engine's error of 200 KB of letters held the event loop, every request of the worker, 69 s."""

_TOKEN = re.compile(
    r"(?<![\w.%~+-])(?:"
    # a socket error's address: ('10.0.0.7', 8000) or ('fd00::7', 8000, 0, 0)
    r"\('(?P<sock>[^'\s]{1,255}+)', (?P<sport>\d{1,5}+)(?:, \d++, \d++)?\)"
    # a URL's scheme, user and password (any, masked too), host and port
    r"|(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,31}+://)(?P<ui>(?:[^\s/?#@'\"<>]{0,512}+@)++)?"
    r"(?:\[(?P<u6>[0-9A-Fa-f:.]{2,45}+(?:%[\w.-]{1,64}+)?)\]|(?P<uh>[\w.%~-]{1,255}+))(?::(?P<uport>\d{1,5}+))?"
    # [v6]:port
    r"|\[(?P<b6>[0-9A-Fa-f:.]{2,45}+(?:%[\w.-]{1,64}+)?)\](?::(?P<bport>\d{1,5}+))?"
    # a bare IPv6 address (two colons at least; dots only in a trailing IPv4 part: `127.0.0.1:8000:`, a host, its
    # port and a colon, is no IPv6 address and goes on to the host alternative)
    r"|(?P<v6>(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4})(?:%[\w.-]{1,64}+)?)"
    # a host name or IPv4 address (dotted, `localhost`, or a name with a port: a plain word is no candidate), its port
    r"|(?P<host>[A-Za-z0-9][\w-]{0,62}+(?:\.[\w-]{1,63}+)++\.?|localhost(?![\w-])|[A-Za-z0-9][\w-]{0,62}+(?=:\d))"
    r"(?::(?P<port>\d{1,5}+))?"
    r")"
)
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})
CACHED_TEXTS = 4096
"""The most texts an EngineNames remembers hidden (EngineNames.hide), per gateway (each worker's own). Full, of texts of
CACHED_CHARS each holding one address: 4.9 MB held where their characters are ASCII, 17.5 MB where each takes 4 bytes
(an emoji's; tracemalloc, review RV2 of the thirty-first session), each text kept with its hidden form."""
CACHED_CHARS = 512
"""The longest text it remembers: a decision's attempt error is at most 500 characters (decisions.ERROR_CHARS), an
unhealthy endpoint's rejection reason at most ~210 (telemetry.store.REASON_CHARS); a longer text (an engine's whole
error page in a 502) is hidden each time, at the cost the module's docstring measures."""
_USERINFO_STOP = frozenset(" \t\r\n/'\"<>(){},;")  # not [ ]: httpx masks a password as [secure]; not @: a
# password may hold one (httpx reads the userinfo up to the authority's last @ and sends it all)


def canonical(host: str) -> str:
    """`host` as one spelling: percent-decoded, lower case, no trailing dot; an IP address in ipaddress's compressed
    form without its zone (an IPv4-mapped IPv6 address as its IPv4 one)."""
    host = unquote(host).strip("[]").lower().rstrip(".")
    bare = host.split("%", 1)[0]
    if ":" in bare or bare[:1].isdigit():
        try:
            ip = ipaddress.ip_address(bare)
        except ValueError:
            return host
        mapped = getattr(ip, "ipv4_mapped", None)
        return str(mapped or ip)
    return host


def engine_address(base: object) -> tuple[str, int] | None:
    """The canonical host and port of the engine at `base` (its base URL); None where it has none."""
    if not isinstance(base, str) or not base:
        return None
    try:
        url = httpx.URL(base)
    except httpx.InvalidURL:
        return None
    if not url.host:
        return None
    return canonical(url.host), url.port or (443 if url.scheme == "https" else 80)


class EngineNames:
    """What a client that is not an operator reads where an engine's address shows in an error's text (any form: the
    module's docstring): the id of the endpoint it serves, the spec's name for it (the ids of all that share it, unless
    the text is one endpoint's; a socket error's address of no engine's host, one a host name resolved to: the
    endpoint, `<engine>` where the text is not one endpoint's). An adapter's repr is dropped; the user and password
    of any URL too. The log, the audit records, `aigrid explain` for an operator and /v1/grid's `url` for one keep
    the address."""

    def __init__(self, engines: Mapping[str, Engine]) -> None:
        owners: dict[str, dict[int, set[str]]] = {}
        for endpoint_id, engine in engines.items():
            found = engine_address(getattr(engine, "base_url", None))
            if found is None:
                continue
            host, port = found
            for alias in _LOOPBACK if host in _LOOPBACK else (host,):
                owners.setdefault(alias, {}).setdefault(port, set()).add(endpoint_id)
        self._owners = {host: {port: frozenset(ids) for port, ids in ports.items()} for host, ports in owners.items()}
        self._hidden: dict[tuple[str, str | None], str] = {}  # hide's answers, oldest first (a pure function of
        # the text and endpoint: the engines' addresses are fixed for the gateway's life, one EngineNames each)

    def _owner(self, host: str | None, port: str | None) -> tuple[frozenset[str], bool] | None:
        """The endpoints at `host` (and `port`; whether the port is theirs), None where it is no engine's."""
        if not host:
            return None
        # a name or IPv4 address is its own canonical form but for case and a trailing dot: no parse (the common case)
        ports = self._owners.get(canonical(host) if "%" in host or ":" in host else host.lower().rstrip("."))
        if ports is None:
            return None
        if port is not None and int(port) in ports:
            return ports[int(port)], True
        return frozenset().union(*ports.values()), False

    def hide(self, text: str, endpoint: str | None = None) -> str:
        """`text` (an engine's error, a health reason; `endpoint`'s when it is one endpoint's) with each engine
        address named by its endpoint and no URL's user or password. One of at most CACHED_CHARS characters is
        remembered, with its endpoint, for the next time (at most CACHED_TEXTS, the oldest forgotten first): a
        decision read hides the same few reasons and errors again and again (module docstring, Cost)."""
        if len(text) > CACHED_CHARS:
            return self._hide(text, endpoint)
        key = (text, endpoint)
        hidden = self._hidden.get(key)
        if hidden is None:
            hidden = self._hide(text, endpoint)
            if len(self._hidden) >= CACHED_TEXTS:
                del self._hidden[next(iter(self._hidden))]
            self._hidden[key] = hidden
        return hidden

    def _hide(self, text: str, endpoint: str | None) -> str:
        """hide's work, for a text it has not remembered."""
        text = _ENGINE.sub("", text)
        out: list[str] = []
        done = 0
        pos = 0
        while (m := _TOKEN.search(text, pos)) is not None:
            start, end = m.span()
            pos = end
            replaced = self._replace(m, endpoint)
            if replaced is None:
                v6 = m.group("v6")
                if v6 is not None and "." in v6:  # `12:00:00:10.0.0.7:8000`: the IPv4 part may be an engine's
                    pos = m.start("v6") + v6.rindex(":") + 1
                continue
            named, cut, bare = replaced
            end = m.start() + cut if cut is not None else end
            if bare and start > done and text[start - 1] == "@":  # user:password@ before a bare engine host
                j = start - 1
                while j > done and start - j < 512 and text[j - 1] not in _USERINFO_STOP:
                    j -= 1
                start = j if j < start - 1 else start
            out.append(text[done:start])
            out.append(named)
            done = end
        out.append(text[done:])
        return "".join(out)

    def _replace(self, m: re.Match[str], endpoint: str | None) -> tuple[str, int | None, bool] | None:
        """What the token `m` becomes (None: itself), how much of it that replaces (None: all), whether it was bare."""
        def name(ids: frozenset[str]) -> str:
            return endpoint if endpoint in ids else "/".join(sorted(ids))

        if m.group("sock") is not None:
            owner = self._owner(m.group("sock"), m.group("sport"))
            return (name(owner[0]) if owner else endpoint or "<engine>"), None, False
        if m.group("scheme") is not None:
            host = m.group("u6") or m.group("uh")
            owner = self._owner(host, m.group("uport"))
            if owner is None:
                if m.group("ui") is None:
                    return None
                return m.group("scheme") + m.group()[m.end("ui") - m.start():], None, False
            ids, with_port = owner
            return name(ids), (None if with_port or m.group("uport") is None else m.start("uport") - 1 - m.start()), False
        for group, port in (("b6", "bport"), ("v6", None), ("host", "port")):
            host = m.group(group)
            if host is None:
                continue
            owner = self._owner(host, m.group(port) if port else None)
            if owner is None:
                return None
            ids, with_port = owner
            if with_port:
                return name(ids), None, True
            cut = m.end(group) - m.start()
            if group == "host" and host.endswith(".") and port and m.group(port) is None:
                cut -= 1  # a sentence's full stop after the host stays
            return name(ids), cut, True
        return None

    def decision(self, found: dict[str, Any], servable: Collection[str]) -> dict[str, Any]:
        """A decision's record (DecisionRecord.to_dict(), local or the hub's) as its tenant reads it: the errors of
        its attempts and the reasons endpoints were rejected (an unhealthy one's health reason) without addresses,
        and only the rejections of `servable` endpoints, those the reader's scopes let serve it
        (authorize.may_serve, /v1/grid's part): a narrowed key read the ids and sites of the endpoints of models,
        sites and jurisdictions it may not use in every decision's `rejected`."""
        attempts = [{**a, "error": self.hide(a["error"], a.get("endpoint"))} if isinstance(a.get("error"), str) else a
                    for a in found.get("attempts") or ()]
        rejected = [{**r, "reason": self.hide(r["reason"], r.get("endpoint"))} if isinstance(r.get("reason"), str) else r
                    for r in found.get("rejected") or () if r.get("endpoint") in servable]
        urgency = found.get("urgency")
        if isinstance(urgency, dict):  # its lists are endpoints of `rejected` (saturated, too late)
            urgency = {**urgency, **{k: [e for e in urgency.get(k) or () if e in servable]
                                     for k in ("waits_where", "too_late_at")}}
        return {**found, "attempts": attempts, "rejected": rejected, "urgency": urgency}
