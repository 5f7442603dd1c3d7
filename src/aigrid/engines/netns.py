"""Real distance on one machine: each site in its own Linux network namespace, joined to the root namespace
by a veth pair whose packets the kernel holds for the site's one-way delay in each direction.

    async with SiteNetwork(plan_links(gateway_point, site_points)) as net:
        cfg = in_namespace(embedded_config(log, context=8192), net, "nrt")   # llama-server inside nrt's namespace
        ...  # the gateway reaches it at http://{net.address('nrt')}:{cfg.port}, ~RTT(gateway, Tokyo) away

Two ways to delay, chosen once at start() (method="auto"):
- "netem": `tc qdisc netem delay` on both ends of the veth. The kernel alone makes the distance.
- "queue": for kernels built without sch_netem (and without sch_fq, which the BPF earliest-departure-time
  alternative needs): iptables sends the link's packets to NFQUEUE, the kernel holds them, and a small delay
  process inside the namespace (netns_delay.py) releases each one after the delay. See docs/netns.md.

Names carry the owner's pid (aigrid-<pid>-<n>-<site>, host devices ag<pid hex>-<n>), so parallel runs never
collide and cleanup_stale() can remove what a killed run left. stop() removes everything start() created,
and start() undoes its own partial work when it fails. Needs root, iproute2 and (for "queue") iptables.
"""

from __future__ import annotations

import asyncio
import dataclasses
import fcntl
import itertools
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Literal

from aigrid.engines import netns_delay
from aigrid.engines.llama_server import LlamaServerConfig, _die_with_parent
from aigrid.engines.netns_plan import (
    DEFAULT_POOL,
    GUARD_ROUTE_PROTO,
    SiteAddressing,
    SiteLink,
    address_sites,
    allocate_subnets,
    owner_of,
    parse_taken,
)
from aigrid.errors import EngineBuildError

DelayMethod = Literal["auto", "netem", "queue"]
QUEUE_NUM = 0
GUARD = ("unreachable",)
GUARD_METRIC = ("metric", "4294967295", "proto", GUARD_ROUTE_PROTO)
SITE_PORT = 8080
"""Engines listen on this port inside their namespace: every namespace has the whole port range to itself."""
LOCK_PATH = Path(tempfile.gettempdir()) / "aigrid-netns.lock"
_instances = itertools.count()
_serials = itertools.count()


