"""userinfo.without_userinfo: a URL's user and password out of any text, the rest as it was."""

from __future__ import annotations

import httpx
import pytest

from aigrid.userinfo import without_userinfo


@pytest.mark.parametrize(("url", "address"), [
    ("http://ops:p@ss@10.0.0.7:8000", "http://10.0.0.7:8000"),
    ("http://ops:a@b@c@gpu-7.example:8000/v1", "http://gpu-7.example:8000/v1"),
])
def test_a_password_holding_an_at_sign_is_taken_out_whole(url: str, address: str) -> None:
    # httpx reads the userinfo up to the authority's last @ and sends all of it as basic auth
    assert "@" in (httpx.URL(url).password or "")
    assert without_userinfo(f"connect failed: {url}/chat/completions (x)") == f"connect failed: {address}/chat/completions (x)"


@pytest.mark.parametrize("text", [
    '{"e": "mail a@b.com", "url": "http://h:8000/x@y"}',  # an @ in a path, a mail address
    "see http://h:1 user@x.com", "http://host?q=a@b", "http://host#a@b", "user@host:22",
])
def test_text_with_no_userinfo_is_left_as_it_was(text: str) -> None:
    assert without_userinfo(text) == text


def test_long_runs_of_schemes_and_at_signs_are_all_taken_out() -> None:
    # every userinfo of a long run goes (the cost of such text is measured in userinfo.py's docstring, not here)
    text = "!a://x@" * 20_000 + "a://" + "y@" * 20_000
    assert without_userinfo(text) == "!a://" * 20_000 + "a://"
