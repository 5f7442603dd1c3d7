"""Where this process's cgroup limits are read, cgroup v2's and v1's alike: the one finder of its groups
(/proc/self/cgroup, each hierarchy's mount in /proc/self/mountinfo) and the one reader of the groups' files, for the
memory new allocations may take (aigrid.memory) and the cores this process may use (aigrid.cores). Outside the
layers, like errors.py: any layer may ask.

Every reader takes `root`, the directory the machine's /proc and /sys are under ("/"): the tests give a directory of
their own, never the machine's."""

from __future__ import annotations

import logging
import re
from pathlib import Path

ROOT = Path("/")
V2 = ""
"""own_groups' `controller` for cgroup v2's one hierarchy; a v1 hierarchy is named by its controller ("memory")."""
MOUNT = Path("sys/fs/cgroup")  # cgroup v2's hierarchy, under root, where /proc/self/mountinfo cannot be read
USUAL = {V2: (MOUNT,), "memory": (MOUNT / "memory",), "cpu": (MOUNT / "cpu,cpuacct", MOUNT / "cpu")}
"""Where each hierarchy is usually mounted (systemd's places), read where /proc/self/mountinfo cannot be."""
OWN = Path("proc/self/cgroup")  # this process's groups, one line a hierarchy: v2's `0::/PATH`, v1's `4:memory:/PATH`
MOUNTS = Path("proc/self/mountinfo")  # this process's mounts: a hierarchy's mount point and the group it shows there

log = logging.getLogger(__name__)


def read(path: Path) -> str | None:
    """A cgroup file's text, stripped; None where it is absent (no such limit here: the root group, no /sys, the
    other cgroup version's file) or cannot be read (one DEBUG line naming it: read as no limit, never a traceback)."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        log.debug("cgroup file %s not read (%s): taken as no limit", path, e)
        return None


def _unescape(field: str) -> str:
    """A /proc/self/mountinfo path with the kernel's octal escapes (`\\040` a space) read back."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts(root: Path, controller: str) -> list[tuple[Path, str]]:
    """Each of the hierarchy's mount points (under root) and the group it shows there (`/`, or the group a container
    without its own cgroup namespace was given), in /proc/self/mountinfo's order: its `cgroup2` mounts for V2, its
    `cgroup` mounts whose options name the controller for v1 (`rw,memory`, `rw,cpu,cpuacct`); none where it lists none
    (no such hierarchy: cgroup v2 alone has no v1 memory controller). A hierarchy may be mounted more than once (a
    bind mount of another container's group, a second mount showing another part of it): own_groups takes the one
    that holds this process. Where mountinfo cannot be read, the USUAL place if it is a directory there, showing `/`."""
    text = read(root / MOUNTS)
    if text is None:
        return [(root / p, "/") for p in USUAL[controller] if (root / p).is_dir()][:1]
    found = []
    for line in text.splitlines():
        mine, dash, theirs = line.partition(" - ")
        fields, kind = mine.split(), theirs.split()
        if not dash or len(fields) < 5 or len(kind) < 3:
            continue
        if (kind[0] == "cgroup2") if controller == V2 else (kind[0] == "cgroup" and controller in
                                                              kind[2].split(",")):
            found.append((root / _unescape(fields[4]).lstrip("/"), _unescape(fields[3])))
    return found


def _is_dir(path: Path) -> bool:
    """Whether `path` is a directory; False where that cannot be asked: Path.is_dir raises an OSError other than
    ENOENT and ENOTDIR (ENAMETOOLONG: a group's path of /proc/self/cgroup, up to 4,095 characters, under the mount is
    past PATH_MAX), which was a traceback out of `aigrid up` and the workers' count."""
    try:
        return path.is_dir()
    except OSError:
        return False


def own_groups(root: Path = ROOT, controller: str = V2) -> list[Path]:
    """The groups whose limits hold this process in one hierarchy (V2, or a v1 controller's: "memory", "cpu"), its
    own first, then each one above it up to the hierarchy's mount: a limit set on a parent (a systemd slice's
    MemoryMax=, a pod's group above its container's) holds every group under it, and a container run with
    --cgroupns=host sees its own group as a path under the host's hierarchy. The group is /proc/self/cgroup's line of
    that hierarchy (v2's `0::/PATH`; v1's `N:memory:/PATH`, `N:cpu,cpuacct:/PATH`), PATH under the hierarchy's mount
    (_mounts: /proc/self/mountinfo, or the usual /sys/fs/cgroup, /sys/fs/cgroup/memory, /sys/fs/cgroup/cpu,cpuacct),
    less the group the mount shows at its mount point; of a hierarchy mounted more than once, the first mount that
    shows PATH (its group under the group the mount shows, a directory there), not the first listed, which read
    another group's limits. Where that leaves `/` (a container with its own
    cgroup namespace, Docker's and Podman's default on cgroup v2, or a v1 container whose mount shows its own group)
    or there is no such line (no /proc), the mount alone; so too, the first mount's, with one DEBUG line, where no
    mount shows PATH (a group outside this namespace's view, `/../..`, or outside the group each mount shows). No
    group at all where the hierarchy is not mounted (no v1 memory hierarchy on a cgroup v2 machine)."""
    mounts = _mounts(root, controller)
    if not mounts:
        return []
    path = "/"
    for line in (read(root / OWN) or "").splitlines():
        _, _, rest = line.partition(":")
        names, colon, group = rest.partition(":")
        if colon and ((not names) if controller == V2 else controller in names.split(",")):
            path = group
    for mount, shown in mounts:  # the first mount that holds this process's group
        groups = _groups_under(mount, shown, path)
        if groups is not None:
            return groups
    log.debug("cgroup %s of %s is not a group under %s: its limits read there only", path, root / OWN,
              mounts[0][0])
    return [mounts[0][0]]


def _groups_under(mount: Path, shown: str, path: str) -> list[Path] | None:
    """The group `path` (of /proc/self/cgroup) and each one above it, under a mount showing the group `shown` at its
    mount point: the mount alone where they are the same group; None where the mount does not show `path` (outside
    `shown`, `..` in it, or no directory there)."""
    parts = [p for p in path.split("/") if p]
    above = [p for p in shown.split("/") if p]
    if parts[:len(above)] != above:
        return None
    parts = parts[len(above):]
    if not parts:
        return [mount]
    if ".." in parts or "." in parts or not _is_dir(mount.joinpath(*parts)):
        return None
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]
