"""What a 404 says of a path this gateway does not serve (envelope.http_error_handler): the client's path,
escaped and cut to a length, and the route nearest it when one is close (`POST /v1/chat/completion`: did you
mean /v1/chat/completions?), found by difflib among the app's own routes."""

from __future__ import annotations

import difflib
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from starlette.routing import BaseRoute, Mount, Route

SHOWN_PATH_CHARS = 200
"""At most this much of a client's path is said back (the rest counted, not shown)."""
NEAR = 0.8
"""difflib's ratio a route must reach to be named: /v1/chat/complete (0.83 with /v1/ set aside) is named,
/v1/moderations (0.75 to /v1/conversations, another API of OpenAI's) is not."""
_URL_SAFE = "/:@!$&'()*+,;=-._~"
"""What a path shows as it is; anything else (a space, a quote, <, a control or non-ASCII character, %) as a
URL writes it, %XX."""
_API = "/v1/"
"""Set aside before comparing: every API path starts with it, which made any /v1/ path look near any route."""


def shown_path(path: str) -> str:
    """The client's path as a URL writes it (percent-escaped), at most SHOWN_PATH_CHARS of it. Only what can be
    shown is escaped (escaping a head's 64 KiB path of "<" whole took 5.5 ms of the event loop), and the cut leaves no
    %XX in halves."""
    escaped = quote(path[:SHOWN_PATH_CHARS], safe=_URL_SAFE)  # each character escapes to one or more
    if len(escaped) <= SHOWN_PATH_CHARS and len(path) <= SHOWN_PATH_CHARS:
        return escaped
    cut = escaped[:SHOWN_PATH_CHARS]
    torn = cut.rfind("%", len(cut) - 2)  # a %XX cut after its % or its first digit
    return f"{cut[:torn] if torn >= 0 else cut}... ({len(path)} characters)"


@dataclass(frozen=True)
class Near:
    """A route near a path not served: its path and the methods it takes."""

    path: str
    methods: frozenset[str]

    def said(self, method: str) -> str:
        """'/v1/chat/completions', or 'GET /v1/models' to a method the route does not take (escaped: a route
        with parameters holds the client's own values)."""
        if method in self.methods:
            return shown_path(self.path)
        return f"{' or '.join(sorted(self.methods - {'HEAD'}))} {shown_path(self.path)}"


def _templates(routes: Iterable[BaseRoute]) -> Iterator[tuple[str, list[str], frozenset[int], frozenset[str]]]:
    """Each HTTP route: its path, the path's segments, which of them are parameters, its methods."""
    for route in routes:
        if isinstance(route, Route):  # not a Mount (the dashboard's files), nor a WebSocket route
            parts = route.path.split("/")
            params = frozenset(i for i, part in enumerate(parts) if part[:1] == "{")
            yield route.path, parts, params, frozenset(route.methods or ())


class RouteIndex:
    """An app's routes as nearest() compares them, built once per app (route_index): each route's segments,
    parameters, methods and compared form, and a difflib matcher per compared form and thread (what difflib
    builds of the route's side, once). They were built again on every 404.

    A matcher holds the path it compares (set_seq1) until its ratio is read, so one shared by two threads could
    rate one client's path against another's (a wrong "did you mean", or none). The index lives on the app's
    state, which any thread serving that app reaches (Starlette's TestClient runs an app in a thread of its own;
    a sync handler would run in the thread pool), so each thread has its own matchers (`_matcher`, built as that
    thread first compares a route): nearest() is safe from any number of threads. 13-89 us a 404's nearest() on
    the demo's 45 routes with this thread's matchers kept; built on every call, 13-151 us, four times as much for
    /helthz (`.venv/bin/python scripts/bench_route_index.py`, 6 Dec 2026, a loaded machine)."""

    def __init__(self, routes: Sequence[BaseRoute]) -> None:
        self.routes = tuple(routes)
        self._mounts = tuple(r.path + "/" for r in self.routes if isinstance(r, Mount))
        self._entries: list[tuple[str, list[str], frozenset[int], frozenset[str], str]] = []
        self._local = threading.local()  # .matchers: this thread's, by compared form
        for path, parts, params, methods in _templates(self.routes):
            theirs = "/".join("*" if i in params else part for i, part in enumerate(parts)).removeprefix(_API)
            self._entries.append((path, parts, params, methods, theirs))

    def _matcher(self, theirs: str) -> difflib.SequenceMatcher[str]:
        """This thread's matcher of a route's compared form (difflib's side of it built once per thread)."""
        matchers: dict[str, difflib.SequenceMatcher[str]] | None = getattr(self._local, "matchers", None)
        if matchers is None:
            matchers = self._local.matchers = {}
        match = matchers.get(theirs)
        if match is None:
            match = matchers[theirs] = difflib.SequenceMatcher(None, "", theirs)
        return match

    def nearest(self, path: str) -> Near | None:
        """The route nearest `path`, or None when none is near, when the path is longer than any route a typo
        makes, or when it is a part below a route (/v1/chat/completions/ID: a resource not served, not a typo). A
        route with parameters (/v1/files/{file_id}/content) is named with the path's own values in them, and
        compared without them (/v1/images/generations is not near /v1/files/generations). A path under a Mount
        (a file the dashboard's static folder does not hold) is not a typo either: /dashboard/static/x was told
        /dashboard/state."""
        if len(path) > SHOWN_PATH_CHARS or path.startswith(self._mounts):
            return None
        segments = path.split("/")
        whole = path.removeprefix(_API)
        found: dict[str, tuple[str, str, set[str]]] = {}  # each route as named: the path and it compared, methods
        for route_path, parts, params, methods, theirs in self._entries:
            if not params:
                found.setdefault(route_path, (whole, theirs, set()))[2].update(methods)
                continue
            if len(parts) != len(segments):
                continue
            named = "/".join(segments[i] if i in params else part for i, part in enumerate(parts))
            mine = "/".join("*" if i in params else segment for i, segment in enumerate(segments))
            found.setdefault(named, (mine.removeprefix(_API), theirs, set()))[2].update(methods)
        best: str | None = None
        best_ratio = NEAR
        for named, (mine, theirs, _) in found.items():
            if 2 * min(len(mine), len(theirs)) < best_ratio * (len(mine) + len(theirs)) or named == path:
                continue  # no ratio can reach it (difflib's real_quick_ratio)
            match = self._matcher(theirs)  # its route's side built once (a thread); this path's set here
            match.set_seq1(mine)
            if match.quick_ratio() >= best_ratio:
                ratio = match.ratio()
                if ratio > best_ratio or (ratio == best_ratio and best is None):
                    best, best_ratio = named, ratio
        if best is None or path.startswith(best.rstrip("/") + "/"):
            return None
        return Near(best, frozenset(found[best][2]))


def route_index(app: object) -> RouteIndex:
    """The RouteIndex of `app` (a Starlette app; scope["app"]), kept on its state: built at its first 404, again
    only if its routes changed since."""
    routes: Sequence[BaseRoute] = getattr(app, "routes", ())
    state = getattr(app, "state", None)
    index: RouteIndex | None = getattr(state, "route_index", None)
    if index is None or index.routes != tuple(routes):
        index = RouteIndex(routes)
        if state is not None:
            state.route_index = index
    return index
