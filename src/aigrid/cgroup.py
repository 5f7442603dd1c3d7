"""Where this process's cgroup v2 limits are read: the one reader of /sys/fs/cgroup, for the memory new allocations
may take (aigrid.memory) and the cores this process may use (aigrid.cores). Outside the layers, like errors.py: any
layer may ask."""

from __future__ import annotations

import logging
from pathlib import Path

MOUNT = Path("/sys/fs/cgroup")  # cgroup v2, as a container sees its own group (its cgroup namespace)

log = logging.getLogger(__name__)


def read(path: Path) -> str | None:
    """A cgroup file's text, stripped; None where it is absent (no such limit here: cgroup v1, the root group, no
    /sys) or cannot be read (one DEBUG line naming it: read as no limit, never a traceback)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        log.debug("cgroup file %s not read (%s): taken as no limit", path, e)
        return None
