from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

from aigrid.errors import ConfigError
from aigrid.outdir import write_whole


def _reports(folder: Path) -> list[Path]:
    (folder / "a.csv").write_text("x\n")
    (folder / "summary.json").write_text("{}")
    return [folder / "a.csv", folder / "summary.json"]


def test_reports_are_moved_in_whole_and_a_stale_owned_file_is_removed(tmp_path: Path) -> None:
    (tmp_path / "old.png").write_text("stale")
    (tmp_path / "mine.txt").write_text("the user's")
    written = write_whole(tmp_path, _reports, last="summary.json", owned=["*.png", "a.csv", "summary.json"])
    assert sorted(p.name for p in written) == ["a.csv", "summary.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv", "mine.txt", "summary.json"]


def test_a_disk_full_before_the_first_file_is_the_error_naming_the_flag(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    # the staging folder's own mkdtemp was outside the try: a full disk there was a raw OSError (a traceback)
    def full(*args: object, **kwargs: object) -> str:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / ".aigrid-x"))

    monkeypatch.setattr(tempfile, "mkdtemp", full)
    with pytest.raises(ConfigError, match=r"--out .*: cannot write .*No space left on device"):
        write_whole(tmp_path, _reports, last="summary.json", owned=["summary.json"])
    assert list(tmp_path.iterdir()) == []
