"""Measure the distance the kernel makes: build a site network for a grid spec's sites as seen from one
reference point, run a TCP echo server inside every site's namespace, and print configured vs measured RTT.

    sudo .venv/bin/python scripts/netns_rtt.py examples/demo.yaml --origin Frankfurt [--method auto|netem|queue]

Needs root, iproute2 and, on kernels without sch_netem, iptables. Everything is removed when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time

from aigrid.core.types import GeoPoint
from aigrid.engines.netns import SiteNetwork, missing_tools
from aigrid.engines.netns_plan import SiteLink, plan_links
from aigrid.spec.load import cities, load_spec

PORT = 9000
ECHO = ("import asyncio,sys\n"
        "async def e(r,w):\n"
        "    while d:=await r.read(4096):\n"
        "        w.write(d); await w.drain()\n"
        "    w.close()\n"
        "async def m():\n"
        "    s=await asyncio.start_server(e,sys.argv[1],int(sys.argv[2])); print('up',flush=True)\n"
        "    await s.serve_forever()\n"
        "asyncio.run(m())\n")


async def measure(address: str, n: int) -> tuple[float, float, float]:
    """Median TCP connect, median 1-byte echo, median HTTP-sized (16 KiB) echo, in ms."""
    connects, small, large = [], [], []
    payload = b"x" * 16384
    for _ in range(n):
        t0 = time.perf_counter()
        reader, writer = await asyncio.open_connection(address, PORT)
        t1 = time.perf_counter()
        writer.write(b"x")
        await reader.readexactly(1)
        t2 = time.perf_counter()
        writer.write(payload)
        await reader.readexactly(len(payload))
        t3 = time.perf_counter()
        writer.close()
        await writer.wait_closed()
        connects.append(t1 - t0)
        small.append(t2 - t1)
        large.append(t3 - t2)
    return tuple(1000 * statistics.median(x) for x in (connects, small, large))  # type: ignore[return-value]


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("spec")
    parser.add_argument("--origin", default="Frankfurt", help="a site id, a city of the spec, or lat,lon")
    parser.add_argument("--method", default="auto", choices=["auto", "netem", "queue"])
    parser.add_argument("-n", type=int, default=9, help="round trips per site")
    args = parser.parse_args()
    if reason := missing_tools(args.method):
        print(reason, file=sys.stderr)
        return 2
    spec = load_spec(args.spec)
    points = {sid: GeoPoint(s.lat, s.lon) for sid, s in spec.sites.items()}
    known = {**cities(spec), **{s.name: points[sid] for sid, s in spec.sites.items()}, **points}
    origin = known.get(args.origin) or GeoPoint(*map(float, args.origin.split(",")))
    links = [SiteLink("zero", 0.0), SiteLink("ref20", 20.0), *plan_links(origin, points)]
    async with SiteNetwork(links, method=args.method) as net:
        servers = []
        for link in links:
            proc = await asyncio.create_subprocess_exec(*net.exec_prefix(link.site_id), sys.executable, "-c", ECHO,
                                                        net.address(link.site_id), str(PORT),
                                                        stdout=asyncio.subprocess.PIPE)
            assert proc.stdout is not None
            await proc.stdout.readline()
            servers.append(proc)
        try:
            print(f"method: {net.method}; origin: {args.origin}; median of {args.n}\n")
            print("| site | configured RTT (ms) | TCP connect (ms) | 1 B echo (ms) | 16 KiB echo (ms) |")
            print("|---|---:|---:|---:|---:|")
            for link in links:
                connect, small, large = await measure(net.address(link.site_id), args.n)
                print(f"| {link.site_id} | {link.rtt_ms:.1f} | {connect:.1f} | {small:.1f} | {large:.1f} |")
        finally:
            for proc in servers:
                proc.kill()
                await proc.wait()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
