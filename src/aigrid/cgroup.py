"""Where this process's cgroup v2 limits are read: the one finder of its group (/proc/self/cgroup) and the one reader
of the group's files under /sys/fs/cgroup, for the memory new allocations may take (aigrid.memory) and the cores
this process may use (aigrid.cores). Outside the layers, like errors.py: any layer may ask.

Every reader takes `root`, the directory the machine's /proc and /sys are under ("/"): the tests give a directory of
their own, never the machine's."""

from __future__ import annotations

import logging
from pathlib import Path

ROOT = Path("/")
MOUNT = Path("sys/fs/cgroup")  # cgroup v2's hierarchy, under root
OWN = Path("proc/self/cgroup")  # this process's groups, one line a hierarchy: v2's is `0::/PATH`

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


def own_groups(root: Path = ROOT) -> list[Path]:
    """The cgroup v2 groups whose limits hold this process, its own first, then each one above it up to the
    hierarchy's root: a limit set on a parent (a systemd slice's MemoryMax=, a pod's group above its container's)
    holds every group under it, and a container run with --cgroupns=host sees its own group as a path under the
    host's hierarchy, not at /sys/fs/cgroup. The group is /proc/self/cgroup's `0::/PATH` line, PATH under
    /sys/fs/cgroup. Where it names `/` (a container with its own cgroup namespace, Docker's and Podman's default on
    cgroup v2: /sys/fs/cgroup is its own group) or there is no such line (cgroup v1 only, no /proc), /sys/fs/cgroup
    alone; so too, with one DEBUG line, where PATH is no directory there (a group outside this namespace's view,
    `/../..`, or a hierarchy mounted elsewhere)."""
    mount = root / MOUNT
    path = "/"
    for line in (read(root / OWN) or "").splitlines():
        if line.startswith("0::"):
            path = line[3:]
    parts = [p for p in path.split("/") if p]
    if not parts:
        return [mount]
    leaf = mount.joinpath(*parts)
    if ".." in parts or "." in parts or not leaf.is_dir():
        log.debug("cgroup %s of %s is not a group under %s: its limits read there only", path, root / OWN, mount)
        return [mount]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
