"""The folder a command writes its reports into (sim/plan/bench --out, models eval --plot's folder).

Made before the work starts, so that a path that cannot be a folder (a file, a file's child, a read-only
place) fails at once in one line naming the flag, not in a traceback after minutes of simulation.
"""

from __future__ import annotations

import os
from pathlib import Path

from aigrid.errors import ConfigError


def prepare_dir(path: Path, flag: str = "--out") -> Path:
    """Create `path` (and its parents) if needed and check it can be written; ConfigError otherwise."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path}: is a file, not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"{flag} {path}: cannot create the directory ({e.strerror or e})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: not writable")
    return path


def write_failed(flag: str, path: Path, e: OSError) -> ConfigError:
    """The error for an OSError while writing the outputs (a full disk, a folder removed under us)."""
    return ConfigError(f"{flag} {path}: cannot write {e.filename or 'the outputs'} ({e.strerror or e})")
