"""A batch's input file, read and checked line by line (OpenAI's JSONL: one request per line,
`{"custom_id", "method": "POST", "url", "body"}`).

POST /v1/batches reads the whole file before it accepts the batch (`check_file`), one line at a time from disk,
keeping none of them; the runner reads a batch's lines the same way, a chunk at a time, as it runs them
(`LineReader`). A file with mistakes makes a batch that has failed validation, whose `errors` list them as OpenAI does (code, line, message, param; at most
MAX_ERRORS). What is checked here is what the batch as a whole depends on: each line a JSON object with
exactly those four fields, the method POST, the url the batch's endpoint, the custom_id a unique non-empty
string, the body an object naming a model the grid serves, not streamed, the line no longer than one request may
be (`gateway.max_body_bytes`: a longer line is `request_too_large`, naming its number). The rest of a body is
checked when its line runs, by the one pipeline, like any request: a mistake there fails that line (a 400 in the
error file), not the batch.

No line is read whole whatever its length: each is read at most `max_line_bytes` + 1 bytes at a time (`_lines`), a
longer one read on to its end in pieces of SKIP_BYTES and dropped, so a file of one line of 100 MiB holds no more
than a line one request may be.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator, Callable, Collection, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from aigrid.gateway.body_values import crowding, values_message
from aigrid.gateway.envelope import field_name
from aigrid.gateway.request_info import usable_models
from aigrid.json_depth import depth_message, too_deep_raw

MAX_ERRORS = 100
MAX_CUSTOM_ID = 512
SHOWN = 64
"""The most of a client's value (a method, url, model or field name) a mistake's message quotes: a batch keeps up to
MAX_ERRORS of them in its row, shown by every retrieve and list."""
CHUNK_BYTES = 1 << 20
"""About how much of a batch's lines the runner reads from its input file at once."""
MAX_LINE_BYTES = 4 * 1024 * 1024
"""The longest line read as a request when none is given (gateway.max_body_bytes' default; the gateway gives its own)."""
SKIP_BYTES = 64 * 1024
"""The pieces a line longer than that is read on in, to its end, and dropped."""
_FIELDS = ("custom_id", "method", "url", "body")
HEAD_BYTES = 16 * 1024
TAIL_BYTES = 64 * 1024
"""What a running batch keeps of the start (at least) and of the end of a line longer than the bound, to find its
custom_id among the members before its body or after it (`_custom_id`)."""
_OPEN = re.compile(rb"\s*\{")
_STRING = rb'"(?:[^"\\]|\\.)*"'
_MEMBER = re.compile(rb"\s*(" + _STRING + rb")\s*:\s*(" + _STRING + rb")\s*,")
"""A member of a request line whose value is a string, and the comma after it: custom_id, method or url before the
body."""
_SPACE = b" \t\r\n"
log = logging.getLogger("aigrid.gateway")


@dataclass(frozen=True, slots=True)
class Line:
    number: int
    """1-based, as the file's editor shows it."""
    custom_id: str
    text: bytes
    """The line as read: a batch holds its lines' bytes, not their parsed bodies (a fraction of the memory)."""

    def body(self) -> dict[str, Any]:
        """The request's body, parsed afresh (the pipeline may change it; the line stays as read)."""
        body: dict[str, Any] = orjson.loads(self.text)["body"]
        return body


@dataclass(slots=True)
class Checked:
    errors: list[dict[str, Any]] = field(default_factory=list)
    models: set[str] = field(default_factory=set)
    count: int = 0
    """How many lines passed."""

    def fail(self, code: str, message: str, line: int | None = None, param: str | None = None) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"code": code, "line": line, "message": message, "param": param})

    @property
    def model(self) -> str | None:
        """The batch's model when every line names the same one (OpenAI's `model`), else None."""
        return next(iter(self.models)) if len(self.models) == 1 else None


