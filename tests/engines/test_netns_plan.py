"""Site network plans without touching the kernel: delays from distance, names, address allocation, and
the nfnetlink_queue messages of the delay process."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from aigrid.core.geo import DEFAULT_OVERHEAD_MS, distance_km, rtt_ms
from aigrid.core.types import GeoPoint
from aigrid.engines import netns_delay as nfq
from aigrid.engines.netns_plan import (
    IFNAMSIZ,
    SiteLink,
    address_sites,
    allocate_subnets,
    host_device_name,
    namespace_name,
    owner_of,
    parse_taken,
    plan_links,
)

FRANKFURT = GeoPoint(50.11, 8.68)
TOKYO = GeoPoint(35.68, 139.69)


def test_each_link_carries_half_the_modelled_round_trip() -> None:
    links = {link.site_id: link for link in plan_links(FRANKFURT, {"fra": FRANKFURT, "nrt": TOKYO})}
    assert links["fra"].one_way_ms == pytest.approx(DEFAULT_OVERHEAD_MS / 2)  # only the fixed overhead: same city
    assert links["nrt"].rtt_ms == pytest.approx(rtt_ms(distance_km(FRANKFURT, TOKYO)))
    assert 130 < links["nrt"].rtt_ms < 150


def test_delays_outside_what_a_link_can_hold_are_refused() -> None:
    with pytest.raises(ValueError, match="outside"):
        SiteLink("x", -1.0)
    with pytest.raises(ValueError, match="outside"):
        SiteLink("x", 6000.0)


def test_names_carry_the_owner_and_fit_the_kernel() -> None:
    ns = namespace_name(4194303, 12, "sao paulo/1")
    assert ns == "aigrid-4194303-12-sao_paulo_1"
    dev = host_device_name(4194303, 0xABCDEF)
    assert len(dev) <= IFNAMSIZ
    assert owner_of(ns) == owner_of(dev) == 4194303
    assert owner_of("eth0") is None and owner_of("aigrid-x") is None
    with pytest.raises(ValueError):
        host_device_name(4194303, 0x1234567)


def test_allocation_skips_networks_in_use() -> None:
    taken = [ipaddress.IPv4Network("10.201.0.0/29"), ipaddress.IPv4Network("10.201.0.12/32")]
    got = allocate_subnets(3, taken, "10.201.0.0/27")
    assert [str(n) for n in got] == ["10.201.0.8/30", "10.201.0.16/30", "10.201.0.20/30"]
    with pytest.raises(ValueError, match="only 1 free"):
        allocate_subnets(2, [ipaddress.IPv4Network("10.201.0.0/30")], "10.201.0.0/29")


def test_addresses_one_and_two_of_each_slash_30() -> None:
    sites = address_sites(["fra", "nrt"], allocate_subnets(2, [], "10.201.0.0/16"), owner_pid=77, instance=0,
                          first_serial=5)
    assert [(s.host_ip, s.site_ip, s.network) for s in sites] == [
        ("10.201.0.1", "10.201.0.2", "10.201.0.0/30"), ("10.201.0.5", "10.201.0.6", "10.201.0.4/30")]
    assert [s.host_device for s in sites] == ["ag4d-5", "ag4d-6"]


def test_taken_networks_from_ip_json() -> None:
    addrs = [{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "192.0.2.2", "prefixlen": 24}]},
             {"ifname": "lo", "addr_info": []}]
    routes = [{"dst": "default"}, {"dst": "10.201.0.0/30", "type": "unreachable"}, {"dst": "127.0.0.1"}]
    assert [str(n) for n in parse_taken(addrs, routes)] == ["192.0.2.0/24", "10.201.0.0/30", "127.0.0.1/32"]


def packet_message(packet_id: int) -> bytes:
    hdr = nfq.attr(nfq.NFQA_PACKET_HDR, struct.pack("!IHB", packet_id, 0x0800, 1))
    other = nfq.attr(9, b"\x01\x02\x03")  # an attribute the delay line does not read
    return nfq.message(nfq.NFQNL_MSG_PACKET, 0, other + hdr)


def test_delay_line_reads_packet_ids_and_acks() -> None:
    ack = nfq.NLMSG_HDR.pack(36, nfq.NLMSG_ERROR, 0, 7, 0) + struct.pack("=i", -1) + b"\0" * 16
    ids, acks = nfq.parse(packet_message(41) + packet_message(42) + ack)
    assert ids == [41, 42]
    assert acks == [(7, 1)]


def test_delay_line_accepts_up_to_an_id_in_one_verdict() -> None:
    msg = nfq.verdict_batch(3, 0x01020304)
    length, kind, flags, _seq, _pid = nfq.NLMSG_HDR.unpack_from(msg)
    assert length == len(msg) and kind == (nfq.NFNL_SUBSYS_QUEUE << 8) | nfq.NFQNL_MSG_VERDICT_BATCH
    assert flags == nfq.NLM_F_REQUEST
    assert msg[16:20] == struct.pack("!BBH", 0, 0, 3)
    assert msg[-8:] == struct.pack("!II", nfq.NF_ACCEPT, 0x01020304)
    assert all(len(m) % 4 == 0 for m in nfq.config_messages(0))
