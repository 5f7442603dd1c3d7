"""Request trace files: per request an arrival time, its prompt tokens and its output tokens.

One reader for every command that replays a trace (`aigrid bench --mode trace`, the simulator's and the
planner's `trace:` fields), so that each takes the same files and refuses the same broken ones. Accepted:

- CSV with a header (comma-separated; a UTF-8 byte-order mark is skipped). The three columns are found by
  name, case, spaces, `_` and `-` ignored; other columns are ignored:
    time:   TIMESTAMP, time, arrival_time, arrived_at (Azure LLM inference traces 2023 and 2024, BurstGPT)
    prompt: ContextTokens, Request tokens, prompt_tokens, input_tokens, input_length (and `*_len`)
    output: GeneratedTokens, Response tokens, output_tokens, completion_tokens, output_length
  So the Azure traces (`TIMESTAMP,ContextTokens,GeneratedTokens`) and BurstGPT
  (`Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type`) are read as they are published.
- JSON Lines, one object per request with the same keys, e.g. Mooncake's
  `{"timestamp": 27482, "input_length": 6955, "output_length": 52, "hash_ids": [...]}`.

Times are ISO 8601 strings (`2023-11-16 18:15:46.6805900`, `2024-05-10T00:00:00.009930+00:00`: digits past
the microsecond are dropped; a time without an offset is read as UTC, not in the host's time zone, whose
daylight-saving changes would change the gaps from one machine to another) or numbers of seconds. A JSON Lines file whose sizes are `input_length` /
`output_length` (Mooncake's layout) has its numeric times in milliseconds, as Mooncake publishes them; a
time column named `..._ms` (`timestamp_ms`) is in milliseconds too. Any other numeric time column is read by
its magnitude, as one unit: all below EPOCH_MS_FROM (1e11) seconds, all from it to EPOCH_MS_TO (1e14) epoch
milliseconds (an Azure-shaped TIMESTAMP of 1700158546680); both kinds in one column, or a time past 1e14
(microseconds), is refused naming the column and the lines. Rows need not be sorted: requests are
replayed in time order (ties keep file order); equal times are requests that arrived together. Token
counts are whole numbers from 0 to 2**31 - 1 (`12.0` is 12; the simulator holds them as 32-bit integers); a
row with 0 output tokens (BurstGPT's failed requests) is kept, and the replays send it with 1.

A file that cannot be used raises TraceFileError naming the file, the line and the column: no rows, more than
MAX_TRACE_ROWS rows or MAX_TRACE_BYTES bytes, not a regular file (a pipe is read until it ends, within
spec.load.PIPE_DEADLINE_S; a device such as /dev/zero is refused), a missing column, a time that is neither ISO 8601 nor a number (or a number too big for a float), a numeric time column of two
units or past epoch milliseconds, a token count
that is negative, fractional, NaN, empty or over 2**31 - 1, a row with more fields than the header (an unquoted
comma; an empty last field is read), a byte that is not UTF-8.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

from aigrid.errors import AigridError
from aigrid.spec.load import read_bounded
from aigrid.spec.models import MAX_TOKENS

ROLES = {
    "time": ("timestamp", "time", "arrivaltime", "arrivedat", "arrivaltimestamp", "timestampms", "timems"),
    "prompt": ("contexttokens", "requesttokens", "prompttokens", "inputtokens", "inputlength", "inputlen",
               "promptlength", "promptlen", "contextlength"),
    "output": ("generatedtokens", "responsetokens", "outputtokens", "completiontokens", "outputlength",
               "outputlen", "generatedlength"),
}
"""Per role, the column names it is found under (normalised: lower case, letters and digits only)."""
_FRACTION = re.compile(r"(\.\d{6})\d+")
MAX_TRACE_BYTES = 512 * 1024 * 1024
"""The largest trace file read (BurstGPT's 5.3 million requests are about 400 MB); a bigger one is cut first."""
MAX_TRACE_ROWS = 6_000_000
"""The most requests a trace may hold: each row read is about 300 bytes of Python objects before it is an array
(a file of 512 MiB of `1,1,1` rows would be 90 million rows, 27 GB)."""


EPOCH_MS_FROM = 1e11
"""A numeric time from here on (not in a column named `..._ms`) is epoch milliseconds (1e11 ms is March 1973; as
seconds, the year 5138): a column is in one unit, all its times below this (seconds) or all from it."""
EPOCH_MS_TO = 1e14
"""Epoch milliseconds end here (the year 5138); a time past it (epoch microseconds, 1.7e15 today) is refused."""


class TraceFileError(AigridError, ValueError):
    """A trace file that cannot be replayed; str() names the file, and the line and column where there is one."""


@dataclass(frozen=True)
class TraceFile:
    """A trace's requests in time order (a stable sort of the file's rows)."""

    path: Path
    t: np.ndarray
    """Arrival time in seconds (absolute: only differences mean anything), ascending."""
    prompt: np.ndarray
    output: np.ndarray
    columns: tuple[str, str, str]
    """The time, prompt and output columns as the file names them."""
    was_sorted: bool
    """Whether the file's rows were already in time order."""

    def __len__(self) -> int:
        return len(self.t)


TRACE_DIR = Path(__file__).resolve().parents[2] / "data" / "traces"
"""The repository's data/traces: the Azure 2023 traces (CC-BY 4.0) the simulator, the planner and the bench use."""


def trace_dir() -> Path:
    """Where the shipped traces are: the folder AIGRID_TRACES names, else the repository's data/traces, else
    data/traces under the current directory."""
    env = os.environ.get("AIGRID_TRACES")
    candidates = [Path(env)] if env else []
    candidates += [TRACE_DIR, Path.cwd() / "data" / "traces"]
    for candidate in candidates:
        if (candidate / "azure_llm_2023_conv.csv").exists():
            return candidate
    raise FileNotFoundError("Azure 2023 traces not found (data/traces/azure_llm_2023_conv.csv of the repository, "
                            "or the folder AIGRID_TRACES names)")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _columns(path: Path, names: list[str], where: str) -> tuple[str, str, str]:
    by_norm: dict[str, list[str]] = {}
    for n in names:
        by_norm.setdefault(_norm(n), []).append(n)
    found = []
    for role, aliases in ROLES.items():
        hits = [n for a in aliases for n in by_norm.get(a, [])]
        if not hits:
            raise TraceFileError(
                f"{path}: {where} has no {role} column (one of {', '.join(aliases[:5])}, ...; found: "
                f"{', '.join(names) or 'none'}); docs/simulator.md, 'Trace files', lists the accepted names")
        if len(hits) > 1:
            raise TraceFileError(f"{path}: {where} has several {role} columns ({', '.join(hits)}); keep one")
        found.append(hits[0])
    return found[0], found[1], found[2]


def _time(raw: object, ms: bool, at: str) -> tuple[float, bool]:
    """(seconds, whether it was a number) of one time value."""
    if isinstance(raw, bool) or raw is None:
        raise TraceFileError(f"{at}: {raw!r} is not a time (ISO 8601, or a number of seconds)")
    if isinstance(raw, int | float):
        try:
            value = float(raw)
        except OverflowError:  # a JSON integer too big for a float (10**400)
            raise TraceFileError(f"{at}: {_shown(raw)} is not a time (too big a number of seconds)") from None
        numeric = True
    else:
        text = str(raw).strip()
        try:
            value, numeric = float(text), True
        except ValueError:
            try:
                when = datetime.fromisoformat(_FRACTION.sub(r"\1", text.upper()))  # 't' and 'z' (RFC 3339)
                value = (when if when.tzinfo is not None else when.replace(tzinfo=UTC)).timestamp()
            except (ValueError, OverflowError, OSError):
                raise TraceFileError(f"{at}: {text!r} is not a time (ISO 8601, e.g. 2023-11-16 18:15:46.68, "
                                     "or a number of seconds)") from None
            numeric = False
    if not math.isfinite(value):
        raise TraceFileError(f"{at}: {raw!r} is not a time (ISO 8601, or a number of seconds)")
    return (value / 1000.0 if ms and numeric else value), numeric


def _epoch_seconds(path: Path, column: str, t: np.ndarray, rows: list[tuple[int, object, object, object]]) -> np.ndarray:
    """A numeric time column not named as milliseconds, in seconds: its unit is the column's, read from its
    magnitude. Every value below EPOCH_MS_FROM is seconds (absolute or relative; 1e11 s is the year 5138); every
    value from EPOCH_MS_FROM to EPOCH_MS_TO is epoch milliseconds (March 1973 to the year 5138; an Azure or
    BurstGPT export with epoch-millisecond TIMESTAMPs was read as seconds, its gaps 1000x too long); a column
    with values on both sides, or past EPOCH_MS_TO (epoch micro- or nanoseconds), is refused naming its lines."""
    big = t >= EPOCH_MS_FROM
    if not big.any():
        return t
    if big.all() and float(t.max()) < EPOCH_MS_TO:
        return t / 1000.0
    at = f"{path}, column {column}"
    huge = np.flatnonzero(t >= EPOCH_MS_TO)
    if huge.size:
        line, raw = rows[int(huge[0])][:2]
        raise TraceFileError(f"{at}, line {line}: {_shown(raw)} is past the epoch milliseconds of the year 5138 "
                             "(microseconds or nanoseconds?); give times in seconds or milliseconds (a column named "
                             "..._ms), or ISO 8601")
    small, large = int(np.flatnonzero(~big)[0]), int(np.flatnonzero(big)[0])
    raise TraceFileError(f"{at}: one column, two units: line {rows[small][0]} ({_shown(rows[small][1])}) reads as "
                         f"seconds, line {rows[large][0]} ({_shown(rows[large][1])}) as epoch milliseconds (numbers "
                         f"from {EPOCH_MS_FROM:.0e}); give every time in one unit (a column named ..._ms for "
                         "milliseconds), or ISO 8601")


def _tokens(raw: object, at: str) -> int:
    if isinstance(raw, bool):
        raise TraceFileError(f"{at}: {raw!r} is not a token count")
    try:
        value = float(str(raw).strip()) if not isinstance(raw, int | float) else float(raw)
    except ValueError:
        raise TraceFileError(f"{at}: {_shown(raw)} is not a token count (a whole number >= 0)") from None
    except OverflowError:  # a JSON integer too big for a float (10**400)
        value = math.inf
    if math.isnan(value) or value < 0 or (math.isfinite(value) and value != int(value)):
        raise TraceFileError(f"{at}: {_shown(raw)} is not a token count (a whole number >= 0)")
    if value > MAX_TOKENS:
        raise TraceFileError(f"{at}: {_shown(raw)} tokens is more than a request may count (at most {MAX_TOKENS})")
    return int(value)


def _shown(raw: object) -> str:
    """A value as the error shows it: its repr, cut to 40 characters (a 400-digit number stays one line)."""
    text = repr(raw)
    return text if len(text) <= 40 else f"{text[:20]}...{text[-8:]} ({len(text)} characters)"


def _text(path: Path) -> str:
    try:
        data = read_bounded(path, MAX_TRACE_BYTES)
    except OSError as e:
        raise TraceFileError(f"{path}: cannot read: {e.strerror or e}") from None
    if len(data) > MAX_TRACE_BYTES:
        raise TraceFileError(f"{path}: the file is larger than {MAX_TRACE_BYTES // (1024 * 1024)} MiB, the most a "
                             "trace may be (keep its first rows: head -n 5000000)")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise TraceFileError(f"{path}, line {line}: byte {data[e.start]:#04x} is not UTF-8 (save the file as "
                             "UTF-8)") from None


def read_trace(path: str | Path) -> TraceFile:
    """Every request of a CSV or JSON Lines trace, in time order; TraceFileError on a file that cannot be used."""
    path = Path(path)
    text = _text(path)
    if not text.strip():
        raise TraceFileError(f"{path}: the file is empty (expected a CSV with a header, or JSON Lines)")
    rows: list[tuple[int, object, object, object]] = []
    if text.lstrip().startswith("{"):
        cols, ms = _jsonl(path, text, rows)
    else:
        cols, ms = _csv(path, text, rows)
    if not rows:
        raise TraceFileError(f"{path}: no requests (only a header)")
    t = np.empty(len(rows))
    prompt = np.empty(len(rows), dtype=np.int64)
    output = np.empty(len(rows), dtype=np.int64)
    kinds = set()
    for i, (line, raw_t, raw_p, raw_o) in enumerate(rows):
        t[i], numeric = _time(raw_t, ms, f"{path}, line {line}, column {cols[0]}")
        kinds.add(numeric)
        if len(kinds) > 1:
            raise TraceFileError(f"{path}, line {line}, column {cols[0]}: {raw_t!r} mixes numbers and ISO 8601 "
                                 "times in one column")
        prompt[i] = _tokens(raw_p, f"{path}, line {line}, column {cols[1]}")
        output[i] = _tokens(raw_o, f"{path}, line {line}, column {cols[2]}")
    if not ms and kinds == {True}:
        t = _epoch_seconds(path, cols[0], t, rows)
    order = np.argsort(t, kind="stable")
    was_sorted = bool(np.all(np.diff(t) >= 0))
    return TraceFile(path, t[order], prompt[order], output[order], cols, was_sorted)


def _csv(path: Path, text: str, rows: list[tuple[int, object, object, object]]) -> tuple[tuple[str, str, str], bool]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
        cols = _columns(path, [h.strip() for h in header], "the header (line 1)")
        index = [[h.strip() for h in header].index(c) for c in cols]
        for record in reader:
            if not record or all(not cell.strip() for cell in record):
                continue  # a blank line
            line = reader.line_num
            _room(path, line, rows)
            if len(record) <= max(index):
                missing = cols[next(k for k, j in enumerate(index) if j >= len(record))]
                raise TraceFileError(f"{path}, line {line}: {len(record)} fields, no value for column {missing}")
            if any(cell.strip() for cell in record[len(header):]):  # an empty last cell (a trailing comma) is read
                raise TraceFileError(f"{path}, line {line}: {len(record)} fields, the header has {len(header)} (an "
                                     "unquoted comma, '1,024', shifts the cells after it; quote such a cell)")
            rows.append((line, record[index[0]], record[index[1]], record[index[2]]))
    except csv.Error as e:
        raise TraceFileError(f"{path}, line {reader.line_num}: not valid CSV: {e}") from None
    return cols, _norm(cols[0]).endswith("ms")


def _room(path: Path, line: int, rows: list[tuple[int, object, object, object]]) -> None:
    if len(rows) >= MAX_TRACE_ROWS:
        raise TraceFileError(f"{path}, line {line}: more than {MAX_TRACE_ROWS:,} requests, the most a trace may hold "
                             f"(keep its first rows: head -n {MAX_TRACE_ROWS})")


def _jsonl(path: Path, text: str, rows: list[tuple[int, object, object, object]]) -> tuple[tuple[str, str, str], bool]:
    cols: tuple[str, str, str] | None = None
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as e:
            raise TraceFileError(f"{path}, line {n}: not valid JSON: {e}") from None
        if not isinstance(obj, dict):
            raise TraceFileError(f"{path}, line {n}: expected one JSON object per line")
        if cols is None:
            cols = _columns(path, list(obj), f"line {n}")
        missing = [c for c in cols if c not in obj]
        if missing:
            raise TraceFileError(f"{path}, line {n}: no {missing[0]!r}")
        _room(path, n, rows)
        rows.append((n, obj[cols[0]], obj[cols[1]], obj[cols[2]]))
    assert cols is not None  # the text is not blank
    mooncake = _norm(cols[1]) == "inputlength" and _norm(cols[2]) == "outputlength"
    return cols, mooncake or _norm(cols[0]).endswith("ms")


@lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int, size: int) -> TraceFile:
    return read_trace(path)


def read_trace_cached(path: str | Path) -> TraceFile:
    """read_trace, once per file version per process (the simulator and planner read a trace many times)."""
    p = Path(path)
    try:
        st = p.stat()
    except OSError as e:
        raise TraceFileError(f"{p}: cannot read: {e.strerror or e}") from None
    return _cached(str(p), st.st_mtime_ns, st.st_size)