def check_file(path: Path, endpoint: str, known_models: Collection[str], max_lines: int,
               may_use: Callable[[str], bool] | None = None, max_line_bytes: int = MAX_LINE_BYTES) -> Checked:
    """POST /v1/batches' check of an input file, read from disk a line at a time, no line kept (blocking: call it in
    a thread): `count` the lines that passed, `errors` the others. What it holds at once is a line (at most
    `max_line_bytes`: a longer one is `request_too_large`, never held) and the custom_ids seen, not the file.
    `may_use`: the creator's model scope, checked before a model's existence (as a live request's is): a line
    naming a model outside it is `model_not_allowed`, and the models listed for one not found are those it may
    use, so a key learns no model of the grid it may not use."""
    out = Checked()
    with path.open("rb") as f:
        for _ in _scan(f, endpoint, known_models, max_lines, may_use, out, max_line_bytes, 0):
            out.count += 1
    return out


class LineReader:
    """The lines of a batch's input file that pass (a file checked when its batch was created), read from disk a
    chunk at a time as the runner asks for them: a running batch holds the lines in flight and a chunk, not its
    file. Blocking: call `chunk` and `close` in a thread."""

    def __init__(self, path: Path | IO[bytes], endpoint: str, max_lines: int,
                 max_line_bytes: int = MAX_LINE_BYTES) -> None:
        """`path`: the file, or the file opened (read from where it stands, closed by `close`)."""
        self._file = path.open("rb") if isinstance(path, Path) else path
        self._lines = _scan(self._file, endpoint, None, max_lines, None, Checked(), max_line_bytes,
                            max(max_line_bytes + 1, HEAD_BYTES))

    def chunk(self, most: int = CHUNK_BYTES) -> list[Line]:
        """The next lines, about `most` bytes of them (at least one); none: the file has no more."""
        out: list[Line] = []
        size = 0
        for line in self._lines:
            out.append(line)
            size += len(line.text)
            if size >= most:
                break
        return out

    def close(self) -> None:
        self._lines.close()
        self._file.close()


async def lines_not_done(path: Path | IO[bytes], endpoint: str, max_lines: int, max_line_bytes: int,
                         done: Collection[str]) -> AsyncGenerator[Line, None]:
    """The lines of a batch's input file whose custom_id is not in `done` (read when each is reached), in file order,
    a chunk at a time off the event loop (LineReader): its reader holds a chunk and the lines in flight, never the
    file. Used by a running batch (batch_runner) and by a message batch's results (its requests never run)."""
    reader = await asyncio.to_thread(LineReader, path, endpoint, max_lines, max_line_bytes)
    try:
        while chunk := await asyncio.to_thread(reader.chunk):
            for line in chunk:
                if line.custom_id not in done:
                    yield line
    finally:
        await asyncio.to_thread(reader.close)


def _lines(src: IO[bytes], bound: int, keep: int) -> Iterator[tuple[int, bytes, int, bytes]]:
    """(number, text, size, tail) of each line of `src`, its newline dropped, read at most `bound` + 1 bytes at a time.
    A line longer than `bound` (size > bound) is read on to its end in pieces of SKIP_BYTES, and its text is its first
    `keep` bytes only, its tail (`keep` not 0) its last TAIL_BYTES: what is held is never more than `bound` + 1 bytes
    and those, however long the line."""
    number = 0
    while text := src.readline(bound + 1):
        number += 1
        if text.endswith(b"\n"):
            yield number, text[:-1], len(text) - 1, b""
        elif len(text) <= bound:  # the last line, without a newline
            yield number, text, len(text), b""
        else:
            size, head = len(text), text[:keep]
            tail = text[-TAIL_BYTES:] if keep else b""
            del text
            while piece := src.readline(SKIP_BYTES):
                whole = piece.endswith(b"\n")
                piece = piece[:-1] if whole else piece
                size += len(piece)
                if keep:
                    head += piece[:keep - len(head)]
                    tail = (tail + piece)[-TAIL_BYTES:]
                if whole:
                    break
            yield number, head, size, tail


