"""A port a command cannot listen on at start-up, said as one line naming the option to change.

One implementation for every command that binds a port (the gateway's `aigrid up` / `aigrid gateway`, `aigrid node`,
`aigrid emulator`): which option is at fault is read from the bind's errno, each caller names its own options and
advice. Neutral (only aigrid.errors): aigrid.engines may not import aigrid.gateway (.importlinter's layers).
"""

from __future__ import annotations

import errno
from collections.abc import Callable

from aigrid.errors import ConfigError


def cannot_listen(e: OSError, where: str, *, in_use: Callable[[], str], root: str, other_host: str,
                  in_use_option: str = "", port_option: str = "", host_option: str = "") -> ConfigError:
    """The ConfigError for the bind's failure `e` at `where` (the host and port as the command writes them:
    "127.0.0.1:8080", "127.0.0.1 port 9100"), said as "cannot listen on WHERE: ERROR" and:

    - a port in use: opened by `in_use_option`, then `in_use()` after "; " (called only then: it may look for a
      free port to name);
    - a port below 1024 without root (EACCES: the port's fault, not the host's): opened by `port_option`, then
      `root` after "; ";
    - anything else (a host that is no address of this machine): opened by `host_option`, then `other_host` as
      written (its own separator).

    Each `*_option`, where given, carries its own separator ("--port: ")."""
    said = f"cannot listen on {where}: {e.strerror or e}"
    if e.errno == errno.EADDRINUSE:
        return ConfigError(f"{in_use_option}{said}; {in_use()}")
    if e.errno == errno.EACCES:
        return ConfigError(f"{port_option}{said}; {root}")
    return ConfigError(f"{host_option}{said}{other_host}")
