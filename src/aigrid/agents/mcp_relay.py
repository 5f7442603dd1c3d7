"""A stdio MCP server's output, passed on a line at a time with a bound on each line: run as a script between the
MCP SDK and the server (`python -I mcp_relay.py MOST COMMAND [ARG ...]`; agents/mcp_tools.McpServer does).

The SDK's stdio client reads a server's stdout into one string until a newline comes, however long (`mcp`
2.3, `mcp.client.stdio.stdout_reader`: `buffer + chunk`, copied at every read), and offers no bound nor a seam
to add one but its private functions: a server (a local one, or one that was compromised) writing a line of
2 GB grew the gateway by several times that. Here the server's stdout is read in pieces and each line is passed
on once whole; a line that passes MOST bytes is not: an error notification (`notifications/message`, logger
`aigrid.mcp_relay`) goes in its place, the server is stopped and the relay exits, so the session ends (its
requests fail at once) and the gateway never holds more than MOST bytes of the line. Standard library only,
no import of aigrid (the SDK starts it with a bare environment). The server inherits the relay's stdin and
stderr and runs in a process group of its own, which the relay stops whole: at a line over the bound, when it is
told to stop (the SDK sends the relay's group SIGTERM, which no longer reaches the server's: the relay passes it
on) and when the server's output ends. A server started by a wrapper (`sh -c`, `npx`, `uv run`) is the wrapper's
child: the relay killed its own child only, and the server it had started lived on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys

LOGGER = "aigrid.mcp_relay"
"""The logger named in the notification that replaces a line over the bound (McpServer reads it)."""
OVERSIZED = 3
"""The relay's exit status when it stopped the server for a line over the bound."""
GONE = 4
"""... and when it stopped it because the client closed its end of the pipe."""


def oversized(most: int) -> str:
    """What the notification says (McpServer writes it itself: a server could send the same notification)."""
    return f"the server wrote a message over {most} bytes: it was not read, and the server was stopped"


def notice(most: int) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "method": "notifications/message",
                       "params": {"level": "error", "logger": LOGGER, "data": oversized(most)}}).encode() + b"\n"


def relay(most: int, command: list[str], out: int = 1) -> int:
    """Pass the server's lines to `out` (a file descriptor) until its stdout ends; its exit status, or OVERSIZED."""
    server = subprocess.Popen(command, stdout=subprocess.PIPE, process_group=0)  # its group's id: its pid
    assert server.stdout is not None
    # stopped (the SDK sends its process group SIGTERM), the relay waits for its server before it exits: ended
    # at once, it left the server to whoever reaps orphans (a zombie for each stop where the gateway is PID 1).
    # The handler only interrupts: run inside Popen.wait (the server's output ended, the server not yet), it
    # waited again under the lock that wait holds, and hung
    signal.signal(signal.SIGTERM, _told)
    source = server.stdout.fileno()
    line = bytearray()  # the current line's bytes, never more than `most`
    try:
        while piece := os.read(source, 1 << 16):
            *whole, rest = piece.split(b"\n")
            if len(line) + len(whole[0] if whole else rest) > most or any(len(w) > most for w in whole[1:]) \
                    or len(rest) > most:
                os.write(out, notice(most))
                return _stopped(server, OVERSIZED)
            if whole:
                line += whole[0]
                _write_all(out, b"\n".join([bytes(line), *whole[1:], b""]))
                line = bytearray()
            line += rest
        return server.wait()
    except _Told:  # SIGTERM ignored from here on (_told)
        return _ended(server)
    except BrokenPipeError:  # the client closed its end: a traceback on its stderr, the server left running, before
        return _stopped(server, GONE)
    finally:
        _kill_group(server, signal.SIGKILL)  # what the server started and left running when it ended


class _Told(Exception):
    """The relay told to stop (SIGTERM)."""


def _told(*_: object) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # first: a second SIGTERM landing in `except _Told` raised again
    raise _Told


def _ended(server: subprocess.Popen[bytes]) -> int:
    """The relay told to stop: the server's group told too, the server reaped, the group killed after a second
    (within the SDK's 2 s before it kills the relay's group, which the server's is not)."""
    _kill_group(server, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        server.wait(timeout=1.0)
    return _stopped(server, GONE)


def _stopped(server: subprocess.Popen[bytes], status: int) -> int:
    _kill_group(server, signal.SIGKILL)
    server.wait()
    return status


def _kill_group(server: subprocess.Popen[bytes], sig: int) -> None:
    """`sig` to every process of the server's group (its own, what it started), the server reaped or not: a group
    lives while one of its processes does."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.pid, sig)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


if __name__ == "__main__":
    sys.exit(relay(int(sys.argv[1]), sys.argv[2:]))
