"""dashboard_routes(): the page, its static assets, the live feed and (optionally) a simulator run to replay.

    GET /dashboard                 the page (HTML; holds no grid data, so it needs no credentials)
    GET /dashboard/static/{file}   vendored JS, map geometry, CSS (shipped in the package, no CDN)
    GET /dashboard/state           one JSON snapshot: grid state and recent decisions
    GET /dashboard/events          server-sent events: `grid` every tick, `decisions` when there are new ones
    GET /dashboard/replay          which of the replay files below the gateway has ({"files": [...]})
    GET /dashboard/replay/{file}   requests.csv, summary.json, sites.json, details.json of one simulator run,
                                   only when the gateway was given a replay directory

Every route only reads the gateway. The data routes (state, events, replay) are audited like the API's reads
(one record a request, the live feed's when it ends; not served while the audit log cannot take the record):
the gateway authenticates the caller for the record (routes.authenticate_read: with enforcement on, a key the
gateway does not know is a 401), and with `operators` (what the gateway wires) that caller must be an operator
(Guard.operator_of: a 403 for any other tenant's key, or a narrowed operator's, with enforcement on): the credentials
are authenticated once (until the thirty-third session twice, once for the record and again by Guard.operator).
Then `authenticate`, a hook of the caller's own when given, is called with the request's credentials (the
Authorization header, or an x-api-key as a bearer key) and raises to refuse. An AuthenticationError becomes the
usual 401 envelope.

At most `max_viewers` live feeds (MAX_FEED_VIEWERS) run at once on a gateway: each costs the event loop a refresh
every tick, and with authentication off (a keyless grid on loopback) nothing else bounds them. One more is a 429
`overloaded` with `retry-after: 1`; a viewer gone frees its place. With `--workers N` each worker serves its share
(max_viewers // N, at least one), so the gateway's processes together serve max_viewers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from aigrid.dashboard.feed import Feed
from aigrid.dashboard.sse import event_stream
from aigrid.errors import ApiError, InvalidRequest, NotFound, Overloaded
from aigrid.gateway.app import with_missing_headers
from aigrid.gateway.exchange import Exchange
from aigrid.gateway.front_door import pipeline_headers
from aigrid.gateway.numbers import plain_int
from aigrid.gateway.relay_response import aclose_body
from aigrid.gateway.routes import audited_route, authenticate_read, json_response

if TYPE_CHECKING:
    from aigrid.gateway.app import Gateway

STATIC = Path(__file__).resolve().parent / "static"
REPLAY_FILES = ("requests.csv", "summary.json", "details.json", "sites.json")
Authenticate = Callable[[str | None], object]
"""Takes the Authorization header (or None), raises AuthenticationError to refuse; the result is ignored."""
OPERATORS_ONLY = "the dashboard shows every tenant's traffic"
"""Why the data routes need an operator's key, as the 403 says it."""

# The page loads nothing from elsewhere: the browser is told so, which also proves it in the browser test. Every
# static file carries the same policy: /dashboard/static/index.html is the page too (it works from there), and
# served without it, it ran with no policy and could be framed by any site (clickjacking the key form).
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                               "form-action 'none'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    # a site that opened the dashboard (window.open, a link with target=_blank and opener) kept a handle on its
    # tab and could later send it to a look-alike page asking for the key again; that handle is cut now
    "cross-origin-opener-policy": "same-origin",
    "x-content-type-options": "nosniff",
}
PAGE_HEADERS = {"cache-control": "no-cache", **SECURITY_HEADERS}
MAX_FEED_VIEWERS = 64
"""Live feeds (/dashboard/events) served at once by one gateway; one more is a 429 with Retry-After."""


