"""What a site network looks like before anything is created: each site's one-way delay, its names and its
addresses. Pure functions and plain data; netns.py does the I/O.

The delay of a site's link models the path from one reference point (where the gateway stands, e.g. the spec's
gateway location) to the site: one-way = geo.rtt_ms(distance) / 2, applied on each direction, so a TCP round
trip through the link takes the modelled RTT. Every site gets a /30 out of a pool (default 10.201.0.0/16):
.1 is the gateway's end in the root namespace, .2 the site's end inside its namespace.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network

from aigrid.core.geo import DEFAULT_ROUTE_FACTOR, distance_km, rtt_ms
from aigrid.core.types import GeoPoint

DEFAULT_POOL = "10.201.0.0/16"
NAMESPACE_PREFIX = "aigrid-"
HOST_DEVICE_PREFIX = "ag"
SITE_DEVICE = "aigrid0"
"""The site's end of its veth, inside its namespace (every namespace has its own, so one name fits all)."""
IFNAMSIZ = 15
GUARD_ROUTE_PROTO = "201"
"""Routing protocol number that marks our guard routes (`unreachable <site /30>` at the worst metric): when a
site's veth is gone they answer "unreachable" rather than let its traffic fall through to the default route."""


@dataclass(frozen=True, slots=True)
class SiteLink:
    """One site's link to the reference point: the delay added on each direction."""

    site_id: str
    one_way_ms: float

    def __post_init__(self) -> None:
        if not 0 <= self.one_way_ms <= 5000:
            raise ValueError(f"site {self.site_id!r}: one-way delay {self.one_way_ms} ms is outside 0..5000")

    @property
    def rtt_ms(self) -> float:
        return 2 * self.one_way_ms


@dataclass(frozen=True, slots=True)
class SiteAddressing:
    """Where one site lives: its namespace, the two ends of its veth and their addresses."""

    site_id: str
    namespace: str
    host_device: str
    host_ip: str
    site_ip: str
    prefix_len: int = 30
    site_device: str = SITE_DEVICE

    @property
    def network(self) -> str:
        return str(ipaddress.IPv4Interface(f"{self.host_ip}/{self.prefix_len}").network)


def plan_links(origin: GeoPoint, sites: Mapping[str, GeoPoint], *,
               route_factor: float = DEFAULT_ROUTE_FACTOR) -> tuple[SiteLink, ...]:
    """One link per site whose round trip is the modelled RTT between `origin` and the site."""
    return tuple(SiteLink(site_id, rtt_ms(distance_km(origin, point), route_factor) / 2)
                 for site_id, point in sites.items())


def namespace_name(owner_pid: int, instance: int, site_id: str) -> str:
    """aigrid-<pid>-<instance>-<site>: the owner pid makes parallel runs distinct and stale ones findable."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", site_id)[:40]
    return f"{NAMESPACE_PREFIX}{owner_pid}-{instance}-{safe}"


def host_device_name(owner_pid: int, serial: int) -> str:
    """ag<pid hex>-<serial hex>: unique per process, within the kernel's 15-character limit."""
    name = f"{HOST_DEVICE_PREFIX}{owner_pid:x}-{serial:x}"
    if len(name) > IFNAMSIZ:
        raise ValueError(f"device name {name!r} is longer than {IFNAMSIZ} characters")
    return name


def owner_of(name: str) -> int | None:
    """The pid that created a namespace or host device with one of our names, or None if not ours."""
    if m := re.fullmatch(rf"{NAMESPACE_PREFIX}(\d+)-\d+-.+", name):
        return int(m.group(1))
    if m := re.fullmatch(rf"{HOST_DEVICE_PREFIX}([0-9a-f]+)-[0-9a-f]+", name):
        return int(m.group(1), 16)
    return None


def allocate_subnets(count: int, taken: Iterable[IPv4Network],
                     pool: str | IPv4Network = DEFAULT_POOL) -> list[IPv4Network]:
    """`count` /30 networks from `pool` that overlap none of `taken` (the root namespace's addresses and
    routes). Raises ValueError when the pool is too small."""
    pool_net = ipaddress.IPv4Network(pool)
    used = list(taken)
    found: list[IPv4Network] = []
    for candidate in pool_net.subnets(new_prefix=30):
        if len(found) == count:
            break
        if not any(candidate.overlaps(t) for t in used):
            found.append(candidate)
    if len(found) < count:
        raise ValueError(f"the address pool {pool_net} has only {len(found)} free /30 networks, {count} needed")
    return found


def address_sites(site_ids: Sequence[str], subnets: Sequence[IPv4Network], *, owner_pid: int, instance: int,
                  first_serial: int) -> tuple[SiteAddressing, ...]:
    """Names and addresses for each site, in order."""
    out = []
    for i, (site_id, net) in enumerate(zip(site_ids, subnets, strict=True)):
        host, site = list(net.hosts())[:2]
        out.append(SiteAddressing(site_id=site_id, namespace=namespace_name(owner_pid, instance, site_id),
                                  host_device=host_device_name(owner_pid, first_serial + i),
                                  host_ip=str(host), site_ip=str(site), prefix_len=net.prefixlen))
    return tuple(out)


def parse_taken(addr_json: Sequence[Mapping[str, object]], route_json: Sequence[Mapping[str, object]]
                ) -> list[IPv4Network]:
    """Networks in use in the root namespace, from `ip -j -4 addr show` and `ip -j -4 route show table all`."""
    taken: list[IPv4Network] = []
    for link in addr_json:
        infos = link.get("addr_info")
        for info in infos if isinstance(infos, list) else []:
            if isinstance(info, Mapping) and info.get("family") == "inet":
                taken.append(ipaddress.IPv4Network(f"{info['local']}/{info['prefixlen']}", strict=False))
    for route in route_json:
        dst = route.get("dst")
        if isinstance(dst, str) and dst != "default":
            try:
                taken.append(ipaddress.IPv4Network(dst, strict=False))
            except ValueError:
                continue  # not an IPv4 destination (e.g. a multicast keyword): nothing to avoid
    return taken
