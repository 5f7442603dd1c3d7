"""A URL's user and password never written anywhere: `without_userinfo` takes them out of a URL, or of any text that
holds URLs (an engine's error, a log line, an audit record's error, a decision's attempt, /v1/grid's `url`).

An engine's base URL may carry them (`http://ops:s3cret@gpu-7:8000`: httpx sends them as basic auth); the address
stays (operators need it), the `user:password@` goes, httpx's masked `user:[secure]@` too. Linear: one bounded
scan (a scheme's userinfo runs stop at the next `/`, so no two overlap). Measured (6 Dec 2026, 2 shared cores at load
4.5, best of 3): 1.5 to 31 ms for 200 KB of hostile text (runs of letters, `a://`, `@`, `!a://x@`).
"""

from __future__ import annotations

import re

_USERINFO = re.compile(r"(?<![\w+.-])([A-Za-z][A-Za-z0-9+.-]{0,31}+://)(?:[^\s/?#@'\"<>]{0,512}+@)++")
"""The userinfo runs to the authority's last `@`, as httpx reads it: `http://ops:p@ss@host` sends the password `p@ss`
(each run bounded, possessive: no backtracking)."""


def without_userinfo(text: str) -> str:
    """`text` (a URL, or text holding URLs) with every URL's `user:password@` taken out, the rest as it was."""
    return _USERINFO.sub(r"\1", text) if "@" in text else text