class DashboardRoutes:
    def __init__(self, gw: Gateway, authenticate: Authenticate | None, interval_s: float,
                 replay_dir: Path | None, clock: Callable[[], float],
                 sleep: Callable[[float], Awaitable[None]], stopping: Callable[[], bool],
                 max_viewers: int = MAX_FEED_VIEWERS, operators: bool = False) -> None:
        self.gw = gw
        self.operators = operators
        # with `--workers N` each worker serves its share: every viewer's tick asks the one hub, and a keyless grid
        # lets anyone open feeds, so N workers of the whole bound each were N times it
        self.max_viewers = gw.share(max_viewers)
        self.viewers = 0  # live feeds flowing now
        self.stopping = stopping
        self.authenticate = authenticate
        self.interval_s = interval_s
        self.replay_dir = replay_dir
        self.clock = clock
        self.sleep = sleep

    async def _check(self, request: Request, ex: Exchange) -> None:
        """The caller on the exchange for the read's audit record (the gateway's own authentication; with it not
        enforced, any credentials read as the anonymous caller; not served while the audit log cannot take the
        record), an operator where `operators` (that caller, not authenticated again), then the hook's check
        (`authenticate`) on the same credentials (an `x-api-key` is one)."""
        principal = await authenticate_read(self.gw, request, ex)
        if self.operators:
            self.gw.guard.operator_of(principal, OPERATORS_ONLY)
        if self.authenticate is not None:
            self.authenticate(pipeline_headers(request).get("authorization"))

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8", headers=PAGE_HEADERS)

    async def state(self, request: Request, ex: Exchange) -> Response:
        await self._check(request, ex)
        feed = Feed(self.gw)
        await feed.refresh()
        body: dict[str, Any] = {"grid": feed.grid_state(self.clock()), "decisions": feed.new_decisions(),
                                "replay": self.replay_dir is not None}
        return json_response(body)

    async def events(self, request: Request, ex: Exchange) -> Response:
        await self._check(request, ex)
        raw = request.query_params.get("ticks")
        ticks = None if raw is None else plain_int(raw)
        if raw is not None and (ticks is None or not 1 <= ticks <= 100_000):
            raise InvalidRequest("ticks must be an integer between 1 and 100000", param="ticks")
        authorization = pipeline_headers(request).get("authorization")

        def over() -> bool:
            """The server stopping, the audit log no longer taking records, or the caller's credentials no longer
            valid: a feed was admitted once and went on serving, unrecorded, after the audit log stopped, and to a
            key revoked (or a JWT expired) while it watched; it ends within a tick now, its record saying why."""
            if self.stopping():
                return True
            if not self.gw.guard.audit_accepting():
                ex.outcome = "error:audit_unavailable"
                return True
            if self.gw.guard.enforcing:
                try:
                    principal = self.gw.guard.authenticator.authenticate(authorization)
                    if self.operators:
                        self.gw.guard.operator_of(principal, OPERATORS_ONLY)
                    if self.authenticate is not None:
                        self.authenticate(authorization)
                except ApiError as e:
                    ex.outcome = f"error:{e.code}"
                    return True
            return False

        stream = event_stream(Feed(self.gw), interval_s=self.interval_s, clock=self.clock, sleep=self.sleep,
                              ticks=ticks, stopping=over)
        release = self._admit()  # the last step before the answer: nothing between can raise and keep the place
        return FeedResponse(closing(watched(stream, ex)), release, media_type="text/event-stream",
                            headers={"cache-control": "no-cache", "x-accel-buffering": "no"})

    def _admit(self) -> Callable[[], None]:
        """A place among the gateway's viewers (max_viewers), taken at admission, with no await between the check
        and the count (a feed was counted from its stream's first chunk, after its answer had started, so that
        connections arriving together were each checked against a count none had joined: 8 at once against a
        cap of 2 were all served); the function that gives it back, once, however often it is called."""
        if self.viewers >= self.max_viewers:
            raise Overloaded(f"{self.max_viewers} live feeds of this gateway's dashboard are being watched, as many "
                             "as it serves at once; retry later, or read /dashboard/state", headers={"retry-after": "1"})
        self.viewers += 1
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self.viewers -= 1

        return release

    def _replay_dir(self) -> Path:
        if self.replay_dir is None:
            raise NotFound("this gateway was started without a simulator run to replay; "
                           "open the files from the page instead", param="name")
        return self.replay_dir

    async def replay_index(self, request: Request, ex: Exchange) -> Response:
        await self._check(request, ex)
        run = self._replay_dir()
        return json_response({"dir": run.name, "files": [n for n in REPLAY_FILES if (run / n).is_file()]})

    async def replay(self, request: Request, ex: Exchange) -> Response:
        await self._check(request, ex)
        name = request.path_params["name"]
        self._replay_dir()
        if name not in REPLAY_FILES:
            raise NotFound(f"no replay file {name!r}; one of: {', '.join(REPLAY_FILES)}", param="name")
        path = self._replay_dir() / name
        if not path.is_file():
            raise NotFound(f"the replay directory has no {name}", param="name")
        media = "text/csv" if name.endswith(".csv") else "application/json"
        return FileResponse(path, media_type=media, headers={"cache-control": "no-cache"})


