"""The folder a command writes its reports into (sim/plan/bench --out, models eval --plot's folder).

Made before the work starts, so that a path that cannot be a folder (a file, a file's child, a read-only
place) fails at once in one line naming the flag, not in a traceback after minutes of simulation.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from aigrid.errors import ConfigError


def prepare_dir(path: Path, flag: str = "--out") -> Path:
    """Create `path` (and its parents) if needed and check it can be written; ConfigError otherwise."""
    try:
        a_file = path.exists() and not path.is_dir()
    except OSError as e:  # a name too long, a folder that may not be searched: Path.exists raises them
        raise ConfigError(f"{flag} {path}: cannot read it ({e.strerror or e})") from None
    if a_file:
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


def write_whole(out: Path, write: Callable[[Path], list[Path]], *, last: str, owned: Iterable[str],
                flag: str = "--out") -> list[Path]:
    """A command's reports written whole into `out`, or `out` left as it was.

    `write(folder)` writes the reports into a folder of their own inside `out` (its subfolders too) and returns
    their paths; each is then moved into `out`, `last` (the file that presents the folder as complete:
    summary.json, plan.json) removed first and moved in last. Then each file of `out` matching one of the
    `owned` patterns (the names the command writes, relative to `out`) that this run did not write is removed:
    an earlier run's PNGs (the new run had --no-plots) are not left beside the new reports as if current.
    Only where `out` held `last` (an earlier run's folder, not the user's home with a map.png of theirs), and
    never through a linked subfolder (checks/ a link to another folder). Nothing else in `out` is touched. A
    run stopped while writing (Ctrl-C, a full disk) leaves `out` as it was.
    Returns the paths in `out`; an OSError is the ConfigError of write_failed, naming the file in `out`."""
    try:
        staging = Path(tempfile.mkdtemp(prefix=".aigrid-", dir=out))
    except OSError as e:  # a full disk already: the same error, not a traceback
        raise write_failed(flag, out, e) from None
    try:
        names = [p.relative_to(staging) for p in write(staging)]
        earlier = (out / last).is_file()  # a folder an earlier run wrote: its files of `owned` names are its
        (out / last).unlink(missing_ok=True)
        for name in [n for n in names if n.as_posix() != last]:
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / name, out / name)
        for stale in sorted({p for pattern in owned for p in out.glob(pattern)} - {out / n for n in names}):
            if earlier and not _through_link(out, stale) and (stale.is_file() or stale.is_symlink()):
                stale.unlink()
        if Path(last) in names:
            os.replace(staging / last, out / last)
    except OSError as e:
        if isinstance(e.filename, str) and e.filename.startswith(str(staging)):  # its name in `out`
            e.filename = str(out / Path(e.filename).relative_to(staging))
        raise write_failed(flag, out, e) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return [out / n for n in names]


def _through_link(out: Path, path: Path) -> bool:
    """Whether a folder between `out` and `path` (inside it) is a symbolic link: glob follows it out of `out`."""
    return any((out / parent).is_symlink() for parent in path.relative_to(out).parents if parent != Path("."))
