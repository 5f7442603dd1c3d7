"""aigrid.cgroup: the groups of /proc/self/cgroup found under their hierarchy's mount. (Their limits are read in
tests/test_memory.py and tests/test_cores.py.)"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from aigrid.cgroup import own_groups
from aigrid.cores import available_cores
from aigrid.memory import MACHINE, Memory, available_memory
from tests.fake_machine import available, machine


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