class FeedResponse(StreamingResponse):
    """A live feed's answer, holding its viewer's place (DashboardRoutes._admit) until the answer ends: sent whole,
    cut by a client gone or the server stopping, or ended before its first byte."""

    def __init__(self, content: AsyncIterator[bytes], release: Callable[[], None], **kwargs: Any) -> None:
        self.release = release
        try:
            super().__init__(content, **kwargs)
        except BaseException:
            release()
            raise

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()


async def closing(events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`events`, closed as soon as this stream is (a cut feed's record then says `client_closed` before it is
    written, not whenever the garbage collector finalises the generator)."""
    try:
        async for event in events:
            yield event
    finally:
        await aclose_body(events)


async def watched(stream: AsyncIterator[bytes], ex: Exchange) -> AsyncIterator[bytes]:
    """The live feed, its record's outcome `client_closed` when the viewer leaves before it ends (the server
    stops the stream by cancelling it; one that ends, its ticks done or the gateway stopping, is `ok`)."""
    ended = False
    try:
        async for event in stream:
            yield event
        ended = True
    finally:
        if not ended:
            ex.outcome = "client_closed"


def with_headers(app: ASGIApp, extra: dict[str, str]) -> ASGIApp:
    """`app`, each answer with the `extra` headers it does not set itself."""
    raw = [(k.lower().encode(), v.encode()) for k, v in extra.items()]

    async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
        await app(scope, receive, with_missing_headers(send, raw))

    return wrapped


def dashboard_routes(gateway: Gateway, *, authenticate: Authenticate | None = None, interval_s: float = 1.0,
                     replay_dir: str | Path | None = None, stopping: Callable[[], bool] = lambda: False,
                     clock: Callable[[], float] = time.time,
                     sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                     max_viewers: int = MAX_FEED_VIEWERS, operators: bool = False) -> list[BaseRoute]:
    """The dashboard's routes, to mount in the gateway's app: build_app(gateway, extra_routes=...).

    operators: the data routes (state, events, replay) need an operator's key where the gateway enforces
    authentication (Guard.operator_of, on the caller the route authenticated for its record: once a request, and
    once a tick of a live feed).
    authenticate: a hook called with the Authorization header on every data route, after those checks.
    replay_dir: a simulator run's output directory to serve for /dashboard?replay=1.
    stopping: true once the server is shutting down (e.g. `lambda: server.should_exit` for uvicorn), so
    that live feeds end within one interval instead of holding the shutdown for its graceful timeout.
    max_viewers: live feeds served at once; one more is a 429 `overloaded` with `retry-after: 1`.
    """
    r = DashboardRoutes(gateway, authenticate, interval_s, None if replay_dir is None else Path(replay_dir),
                        clock, sleep, stopping, max_viewers, operators)
    return [
        Route("/dashboard", r.page, methods=["GET"]),
        Route("/dashboard/", r.page, methods=["GET"]),
        *(audited_route(gateway, "GET", path, handler) for path, handler in (
            ("/dashboard/state", r.state), ("/dashboard/events", r.events),  # a live feed: one record when it ends
            ("/dashboard/replay", r.replay_index), ("/dashboard/replay/{name}", r.replay))),
        Mount("/dashboard/static", app=with_headers(StaticFiles(directory=STATIC), SECURITY_HEADERS),
              name="dashboard-static"),
    ]
