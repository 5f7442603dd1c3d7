"""listen_errors.cannot_listen: the one implementation of "cannot listen on ..." for every command that binds a port
(the gateway's, `aigrid node`'s, `aigrid emulator`'s), the option at fault read from the bind's errno."""

from __future__ import annotations

import errno
import os
import re
import socket
from pathlib import Path

import pytest

from aigrid.listen_errors import cannot_listen

SRC = Path(__file__).resolve().parents[1] / "src" / "aigrid"


def _said(e: OSError, asked: list[str]) -> str:
    def in_use() -> str:
        asked.append("in_use")
        return "give another --port"

    return str(cannot_listen(e, "h:1", in_use=in_use, root="give --port 1024 or above",
                             other_host=" (an address of this machine)", in_use_option="--port: ",
                             port_option="port: ", host_option="--host: "))


@pytest.mark.parametrize(("e", "want", "asked"), [
    (OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE)),
     f"--port: cannot listen on h:1: {os.strerror(errno.EADDRINUSE)}; give another --port", ["in_use"]),
    (PermissionError(errno.EACCES, os.strerror(errno.EACCES)),  # the port's, not the host's
     f"port: cannot listen on h:1: {os.strerror(errno.EACCES)}; give --port 1024 or above", []),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
     "--host: cannot listen on h:1: Name or service not known (an address of this machine)", []),
    (OSError("no errno at all"), "--host: cannot listen on h:1: no errno at all (an address of this machine)", []),
])
def test_the_option_at_fault_is_read_from_the_errno(e: OSError, want: str, asked: list[str]) -> None:
    """And `in_use` (which may bind ports looking for a free one to name) is asked only for a port in use."""
    seen: list[str] = []
    assert _said(e, seen) == want
    assert seen == asked


def test_cannot_listen_is_written_once() -> None:
    """The message was written twice (engines/emulator_cli.py and gateway/server.py, each its own errno reading);
    engines/ may not import gateway/, so the one implementation is the neutral aigrid/listen_errors.py."""
    writes = re.compile(r"cannot listen on \{|EADDRINUSE")  # the message's code, not a docstring naming it
    writers = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if writes.search(p.read_text(encoding="utf-8")))
    assert writers == ["listen_errors.py"], writers
