"""A batch line's `stream` (gateway/batch_input.py): a batch request is answered whole, so anything but absent, null
or false is refused at the file's check, in words that fit what the line sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from aigrid.gateway.batch_input import check_file

CHAT = "/v1/chat/completions"
MODEL = "smollm2-135m"


def _checked(tmp_path: Path, stream: Any) -> list[dict[str, Any]]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    path = tmp_path / "in.jsonl"
    path.write_bytes(orjson.dumps({"custom_id": "a", "method": "POST", "url": CHAT, "body": body}) + b"\n")
    return check_file(path, CHAT, [MODEL], 100).errors


@pytest.mark.parametrize("stream, said", [
    (True, "body.stream: a batch request is answered whole; leave stream out or send false."),
    ("false", "body.stream: a boolean, not 'false' (a batch request is answered whole); leave stream out or send "
              "false."),
    (0, "body.stream: a boolean, not 0 (a batch request is answered whole); leave stream out or send false."),
])
def test_a_streamed_or_mistyped_stream_is_refused_in_words_that_fit_it(tmp_path: Path, stream: Any, said: str) -> None:
    """`"stream": "false"` was told "leave stream out or false": it had sent false, as a string."""
    (error,) = _checked(tmp_path, stream)
    assert (error["code"], error["param"], error["message"]) == ("invalid_request", "body.stream", said), error


@pytest.mark.parametrize("stream", [False, None])
def test_false_and_null_pass(tmp_path: Path, stream: Any) -> None:
    assert _checked(tmp_path, stream) == []
