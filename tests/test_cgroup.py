"""aigrid.cgroup: the groups of /proc/self/cgroup found under their hierarchy's mount. (Their limits are read in
tests/test_memory.py and tests/test_cores.py.)"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from aigrid.cgroup import own_groups
from aigrid.cores import available_cores
from aigrid.memory import MACHINE, Memory, available_memory
from tests.fake_machine import GIB, available, limited_v1, machine, mount


def test_a_group_whose_path_is_too_long_to_ask_about_is_read_at_the_mount(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """The kernel writes a group's path of up to 4,095 characters into /proc/self/cgroup; under the hierarchy's mount
    it is past PATH_MAX, and Path.is_dir raised ENAMETOOLONG (an OSError it does not take as False): `aigrid up`,
    `aigrid node` and the default workers' count ended in a traceback. Such a group is no group under the mount, as a
    path outside it is: its limits read at the mount, one DEBUG line."""
    own = ("/" + "g" * 200) * 20 + "/" + "g" * 69  # 4,090 characters, 201 a group: what the kernel may write
    root = machine(tmp_path, own=own, meminfo=available(20))
    with caplog.at_level(logging.DEBUG, logger="aigrid.cgroup"):
        assert own_groups(root) == [root / "sys" / "fs" / "cgroup"]
    assert len(caplog.records) == 1 and "is not a group under" in caplog.messages[0], caplog.messages
    assert available_memory(root) == Memory(20 * 2**30, MACHINE)
    assert available_cores(root) >= 1


@pytest.mark.parametrize("shown", ["/docker/peer", "/"])
def test_a_v1_hierarchy_mounted_twice_is_read_at_the_mount_that_holds_this_process(tmp_path: Path,
                                                                                   shown: str) -> None:
    """cgroup v1's memory hierarchy mounted twice (a bind mount of another container's group at /mnt/peer listed
    first, beside the host's at /sys/fs/cgroup/memory): the first mount mountinfo lists was taken, and this process's
    limits read in the other group's (its 1 GiB, not this process's 4 GiB). Now the first mount that shows this
    process's group: /mnt/peer shows /docker/peer, outside /docker/abc; or it shows `/` and has no docker/abc in
    it (another part of the hierarchy's view)."""
    mounts = mount(1, "/mnt/peer", "cgroup", "rw,memory", shows=shown) + \
        mount(2, "/sys/fs/cgroup/memory", "cgroup", "rw,memory") + mount(3, "/sys/fs/cgroup/unified", "cgroup2", "rw")
    root = machine(tmp_path, v1={"memory": {"": {}, "docker": {}, "docker/abc": limited_v1(4 * GIB, GIB)}},
                   v1_own={"memory": "/docker/abc"}, meminfo=available(20), mountinfo=mounts)
    peer = root / "mnt" / "peer"
    peer.mkdir(parents=True)
    for name, text in limited_v1(GIB, GIB // 2).items():
        (peer / name).write_text(text + "\n")
    hierarchy = root / "sys" / "fs" / "cgroup" / "memory"
    assert own_groups(root, "memory") == [hierarchy / "docker" / "abc", hierarchy / "docker", hierarchy]
    have = available_memory(root)
    assert have is not None and have.bytes == 3 * GIB and have.limit.endswith(f"{hierarchy / 'docker' / 'abc'})"), have


def test_a_group_no_mount_shows_is_read_at_the_first_mount(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Where no mount of the hierarchy shows this process's group, the first listed is read, as before, with one
    DEBUG line."""
    mounts = mount(1, "/mnt/a", "cgroup", "rw,memory", shows="/x") + \
        mount(2, "/mnt/b", "cgroup", "rw,memory", shows="/y")
    root = machine(tmp_path, v1={"memory": {"": {}}}, v1_own={"memory": "/z"}, meminfo=available(20),
                   mountinfo=mounts)
    with caplog.at_level(logging.DEBUG, logger="aigrid.cgroup"):
        assert own_groups(root, "memory") == [root / "mnt" / "a"]
    assert len(caplog.records) == 1 and "is not a group under" in caplog.messages[0], caplog.messages