def _scan(src: IO[bytes], endpoint: str, known_models: Collection[str] | None, max_lines: int,
          may_use: Callable[[str], bool] | None, out: Checked, bound: int, keep: int) -> Generator[Line, None, None]:
    """Each line that passes, in file order, one at a time; the mistakes go to `out`. `known_models` None: any
    model (a running batch's lines, LineReader: a model gone since fails its line, not the batch). A line longer than
    `bound` is `request_too_large` (`keep` 0, a create's check), or (a running batch: its first `keep` bytes, more
    than a request may be, which its line refuses as request_too_large) passed on under its custom_id (`_custom_id`)."""
    seen: set[str] = set()
    count = 0
    for number, text, size, tail in _lines(src, bound, keep):
        if size <= bound and not text.strip():
            continue  # blank lines (a final newline, spacing) are not requests
        count += 1
        if count > max_lines:
            out.fail("too_many_tasks", f"The batch input file holds more than {max_lines} requests, the most one "
                     "batch may hold (gateway.batch.max_lines); split it into several batches.", number)
            break
        line = _too_long(out, number, text, size, bound, keep, tail) if size > bound else \
            _check_line(out, number, text, endpoint, known_models, may_use)
        if line is None:
            continue
        if line.custom_id in seen:
            out.fail("duplicate_custom_id", f"The custom_id {line.custom_id!r} of this request is a duplicate of "
                     "another request's. The custom_id must be unique for each request in a batch.", number,
                     "custom_id")
            continue
        seen.add(line.custom_id)
        yield line
    if count == 0:
        out.fail("empty_file", "The batch input file is empty: it holds no request.")


def _too_long(out: Checked, number: int, head: bytes, size: int, bound: int, keep: int, tail: bytes) -> Line | None:
    """A line longer than one request may be: a create's mistake, naming it; in a running batch (a file checked under
    a larger gateway.max_body_bytes, a message batch's request), the line as its head, which its run refuses as
    request_too_large, under the custom_id found before its body or after it (`_custom_id`); else (only a line with
    more than TAIL_BYTES of spacing after its body, or a bound too small for its custom_id) left out, logged."""
    if not keep:
        out.fail("request_too_large", f"This line is {size} bytes, more than {bound}, the most one request may hold "
                 "(gateway.max_body_bytes); it was not read.", number)
        return None
    cid = _custom_id(head, tail)
    if cid is None:
        log.error("batch input line %d is %d bytes, more than %d (gateway.max_body_bytes), and its custom_id was not "
                  "found in its first %d or last %d bytes: not run, in neither result file", number, size, bound,
                  len(head), len(tail))
        return None
    return Line(number, cid, head)


def _custom_id(head: bytes, tail: bytes) -> str | None:
    """The custom_id of a line too long to be read whole (one that passed a create's check: a JSON object of
    custom_id, method, url and body, whose members but the body are strings): the last one written (as a JSON reader
    takes a key written twice), found among the members after the body (read back from the end of `tail`) or, if
    none, before it (read on from the start of `head`); None if neither holds it."""
    found = _members_behind(tail)
    if found is None:
        at = _OPEN.match(head)
        pos = -1 if at is None else at.end()
        while pos >= 0 and (member := _MEMBER.match(head, pos)) is not None:
            if _text(member.group(1)) == "custom_id":
                found = _text(member.group(2))
            pos = member.end()
    return found if isinstance(found, str) and found and len(found) <= MAX_CUSTOM_ID else None


def _members_behind(tail: bytes) -> str | None:
    """The custom_id among the members after a line's body, read from the end of `tail` back: `"key": "value"`
    pairs, each after a comma, to the object's closing brace (None: the body is the last member, or it is not
    there)."""
    end = len(tail.rstrip(_SPACE)) - 1
    if end < 0 or tail[end:end + 1] != b"}":
        return None
    pos = end
    while True:
        value = _string_before(tail, pos)
        if value is None:
            return None
        colon = len(tail[:value[0]].rstrip(_SPACE)) - 1
        if tail[colon:colon + 1] != b":":
            return None
        key = _string_before(tail, colon)
        if key is None:
            return None
        if _text(tail[key[0]:key[1]]) == "custom_id":
            text = _text(tail[value[0]:value[1]])
            return text if isinstance(text, str) else None
        pos = len(tail[:key[0]].rstrip(_SPACE)) - 1
        if tail[pos:pos + 1] != b",":
            return None


