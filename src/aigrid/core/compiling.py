"""What the optional compiled build (scripts/build_core.py) needs to be told in the sources. Never compiled.

`@mypyc_attr(allow_interpreted_subclasses=True)` marks each class a plugin may subclass (the scorers,
filters, pickers, Scheduler and Profile): compiled with the core, a class refuses Python subclasses unless it
says so. mypy (the `dev` extra) brings mypy_extensions; without it nothing is compiled and the decorator
changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

try:
    from mypy_extensions import mypyc_attr
except ImportError:  # no mypy here, so nothing compiled: the decorator has nothing to say

    def mypyc_attr(*attrs: str, **kwattrs: Any) -> Callable[[T], T]:  # type: ignore[misc]
        return lambda cls: cls
