"""The delay line: holds every packet crossing one site's link for the one-way delay, for kernels without
sch_netem.

The kernel keeps the packet: an iptables rule in the site's namespace sends each packet entering or leaving
the site's veth to NFQUEUE (net/netfilter/nfnetlink_queue.c), where it waits, unmodified and unread, until
this process accepts it. This process only sees each packet's id (copy mode META) and answers, one-way delay
after its arrival, with a batch verdict "accept every packet up to id N". One queue carries both directions;
the delay is the same for both, so release in arrival order is release in id order, and a verdict lost to a
receive-buffer overflow is repaired by the next batch verdict.

Run inside the site's namespace (the netlink socket belongs to the namespace it was opened in):

    ip netns exec aigrid-<pid>-<n>-<site> python -m aigrid.engines.netns_delay --queue 0 --delay-ms 40

It prints `ready` once the queue is bound. Standard library only; no asyncio: one select() loop whose
timeout is the next packet's due time (select has microsecond resolution, poll/epoll only milliseconds).
"""

from __future__ import annotations

import argparse
import collections
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
SO_RCVBUFFORCE = 33
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_CONFIG = 2
NFQNL_MSG_VERDICT_BATCH = 3
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NFQA_CFG_F_GSO = 1 << 2  # hand over GSO packets whole: nothing to segment, the payload is never read
NF_ACCEPT = 1
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2
NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid (host byte order)
NFGENMSG = struct.Struct("!BBH")  # family, version, res_id (queue number, big endian)
NLA_HDR = struct.Struct("=HH")  # len, type

QUEUE_MAXLEN = 65536
RCVBUF_BYTES = 8 << 20


def _align4(n: int) -> int:
    return (n + 3) & ~3


def attr(kind: int, payload: bytes) -> bytes:
    """One netlink attribute, padded to 4 bytes."""
    raw = NLA_HDR.pack(NLA_HDR.size + len(payload), kind) + payload
    return raw + b"\0" * (_align4(len(raw)) - len(raw))


def message(msg_type: int, queue: int, attrs: bytes, *, seq: int = 0, flags: int = NLM_F_REQUEST) -> bytes:
    """An nfnetlink_queue message: netlink header + nfgenmsg (AF_UNSPEC, version 0, queue) + attributes."""
    body = NFGENMSG.pack(socket.AF_UNSPEC, 0, queue) + attrs
    return NLMSG_HDR.pack(NLMSG_HDR.size + len(body), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, seq, 0) + body


def config_messages(queue: int) -> list[bytes]:
    """Bind the queue, copy only metadata, allow a long queue, keep GSO packets whole."""
    return [
        message(NFQNL_MSG_CONFIG, queue, attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0)),
                seq=1, flags=NLM_F_REQUEST | NLM_F_ACK),
        message(NFQNL_MSG_CONFIG, queue, attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META)),
                seq=2, flags=NLM_F_REQUEST | NLM_F_ACK),
        message(NFQNL_MSG_CONFIG, queue, attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", QUEUE_MAXLEN)),
                seq=3, flags=NLM_F_REQUEST | NLM_F_ACK),
        message(NFQNL_MSG_CONFIG, queue, attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_GSO))
                + attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_GSO)),
                seq=4, flags=NLM_F_REQUEST | NLM_F_ACK),
    ]


def verdict_batch(queue: int, last_id: int) -> bytes:
    """Accept every queued packet whose id is <= last_id."""
    return message(NFQNL_MSG_VERDICT_BATCH, queue, attr(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, last_id)))


def parse(datagram: bytes) -> tuple[list[int], list[tuple[int, int]]]:
    """Packet ids and (seq, errno) acknowledgements in one datagram read from the socket."""
    ids: list[int] = []
    acks: list[tuple[int, int]] = []
    offset = 0
    while offset + NLMSG_HDR.size <= len(datagram):
        length, msg_type, _flags, seq, _pid = NLMSG_HDR.unpack_from(datagram, offset)
        if length < NLMSG_HDR.size:
            break
        end = offset + length
        if msg_type == NLMSG_ERROR:
            (error,) = struct.unpack_from("=i", datagram, offset + NLMSG_HDR.size)
            acks.append((seq, -error))
        elif msg_type == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
            pos = offset + NLMSG_HDR.size + NFGENMSG.size
            while pos + NLA_HDR.size <= end:
                alen, akind = NLA_HDR.unpack_from(datagram, pos)
                if alen < NLA_HDR.size:
                    break
                if akind & 0x7FFF == NFQA_PACKET_HDR:
                    ids.append(struct.unpack_from("!I", datagram, pos + NLA_HDR.size)[0])
                pos += _align4(alen)
        offset += _align4(length)
    return ids, acks


def open_queue(queue: int) -> socket.socket:
    """A netlink socket bound to `queue` in the current network namespace. Raises OSError on refusal."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF_BYTES)
        sock.bind((0, 0))
        for msg in config_messages(queue):
            sock.send(msg)
            _ids, acks = parse(sock.recv(65536))
            for seq, errno in acks:
                if errno:
                    raise OSError(errno, f"nfnetlink_queue refused config message {seq} for queue {queue}")
    except BaseException:
        sock.close()
        raise
    return sock


def run(queue: int, delay_s: float) -> None:
    """Hold each packet of `queue` for delay_s, forever."""
    sock = open_queue(queue)
    sock.setblocking(False)
    print("ready", flush=True)
    pending: collections.deque[tuple[float, int]] = collections.deque()
    while True:
        timeout = max(0.0, pending[0][0] - time.monotonic()) if pending else None
        readable, _, _ = select.select([sock], [], [], timeout)
        if readable:
            now = time.monotonic()
            while True:
                try:
                    datagram = sock.recv(65536)
                except BlockingIOError:
                    break
                except OSError:  # ENOBUFS: notifications lost; the next batch verdict releases them
                    continue
                pending.extend((now + delay_s, pid) for pid in parse(datagram)[0])
        now = time.monotonic()
        last = None
        while pending and pending[0][0] <= now:
            last = pending.popleft()[1]
        if last is not None:
            sock.send(verdict_batch(queue, last))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aigrid.engines.netns_delay", description=__doc__.split("\n")[0])
    parser.add_argument("--queue", type=int, default=0, help="NFQUEUE number")
    parser.add_argument("--delay-ms", type=float, required=True, help="one-way delay per packet")
    args = parser.parse_args(argv)
    try:
        run(args.queue, args.delay_ms / 1000.0)
    except OSError as exc:
        print(f"netns_delay: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