def missing_tools(method: DelayMethod = "auto") -> str | None:
    """Why this process cannot build site networks (not root, tools missing), or None if it can."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root: run as root (CI does), or use gateway-emulated distance"
    needed = ["ip"] + (["iptables"] if method == "queue" else [])
    absent = [tool for tool in needed if shutil.which(tool) is None]
    if absent:
        return f"missing {', '.join(absent)}: apt-get install iproute2 iptables"
    return None


async def run_cmd(*argv: str) -> str:
    """Run one command; its stdout, or EngineBuildError quoting stderr (or saying the tool is missing)."""
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as exc:
        raise EngineBuildError(f"cannot run {argv[0]}: {exc} (apt-get install iproute2 iptables)") from exc
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise EngineBuildError(f"`{' '.join(argv)}` failed ({proc.returncode}): {err.decode(errors='replace').strip()}")
    return out.decode(errors="replace")


async def cleanup_stale() -> list[str]:
    """Delete namespaces, host devices and guard routes left by aigrid processes that no longer exist."""
    removed: list[str] = []
    for name in (await run_cmd("ip", "netns", "list")).split():
        pid = owner_of(name)
        if pid is not None and not Path(f"/proc/{pid}").exists():
            await _delete_namespace(name)
            removed.append(name)
    for link in json.loads(await run_cmd("ip", "-j", "link", "show") or "[]"):
        name = str(link.get("ifname", ""))
        pid = owner_of(name)
        if pid is not None and not Path(f"/proc/{pid}").exists():
            await _quiet("ip", "link", "del", name)
            removed.append(name)
    for route in json.loads(await run_cmd("ip", "-j", "-4", "route", "show", "proto", GUARD_ROUTE_PROTO) or "[]"):
        dst = str(route.get("dst", ""))
        owners = json.loads(await run_cmd("ip", "-j", "-4", "route", "show", "exact", dst) or "[]")
        if dst and all(r.get("type") == "unreachable" for r in owners):  # its site's veth is gone
            await _quiet("ip", "route", "del", *GUARD, dst, *GUARD_METRIC)
            removed.append(f"route {dst}")
    return removed


async def _quiet(*argv: str) -> None:
    """Run a teardown command whose failure only means the thing is already gone."""
    try:
        await run_cmd(*argv)
    except EngineBuildError:
        pass  # already removed (or never created): teardown goes on


async def _delete_namespace(name: str) -> None:
    """Kill what still runs inside (our children: engines, delay processes), then delete the namespace."""
    try:
        pids = (await run_cmd("ip", "netns", "pids", name)).split()
    except EngineBuildError:
        pids = []
    for pid in pids:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass  # exited meanwhile
    await _quiet("ip", "netns", "del", name)


class SiteNetwork:
    """One namespace + veth + delay per site. `async with`, or start() and stop()."""

    def __init__(self, links: Sequence[SiteLink], *, method: DelayMethod = "auto", pool: str = DEFAULT_POOL,
                 python: str = sys.executable, ready_timeout_s: float = 10.0) -> None:
        if len({link.site_id for link in links}) != len(links):
            raise ValueError("duplicate site ids in links")
        self.links = {link.site_id: link for link in links}
        self.requested_method: DelayMethod = method
        self.method: Literal["netem", "queue"] | None = None
        self.pool = pool
        self.python = python
        self.ready_timeout_s = ready_timeout_s
        self._sites: dict[str, SiteAddressing] = {}
        self._delayers: list[asyncio.subprocess.Process] = []

    # --- what the rest of aigrid uses -------------------------------------------------------------------
    def address(self, site_id: str) -> str:
        """The site's address inside its namespace: where its engines listen and the gateway connects."""
        return self._site(site_id).site_ip

    def namespace(self, site_id: str) -> str:
        return self._site(site_id).namespace

    def exec_prefix(self, site_id: str) -> tuple[str, ...]:
        """argv prefix that runs a command inside the site's namespace (LlamaServerConfig.wrapper)."""
        return (shutil.which("ip") or "ip", "netns", "exec", self._site(site_id).namespace)

    async def set_link(self, site_id: str, up: bool) -> None:
        """Cut a site off (or reconnect it), as a lost site: its end of the veth goes down, packets to it are
        dropped and connections time out. The root end stays up so that its route stays: traffic for the
        site's address never falls through to the default route and out of the machine."""
        site = self._site(site_id)
        await run_cmd("ip", "-n", site.namespace, "link", "set", site.site_device, "up" if up else "down")

    def _site(self, site_id: str) -> SiteAddressing:
        if site_id not in self._sites:
            raise KeyError(f"site {site_id!r} has no network (started: {bool(self._sites)})")
        return self._sites[site_id]

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Create every namespace, veth and delay; raises EngineBuildError saying how to fix a refusal."""
        if self._sites:
            raise RuntimeError("site network already started")
        if reason := missing_tools(self.requested_method):
            raise EngineBuildError(reason)
        try:
            await cleanup_stale()
            await self._create_links()
            self.method = await self._choose_method()
            await asyncio.gather(*(self._delay(site) for site in self._sites.values()))
        except BaseException:
            await self.stop()
            raise

    async def _create_links(self) -> None:
        fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # One allocation at a time across processes: two runs never pick the same /30.
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            taken = parse_taken(json.loads(await run_cmd("ip", "-j", "-4", "addr", "show") or "[]"),
                                json.loads(await run_cmd("ip", "-j", "-4", "route", "show", "table", "all") or "[]"))
            ids = list(self.links)
            subnets = allocate_subnets(len(ids), taken, self.pool)
            serial = next(_serials)
            for _ in ids[1:]:
                next(_serials)
            sites = address_sites(ids, subnets, owner_pid=os.getpid(), instance=next(_instances),
                                  first_serial=serial)
            for site in sites:
                self._sites[site.site_id] = site  # registered first: stop() removes even a half-built site
                await self._create_link(site)
        except ValueError as exc:
            raise EngineBuildError(f"cannot allocate site addresses: {exc}") from exc
        finally:
            os.close(fd)  # releases the lock

    async def _create_link(self, s: SiteAddressing) -> None:
        ns = ("ip", "-n", s.namespace)
        await run_cmd("ip", "netns", "add", s.namespace)
        await run_cmd("ip", "link", "add", s.host_device, "type", "veth", "peer", "name", s.site_device,
                      "netns", s.namespace)
        await run_cmd("ip", "addr", "add", f"{s.host_ip}/{s.prefix_len}", "dev", s.host_device)
        await run_cmd(*ns, "addr", "add", f"{s.site_ip}/{s.prefix_len}", "dev", s.site_device)
        await run_cmd(*ns, "link", "set", "lo", "up")
        await run_cmd(*ns, "link", "set", s.site_device, "up")
        await run_cmd("ip", "link", "set", s.host_device, "up")
        await run_cmd("ip", "route", "add", *GUARD, s.network, *GUARD_METRIC)

    async def _choose_method(self) -> Literal["netem", "queue"]:
        if self.requested_method != "auto":
            return self.requested_method
        probe = next(iter(self._sites.values()))
        try:
            await run_cmd("tc", "qdisc", "add", "dev", probe.host_device, "root", "netem", "delay", "0us")
        except EngineBuildError as exc:
            if reason := missing_tools("queue"):
                raise EngineBuildError(f"this kernel cannot netem ({exc}); the NFQUEUE fallback is not "
                                       f"possible either: {reason}") from exc
            return "queue"
        await run_cmd("tc", "qdisc", "del", "dev", probe.host_device, "root")
        return "netem"

    async def _delay(self, s: SiteAddressing) -> None:
        one_way = self.links[s.site_id].one_way_ms
        if one_way <= 0:
            return
        if self.method == "netem":
            netem = ("root", "netem", "delay", f"{one_way * 1000:.0f}us", "limit", "100000")
            await run_cmd("tc", "qdisc", "replace", "dev", s.host_device, *netem)
            await run_cmd("ip", "netns", "exec", s.namespace, "tc", "qdisc", "replace", "dev", s.site_device, *netem)
            return
        await self._start_delayer(s, one_way)
        queue = ("-j", "NFQUEUE", "--queue-num", str(QUEUE_NUM))
        iptables = ("ip", "netns", "exec", s.namespace, "iptables", "-w", "-t", "mangle", "-A")
        await run_cmd(*iptables, "PREROUTING", "-i", s.site_device, *queue)
        await run_cmd(*iptables, "POSTROUTING", "-o", s.site_device, *queue)

    async def _start_delayer(self, s: SiteAddressing, one_way_ms: float) -> None:
        """The delay process, inside the namespace; returns once it has bound the queue."""
        proc = await asyncio.create_subprocess_exec(
            # By file, in isolated mode: it needs only the standard library, not aigrid's imports (httpx...).
            "ip", "netns", "exec", s.namespace, self.python, "-I", netns_delay.__file__,
            "--queue", str(QUEUE_NUM), "--delay-ms", f"{one_way_ms:.3f}",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            preexec_fn=_die_with_parent(os.getpid()),
        )
        self._delayers.append(proc)
        assert proc.stdout is not None and proc.stderr is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), self.ready_timeout_s)
        except TimeoutError:
            line = b""
        if line.strip() != b"ready":
            try:
                await asyncio.wait_for(proc.wait(), 1.0)
                err = (await proc.stderr.read(4000)).decode(errors="replace").strip()
            except TimeoutError:
                err = "(still running, silent)"
            raise EngineBuildError(f"the delay process of site {s.site_id} did not start: {err or line!r}")

    async def stop(self) -> None:
        """Remove every namespace, veth, rule and delay process of this network. Safe to call twice."""
        delayers, self._delayers = self._delayers, []
        for proc in delayers:
            if proc.returncode is None:
                try:
                    proc.kill()
                except ProcessLookupError:
                    pass  # exited meanwhile
            await proc.wait()
        sites, self._sites = self._sites, {}
        for site in sites.values():
            await _delete_namespace(site.namespace)
            await _quiet("ip", "link", "del", site.host_device)  # gone with the namespace unless held open
            await _quiet("ip", "route", "del", *GUARD, site.network, *GUARD_METRIC)  # last: nothing leaks out
        self.method = None

    async def __aenter__(self) -> SiteNetwork:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop()


def in_namespace(config: LlamaServerConfig, net: SiteNetwork, site_id: str,
                 port: int = SITE_PORT) -> LlamaServerConfig:
    """`config` changed to run llama-server inside the site's namespace, listening on its veth address."""
    return dataclasses.replace(config, wrapper=net.exec_prefix(site_id), host=net.address(site_id), port=port)
