"""`aigrid emulator`: arguments that cannot give a listening engine fail at once with one line."""

from __future__ import annotations

import socket

import pytest
from typer.testing import CliRunner

from aigrid.cli import app

runner = CliRunner()


@pytest.mark.parametrize(("args", "named"), [
    (["--engines", "0"], "--engines"),        # served nothing, forever
    (["--engines", "-1"], "--engines"),
    (["--port", "70000"], "--port"),          # bound 70000 mod 65536 = 4464 without a word
    (["--port", "-1"], "--port"),
    # said "slots must be at least 1", "chunk_tokens ...": not the flag's name
    (["--slots", "0"], "--slots"),
    (["--chunk-tokens", "0"], "--chunk-tokens"),
    (["--kv-tokens", "0"], "--kv-tokens"),
    (["--default-max-tokens", "0"], "--default-max-tokens"),  # started: every request without max_tokens a 400
])
def test_arguments_out_of_range(args: list[str], named: str) -> None:
    r = runner.invoke(app, ["emulator", *args])
    assert r.exit_code == 2 and named in r.output, r.output


def test_a_port_in_use_is_one_line() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = runner.invoke(app, ["emulator", "--port", str(port)])
    assert r.exit_code == 2 and str(port) in r.output and "in use" in r.output, r.output
    assert not isinstance(r.exception, OSError)
    # the option to change is named (it said only that the port was in use)
    assert r.output.strip().endswith("give another --port (--port 0: any free one)"), r.output
    r = runner.invoke(app, ["emulator", "--host", "not a host", "--port", "0"])
    assert r.exit_code == 2 and "give --host an address of this machine" in r.output, r.output


def test_a_port_below_1024_without_root_names_the_port_not_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """EACCES is the port's (below net.ipv4.ip_unprivileged_port_start without root), not the host's: until RV10 it
    said 'give --host an address of this machine'. Injected: the tests may run as root, where port 80 binds."""
    import errno

    from aigrid.engines import emulator_cli

    async def refused(*_: object, **__: object) -> None:
        raise OSError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(emulator_cli, "serve", refused)
    r = runner.invoke(app, ["emulator", "--port", "80"])
    assert r.exit_code == 2 and "--host" not in r.output, r.output
    assert r.output.strip().endswith("a port below 1024 needs root: give --port 1024 or above"), r.output


def test_an_oserror_after_start_up_is_not_called_a_bind_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """Until Z item 2 every OSError of the whole run was reported as 'cannot listen on ... give --host an address of
    this machine': here the engine has bound its port (0: a free one) and the error comes after, from bound_port."""
    import errno

    from aigrid.engines import emulator_cli

    def broken(_: object) -> int:
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(emulator_cli, "bound_port", broken)
    r = runner.invoke(app, ["emulator", "--port", "0"])
    assert "cannot listen" not in r.output, r.output
    assert isinstance(r.exception, OSError) and r.exception.errno == errno.EBADF, (r.exception, r.output)
