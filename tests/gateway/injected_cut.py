"""A BaseException that is no cancel (KeyboardInterrupt, SystemExit; an injected one here), and how a test checks that
the client's call was cut by it (test_close_then_book, test_route_cut and their neighbours share these)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable


class Injected(BaseException):
    """A BaseException that is no cancel (as KeyboardInterrupt, SystemExit are), which pytest itself does not act on."""


def raised(error: BaseException) -> Callable[[BaseException], bool]:
    """Whether what the client's call raised is `error`, itself or within the group a task group wraps it in."""
    def check(e: BaseException) -> bool:
        return e is error or (isinstance(e, BaseExceptionGroup) and any(check(x) for x in e.exceptions))
    return check


async def cut_by(error: BaseException, call: Awaitable[object]) -> None:
    """Await `call` and assert that it raised `error` (itself or within a task group's group)."""
    try:
        await call
    except BaseException as e:  # noqa: BLE001 -- the injected error, checked here
        assert raised(error)(e), e
        return
    raise AssertionError(f"{error!r} was not raised")
