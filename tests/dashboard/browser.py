"""Headless Chromium for the dashboard's browser tests: Debian's /usr/bin/chromium driven by Playwright.

Never `playwright install` (it downloads a browser build); the system package is used instead, installed
here with apt-get when the tests run as root and it is missing.

One browser serves a whole test module (`launched_chromium`, behind the `chromium` fixture of conftest.py): starting
Playwright's driver and the browser took 3 to 4 s a test on a loaded machine. Each test's page is in a browser
context of its own (`chromium_page`): its own cookies, storage and cache, closed when the test ends.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def ensure_chromium() -> None:
    """Install Debian's chromium when missing and possible; skip (with the reason) when it is not."""
    if not CHROMIUM.exists() and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False, capture_output=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], env=env, check=False,
                       capture_output=True, timeout=600)
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is missing: apt-get install chromium (Debian) to run the browser tests")


@contextmanager
def launched_chromium() -> Iterator[Any]:
    """Playwright's driver and one headless Chromium, until the block ends (skips as ensure_chromium does).

    While the driver runs, its event loop reads as this thread's running loop between Playwright's calls
    (playwright._impl._greenlets.wait_for_future): an async test, or asyncio.run, in this thread meanwhile fails. So
    it lasts one module of browser tests, none of them async, never the session."""
    ensure_chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (no browser download)")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def chromium_page(browser: Any, base: str, external: list[str], **options: Any) -> Iterator[Any]:
    """A fresh page of `browser` (launched_chromium's), in a context of its own (nothing kept from another test's);
    every request of that context (its popups too) to a host other than `base` is recorded in `external` and
    aborted. `options` go to Playwright's new_context (`viewport`, `has_touch=True` for a phone's taps)."""
    if not browser.is_connected():  # a browser that crashed in an earlier test: say so, not a driver's error
        pytest.fail("the module's chromium is gone (it crashed or was closed in an earlier test)")
    context = browser.new_context(**{"viewport": {"width": 1600, "height": 1000}, **options})
    try:

        def guard(route: Any) -> None:
            url = route.request.url
            if url.startswith(base) or url.startswith("data:"):
                route.continue_()
            else:
                external.append(url)
                route.abort()

        context.route("**/*", guard)  # a page's own routes (page.route) are asked before it
        yield context.new_page()
    finally:
        context.close()


def errors_of(page: Any) -> list[str]:
    """The page's uncaught errors and console errors, as they come."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    return errors


def open_dashboard(page: Any, url: str, mode: str) -> list[str]:
    """`page` at `url` once the dashboard is in `mode` (its body's data-mode: live, replay); back: its errors
    (errors_of), recorded from before it loaded."""
    errors = errors_of(page)
    page.goto(url)
    page.wait_for_function(f"() => document.body.dataset.mode === '{mode}'", timeout=15000)
    return errors
