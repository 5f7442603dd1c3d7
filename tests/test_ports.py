"""tests/ports.py: a child that lost its picked port is started again on a new one; nothing else is retried."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from tests.ports import on_a_free_port

SERVE = "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen(); print('up')"


def test_a_port_taken_before_the_child_binds_it_is_given_up_for_a_new_one() -> None:
    with socket.socket() as held:  # another process's socket on the first pick
        held.bind(("127.0.0.1", 0))
        held.listen()
        picks = iter([held.getsockname()[1]])
        tried: list[int] = []

        def start(port: int) -> int:
            tried.append(port)
            done = subprocess.run([sys.executable, "-c", SERVE, str(port)], capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(done.stderr)
            return port

        from aigrid.engines.llama_server import free_port

        port = on_a_free_port(start, pick=lambda: next(picks, None) or free_port())
        assert tried == [held.getsockname()[1], port] and port != held.getsockname()[1]


def test_any_other_failure_is_raised_at_once_and_a_taken_port_at_the_last_try() -> None:
    calls: list[int] = []

    def broken(port: int) -> None:
        calls.append(port)
        raise RuntimeError("no such flag")

    with pytest.raises(RuntimeError, match="no such flag"):
        on_a_free_port(broken)
    assert len(calls) == 1

    def taken(port: int) -> None:
        calls.append(port)
        raise RuntimeError("bind: Address already in use")

    calls.clear()
    with pytest.raises(RuntimeError, match="already in use"):
        on_a_free_port(taken, tries=3)
    assert len(calls) == 3
