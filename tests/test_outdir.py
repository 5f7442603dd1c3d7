from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

import pytest

from aigrid.errors import ConfigError
from aigrid.outdir import prepare_dir, write_whole


def _reports(folder: Path) -> list[Path]:
    (folder / "a.csv").write_text("x\n")
    (folder / "summary.json").write_text("{}")
    return [folder / "a.csv", folder / "summary.json"]


def test_reports_are_moved_in_whole_and_a_stale_owned_file_is_removed(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text("{}")  # an earlier run's folder
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


def test_owned_names_are_removed_only_in_an_earlier_run_s_folder_and_never_through_a_link(tmp_path: Path) -> None:
    """Review of 15890961: --out ~ (or the repository) with a map.png of the user's and no earlier run there had
    it removed by a run that did not write one; and a checks/ that is a link to another folder had the files of
    that folder matching the checks' names removed (glob follows the link)."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "map.png").write_text("the user's")
    (elsewhere / "00-07h-all-up.yaml").write_text("the user's too")
    (out / "checks").symlink_to(elsewhere)
    owned = ["summary.json", "a.csv", "*.png", "checks/[0-9][0-9]-[0-9][0-9]h-*.yaml"]
    write_whole(out, _reports, last="summary.json", owned=owned)
    assert (out / "map.png").read_text() == "the user's"  # no summary.json before: not an earlier run's folder
    write_whole(out, _reports, last="summary.json", owned=owned)  # now it is: map.png an earlier run's name
    assert not (out / "map.png").exists()
    assert (elsewhere / "00-07h-all-up.yaml").read_text() == "the user's too"


def test_an_out_path_that_cannot_be_looked_at_is_the_error_naming_the_flag(tmp_path: Path) -> None:
    # Path.exists raises every error but a missing file: --out with a name too long was an OSError traceback
    with pytest.raises(ConfigError, match=r"^--out .*: cannot read it \(File name too long\)"):
        prepare_dir(tmp_path / ("a" * 300))