def _string_before(text: bytes, pos: int) -> tuple[int, int] | None:
    """(start, end) of the JSON string that ends just before `pos` (spacing between), its quotes included: its opening
    quote is the nearest one before that is not escaped (not after an odd run of backslashes); None if there is none,
    or the run reaches the start of `text` (a string cut by the tail)."""
    close = len(text[:pos].rstrip(_SPACE)) - 1
    if close < 0 or text[close:close + 1] != b'"':
        return None
    at = close
    while (at := text.rfind(b'"', 0, at)) > 0:
        run = at - len(text[:at].rstrip(b"\\"))
        if run == at:
            return None
        if run % 2 == 0:
            return at, close + 1
    return None


def _text(token: bytes) -> Any:
    try:
        return orjson.loads(token)
    except orjson.JSONDecodeError:
        return None


def _check_line(out: Checked, number: int, text: bytes, endpoint: str,
                known: Collection[str] | None, may_use: Callable[[str], bool] | None = None) -> Line | None:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        out.fail("invalid_json_line", "This line is not parseable as valid JSON.", number)
        return None
    if not isinstance(obj, dict):
        out.fail("invalid_json_line", "This line is not a JSON object.", number)
        return None
    extra = sorted(k for k in obj if k not in _FIELDS)
    if extra:
        out.fail("invalid_request", f"Unknown field {_shown(extra[0])}: a request line has custom_id, method, url and "
                 "body only.", number, _shown(extra[0], quoted=False))
        return None
    missing = [k for k in _FIELDS if k not in obj]
    if missing:
        out.fail("missing_required_parameter", f"The request is missing the required field {missing[0]!r}.",
                 number, missing[0])
        return None
    cid = obj["custom_id"]
    if not isinstance(cid, str) or not cid or len(cid) > MAX_CUSTOM_ID:
        out.fail("invalid_request", f"custom_id must be a non-empty string of at most {MAX_CUSTOM_ID} characters.",
                 number, "custom_id")
        return None
    if obj["method"] != "POST":
        out.fail("invalid_request", f"method must be 'POST', not {_shown(obj['method'])}.", number, "method")
        return None
    if obj["url"] != endpoint:
        out.fail("url_mismatch", f"The url {_shown(obj['url'])} of this request does not match the batch's endpoint "
                 f"{endpoint!r}.", number, "url")
        return None
    body = obj["body"]
    if not isinstance(body, dict):
        out.fail("invalid_request", "body must be a JSON object: the request for the batch's endpoint.", number,
                 "body")
        return None
    deep = too_deep_raw(text, body)
    if deep is not None:  # it would fail when written for the engine (json_depth.py)
        where = field_name(("body", *deep))  # OpenAI's form: body.messages[0].content
        out.fail("invalid_request", depth_message(where), number, where)
        return None
    crowded = crowding(body, text)
    if crowded is not None:  # walked value by value on the event loop when the line runs (body_values.py)
        field, bound = crowded
        out.fail("invalid_request", values_message(f"body.{field}", bound), number, f"body.{field}")
        return None
    model = body.get("model")
    if not isinstance(model, str) or not model:
        out.fail("missing_required_parameter", "body.model is required: the model of this request.", number,
                 "body.model")
        return None
    if may_use is not None and not may_use(model):
        out.fail("model_not_allowed", f"body.model: this key may not use the model {_shown(model)}.", number,
                 "body.model")
        return None
    if known is not None and model != "auto" and model not in known:
        out.fail("model_not_found", f"The model {_shown(model)} does not exist on this grid. Available: "
                 f"{', '.join(usable_models(known, may_use))}", number, "body.model")
        return None
    stream = body.get("stream")
    if stream is not None and stream is not False:
        why = ("a batch request is answered whole" if stream is True else
               f"a boolean, not {_shown(stream)} (a batch request is answered whole)")
        out.fail("invalid_request", f"body.stream: {why}; leave stream out or send false.", number, "body.stream")
        return None
    out.models.add(model)
    return Line(number, cid, text)


def _shown(value: Any, *, quoted: bool = True) -> str:
    """A client's value as a mistake's message quotes it: its repr (`quoted`; else the string), cut to SHOWN
    characters with `...` (the rest is the client's own file)."""
    text = repr(value) if quoted else str(value)
    return text if len(text) <= SHOWN else text[:SHOWN] + "..."
