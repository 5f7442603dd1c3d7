"""Read model-routing CSVs (the format of ../shared/data/model-routing) into per-prompt quality pairs.

Two shapes are accepted:
- wide: one row per prompt, a `prompt` column and one quality column per model (`*_correct`, 0/1, or any
  numeric score), like mmlu_/gsm8k_mixtral_vs_gpt4.csv;
- long: one row per (question, turn, model) with `model`, a numeric score column and `turn_prompt`, like
  mt_bench_mixtral_vs_gpt4.csv (scores 1-10 are divided by 10).
A long file's prompt is its (question_id, turn, turn_prompt), the first two when present; a prompt not scored
for both models is left out (and said in `notes`).
The named columns are found in any case (`Prompt`); other columns are ignored; a UTF-8 byte-order mark is
skipped; a quality or `contaminated` cell may be a boolean (true/false, yes/no, any case: 1/0); a prompt may
be of any length. Refused with the file, line and column: a file over MAX_BYTES or MAX_CELLS, one that is not a
regular file or a pipe (spec.load.read_bounded: /dev/zero, a folder), a score that is not a finite number, a `*_correct`
value outside [0, 1] (the hint names every such column above 1), a long file's score outside [0, 10], an empty
model or every prompt empty, a second score for one model on one prompt (long), a row with more cells than the
header (an unquoted comma), a byte that is not UTF-8; and a file with fewer than two quality columns or models.
A row whose prompt is empty or blank is left out and counted in `notes` (a held-out file with one was refused
whole until the thirtieth session), and in a long file read as conversations its question's rows from that turn on;
more than MAX_EMPTY_SHARE (5%) of the prompts empty so refuses the file (a question's turn is one prompt). A wide file's row-number column (`id`, `*_id`, `index`, pandas' unnamed
index) is never a model; a long file's scores divided by 10 are said in `notes`.
`with_earlier_turns` reads a long file's later turns after its earlier ones, as a gateway reads a conversation.
Which model is the small one: `small` / `large` name the columns (wide) or model names (long); by default
the two are told apart by their mean quality (the weaker is "small").
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import re
import sys
import zlib
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aigrid.errors import InvalidRequest
from aigrid.spec.load import read_bounded
from aigrid.spec.near import nearest

SPLITS = ("train", "validation", "test")
MAX_BYTES = 256 * 1024 * 1024
"""The largest CSV read (RouteLLM's files are a few MB to tens of MB)."""
MAX_CELLS = 20_000_000
"""The most cells (rows x columns) read: each is held as Python objects, about 100 bytes, before it is an array."""


@dataclass(frozen=True)
class RoutingData:
    prompts: list[str]
    groups: list[str]
    """Per prompt, what the held-out split keeps together: the MMLU subject (wide files with a subject or
    category column), the question (long files: both turns of an MT-Bench question), or nothing (split by
    prompt)."""
    small: npt.NDArray[np.float64]
    large: npt.NDArray[np.float64]
    small_name: str
    large_name: str
    contaminated: npt.NDArray[np.bool_] | None = None
    """Per prompt, the file's `contaminated` flag (RouteLLM leaves those prompts out of its evaluations); None
    without that column."""
    notes: tuple[str, ...] = ()
    """What reading left out or assumed, one sentence each (printed by `aigrid models eval`)."""
    turns: tuple[tuple[str, int], ...] | None = None
    """Per prompt of a long file with question_id and turn: its (question_id, turn); None for other files."""
    conversations: Mapping[str, tuple[tuple[int, str], ...]] | None = None
    """With `turns`: each question's (turn, prompt) pairs in turn order, every prompt of the file (those left out
    of this dataset too). Kept whole, not joined per prompt: the joined earlier turns grow with the square of a
    question's turns (8,000 turns of one question in a 0.5 MB file: 22 s and 0.72 GB on every read), and only
    `with_earlier_turns` needs them."""

    def __len__(self) -> int:
        return len(self.prompts)

    def subset(self, mask: npt.NDArray[np.bool_]) -> RoutingData:
        keep = np.flatnonzero(mask)
        return RoutingData([self.prompts[i] for i in keep], [self.groups[i] for i in keep], self.small[keep],
                           self.large[keep], self.small_name, self.large_name,
                           None if self.contaminated is None else self.contaminated[keep], self.notes,
                           None if self.turns is None else tuple(self.turns[i] for i in keep), self.conversations)


def with_earlier_turns(data: RoutingData) -> RoutingData:
    """Each later turn's prompt as a gateway reads that request: the conversation's user turns so far, joined
    by a line break as ChatRequest.prompt_text joins its messages (the gateway also reads the assistant's
    answers between them, which the data does not hold). First turns, and files without turns, unchanged."""
    if data.turns is None or data.conversations is None:
        return data
    prompts = []
    for (q, t), p in zip(data.turns, data.prompts, strict=True):
        earlier = [e for n, e in data.conversations[q] if n < t]
        prompts.append("\n".join([*earlier, p]))
    return replace(data, prompts=prompts)


def concat(parts: list[RoutingData]) -> RoutingData:
    """One dataset of several (model names from the first)."""
    return RoutingData([p for d in parts for p in d.prompts], [g for d in parts for g in d.groups],
                       np.concatenate([d.small for d in parts]), np.concatenate([d.large for d in parts]),
                       parts[0].small_name, parts[0].large_name)


def split_of(group: str, prompt: str) -> str:
    """The fixed held-out split: by group (subject, or question in a long file) when the row has one, else by
    prompt; 1 in 5 to test, 1 in 5 to validation, by crc32."""
    bucket = zlib.crc32((group or prompt).encode()) % 5
    return "test" if bucket == 0 else "validation" if bucket == 1 else "train"


def split_mask(data: RoutingData, split: str) -> npt.NDArray[np.bool_]:
    if split not in SPLITS:
        raise InvalidRequest(f"split must be one of {', '.join(SPLITS)}", param="split")
    return np.array([split_of(g, p) == split for g, p in zip(data.groups, data.prompts, strict=True)])


def _pick(path: Path, names: list[str], means: dict[str, float], small: str | None, large: str | None,
          what: str) -> tuple[str, str]:
    for given in (small, large):
        if given is not None and given not in names:
            # the one meant named: the one column it begins (`small`, `smal` for small_correct), or a near name
            begun = [n for n in names if n.casefold().startswith(given.casefold())]
            meant = begun[0] if len(begun) == 1 else nearest(given, names)
            raise InvalidRequest(f"{path}: {what} {given!r} is not in the data"
                                 f"{f' (did you mean {meant}?)' if meant else ''} (found: {', '.join(names) or 'none'})",
                                 param="small" if given == small else "large")
    if small is not None and small == large:
        raise InvalidRequest(f"{path}: --small and --large name the same {what}, {small!r}", param="large")
    if len(names) < 2:
        raise InvalidRequest(f"{path}: found {len(names)} {what}{'' if len(names) == 1 else 's'} "
                             f"({', '.join(names) or 'none'}); need two, the small and the large model's",
                             param="data")
    if small and large:
        return small, large
    if len(names) != 2 and not (small or large):
        raise InvalidRequest(f"{path}: found {len(names)} {what}s ({', '.join(names)}); name the two with --small and "
                             "--large", param="small")
    ordered = sorted(names, key=lambda n: means[n])
    s = small or next(n for n in ordered if n != large)
    lg = large or next(n for n in reversed(ordered) if n != s)
    return s, lg


BINARY = ((b"PAR1", "Parquet"), (b"PK\x03\x04", "zip (or .xlsx)"), (b"\x1f\x8b", "gzip-compressed"),
          (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))
"""Files read as CSV by mistake, told by their first bytes."""

STRUCTURAL = ("prompt", "subject", "category", "contaminated", "question_id", "turn", "model", "turn_prompt")
"""Columns found by name in any case (a quality column keeps the file's spelling: --small/--large name it)."""


def read_routing_csv(path: Path, small: str | None = None, large: str | None = None) -> RoutingData:
    """Parse one CSV; InvalidRequest naming the file, and the line and column where there is one, when it has
    neither known shape or a value cannot be used (a score that is not a finite number, a `*_correct` value
    outside [0, 1], a long file's score outside [0, 10], every prompt empty or more than MAX_EMPTY_SHARE of the prompts
    empty; fewer are left out, in notes)."""
    try:
        raw = read_bounded(path, MAX_BYTES)
    except OSError as e:
        raise InvalidRequest(f"cannot read {path}: {e.strerror or e}", param="data") from e
    if len(raw) > MAX_BYTES:
        raise InvalidRequest(f"{path}: larger than {MAX_BYTES // (1024 * 1024)} MiB, the most read; keep fewer "
                             "rows", param="data")
    kind = next((k for magic, k in BINARY if raw.startswith(magic)), None)
    if kind is not None:
        raise InvalidRequest(f"{path}: a {kind} file, not CSV; write it as a CSV with a header row", param="data")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise InvalidRequest(f"{path}, line {line}: not UTF-8 (save the file as UTF-8)", param="data") from None
    if text.lstrip()[:1] in ("{", "["):
        raise InvalidRequest(f"{path}: looks like JSON, not CSV; write it as a CSV with a header row", param="data")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # a prompt may be longer than csv's default 128 KiB
    _refuse_an_unclosed_quote(path, text)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    starts = _Starts(reader.reader)
    reader.reader = starts  # type: ignore[assignment]  # read through it: where each record starts
    rows: list[dict[str, str]] = []
    lines: list[int] = []
    try:
        canon = {c: c.strip().lower() if c.strip().lower() in STRUCTURAL else c.strip()
                 for c in reader.fieldnames or []}
        given = [canon[c] for c in reader.fieldnames or [] if canon[c]]
        if twice := sorted(c for c, n in Counter(given).items() if n > 1):  # linear: a header may be 100,000 wide
            # DictReader keeps the last cell of a name: the other column was read as if it were not there
            raise InvalidRequest(f"{path}, line {starts.start or 1}: the header names column "
                                 f"{', '.join(repr(c) for c in twice)} twice; each column once", param="data")
        width = max(len(reader.fieldnames or []), 1)
        for r in reader:
            if (len(rows) + 1) * width > MAX_CELLS:
                raise InvalidRequest(f"{path}, line {starts.start}: more than {MAX_CELLS:,} cells ({width} columns "
                                     f"x {len(rows) + 1:,} rows), the most read; keep fewer rows or columns",
                                     param="data")
            extra: list[str] = r.get(None) or []  # type: ignore[assignment]  # DictReader's restkey
            if any((v or "").strip() for v in extra):
                # more cells than the header names: a comma in an unquoted prompt shifts every cell after it
                raise InvalidRequest(f"{path}, line {starts.start}: {width + len(extra)} fields, the header "
                                     f"has {width} (a cell with a comma must be quoted)", param="data")
            lines.append(starts.start)  # the file's line, a prompt over several lines and blank lines counted
            rows.append({canon.get(k, k): v for k, v in r.items() if k is not None})
    except csv.Error as e:
        raise InvalidRequest(f"{path}, line {reader.line_num}: not valid CSV: {e}", param="data") from None
    if not rows:
        raise InvalidRequest(f"{path} has no rows" + (" (only a header)" if reader.fieldnames else " (empty)"),
                             param="data")
    cols = list(rows[0].keys())
    if "prompt" in cols:
        return _wide(path, rows, lines, cols, small, large)
    if {"model", "turn_prompt"} <= set(cols):
        return _long(path, rows, lines, cols, small, large)
    hint = next((f" (only commas separate columns; this header has {name})" for sep, name in
                 ((";", "semicolons"), ("\t", "tabs"), ("|", "bars")) if len(cols) == 1 and sep in cols[0]), "")
    if not hint:  # `promt` for prompt: the column meant, named (the header's names are matched in any case already)
        near = [(c, nearest(c, ("prompt", "model", "turn_prompt"))) for c in cols]
        hint = "".join(f" (is {c!r} the {n!r} column? rename it {n})" for c, n in near[:50] if n)[:400]
    raise InvalidRequest(f"{path}: expected a 'prompt' column (one row per prompt) or 'model' and "
                         f"'turn_prompt' columns (one row per model); found {', '.join(cols)}{hint}", param="data")


def _refuse_an_unclosed_quote(path: Path, text: str) -> None:
    """InvalidRequest naming the line where a quoted cell opens that never closes: csv (not strict) reads the
    rest of the file into that one cell, which was reported as a short row or a bad value further on."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    try:
        for _ in reader:
            start = reader.line_num + 1
    except csv.Error as e:
        if "unexpected end of data" not in str(e):
            return  # another strictness (a quote inside a cell): csv's ordinary reading decides
        # lines as csv counts them (\n, \r, \r\n): str.splitlines also breaks at \f, \x1c, \u2028 (one a cell may hold)
        lines = itertools.islice(io.StringIO(text, newline=""), start - 1, None)
        opened = next((start + k for k, line in enumerate(lines) if '"' in line), start)
        raise InvalidRequest(f"{path}, line {opened}: a quote that is never closed (the rest of the file would "
                             "be one cell); close it, or double a quote inside a quoted cell (\"\")",
                             param="data") from None


class _Starts:
    """A csv reader that keeps the file line where its last row starts. DictReader skips blank lines, and a
    record may span lines: the line before the row plus one was wrong after blank lines (counted from the end
    of the previous record)."""

    def __init__(self, reader: Any) -> None:  # a csv reader (its type is private to _csv)
        self.reader = reader
        self.start = 0

    @property
    def line_num(self) -> int:
        return int(self.reader.line_num)

    @property
    def dialect(self) -> object:
        return self.reader.dialect

    def __iter__(self) -> _Starts:
        return self

    def __next__(self) -> list[str]:
        before = self.line_num
        row: list[str] = next(self.reader)
        self.start = before + 1
        return row


ROW_ID = re.compile(r"|id|index|.*[_ ]id|unnamed: ?\d+")
"""Numeric columns that number the rows, not a model's score (a wide file without `*_correct` columns takes every
other numeric column as a score): `id`, `index`, `*_id`, and the index column pandas writes (`Unnamed: 0`, or
no name)."""


BOOLEANS = {"true": 1.0, "false": 0.0, "yes": 1.0, "no": 0.0}
"""Quality written as a boolean (any case), read as 1 / 0."""


def _float(value: str | None) -> float:
    """The number in a cell (a boolean as 1 / 0); ValueError when there is none."""
    v = (value or "").strip()
    return BOOLEANS[v.lower()] if v.lower() in BOOLEANS else float(v)


def _num(value: str | None, where: str, column: str, lo: float = -math.inf, hi: float = math.inf,
         judged: Callable[[], list[str]] | None = None) -> float:
    """The cell's number, else InvalidRequest naming `where` and `column`. `judged`: for a `*_correct` cell above 1,
    every `*_correct` column of the file with a number above 1, all named in the hint to rename them."""
    try:
        x = _float(value)
    except ValueError:
        x = math.nan
    if not math.isfinite(x) or not lo <= x <= hi:
        what = "a finite number" if math.isinf(lo) else f"a number in [{lo:g}, {hi:g}]"
        shown = "no value (the row is short)" if value is None else repr(value)
        hint = f" ({CORRECT_HINT.format(_renames(judged() if judged else [column]))})" if math.isfinite(x) \
            and x > hi and column.lower().endswith("_correct") else ""
        raise InvalidRequest(f"{where}, column {column!r}: {shown} is not {what}{hint}", param=column) from None
    return x


CORRECT_HINT = ("a `*_correct` column is 0/1 or a share in [0, 1]; a score on another scale, such as a 1-10 judge's, "
                "goes in a column not named `*_correct`: rename {}")
"""Said when a `*_correct` cell is a number above 1: a 1-10 judge score written under a correctness name. It names
every such column of the file (until the thirtieth session one, e.g. small_score: renamed, the file was refused
again for the next)."""
RENAMES_SHOWN = 10
"""The hint names at most this many columns to rename, then how many there are."""


def _renames(columns: list[str]) -> str:
    said = [f"{c} to {c[:-len('_correct')]}_score" for c in columns[:RENAMES_SHOWN]]
    more = f" and {len(columns) - RENAMES_SHOWN} more `*_correct` columns above 1" if len(columns) > RENAMES_SHOWN else ""
    return (", ".join(said[:-1]) + " and " + said[-1] if len(said) > 1 and not more else ", ".join(said)) + more


def _above_one(value: str | None) -> bool:
    try:
        return 1 < _float(value) < math.inf
    except ValueError:
        return False


MAX_EMPTY_SHARE = 0.05
"""The most prompts of a file (a share; read as conversations a question's turn, its models' rows and the
follow-on rows it leaves out counted once) that may be empty and left out with a note; more refuses the file, naming the
share and the first lines: a file mostly empty was written wrong (a column shifted, the prompts not exported), and
a figure on what is left of it would stand for a set nobody chose. `aigrid models eval` and the simulator's
`right_size.prompts` read files by this one rule."""


def _turn(r: dict[str, str]) -> tuple[str, int] | None:
    """A long file's row's (question_id, turn), when it has both and the turn is a whole number (as
    _conversations reads them)."""
    q, t = (r.get("question_id") or "").strip(), (r.get("turn") or "").strip()
    return (q, int(t)) if q and t.isascii() and t.isdigit() and len(t) <= 9 else None


def _lines_said(lines: list[int]) -> str:
    return f"line{'s' if len(lines) > 1 else ''} {', '.join(map(str, lines[:5]))}{', ...' if len(lines) > 5 else ''}"


def _without_empty_prompts(path: Path, rows: list[dict[str, str]], lines: list[int], column: str) -> tuple[
        list[dict[str, str]], list[int], tuple[str, ...]]:
    """The rows whose `column` (the prompt) is not empty or blank, and a note counting those left out, naming their
    first lines: a held-out file with one empty prompt was refused whole (eval_firewall.py leaves such rows out
    too). In a long file whose rows all have a question_id and turn (read as conversations, with_earlier_turns),
    an empty turn leaves out its question's rows from that turn on, every model's: a later turn without its
    earlier one is not the request a gateway reads. More than MAX_EMPTY_SHARE of the prompts empty refuses the
    file (read as conversations a prompt is a question's turn, its models' rows and follow-on rows one; else a row).
    A row too short to have the column is still refused, as a short row."""
    blank = [r.get(column) is not None and not r[column].strip() for r in rows]
    empty = [n for b, n in zip(blank, lines, strict=True) if b]
    if not empty:
        return rows, lines, ()
    if len(empty) == len(rows):
        raise InvalidRequest(f"{path}: every row's {column!r} is empty ({len(rows)} row{'s' if len(rows) > 1 else ''})",
                             param=column)
    turns = [_turn(r) for r in rows] if column == "turn_prompt" else []
    broken: dict[str, int] = {}  # question: its first turn with an empty prompt
    if turns and all(turns):
        for b, qt in zip(blank, turns, strict=True):
            if b and qt is not None:
                broken[qt[0]] = min(broken.get(qt[0], qt[1]), qt[1])
    later = [n for b, qt, n in zip(blank, turns, lines, strict=True) if not b and qt is not None
             and qt[0] in broken and qt[1] >= broken[qt[0]]] if broken else []
    left = len(empty) + len(later)
    said = f"an empty {column!r} ({_lines_said(empty)})" + (
        f" and {len(later)} more of those questions' rows from that turn on, which would be read without it "
        f"({_lines_said(later)})" if later else "")
    # the share is of prompts: read as conversations a prompt is a (question, turn), whatever its models' rows and
    # the follow-on rows an empty turn leaves out (said in the note only); otherwise a row
    if broken:
        keys = {qt for qt in turns if qt is not None}
        bad, total, unit = len({qt for b, qt in zip(blank, turns, strict=True) if b}), len(keys), "prompts"
    else:
        bad, total, unit = len(empty), len(rows), "rows"
    if bad > MAX_EMPTY_SHARE * total:
        shared = f"{bad} of {total} {unit} ({bad / total:.1%})"
        if unit == "rows":
            raise InvalidRequest(f"{path}: {shared} would be left out: {said}; more than {MAX_EMPTY_SHARE:.0%} refuses "
                                 "the file (fill those prompts in or remove their rows)", param=column)
        raise InvalidRequest(f"{path}: {shared} are empty; {left} of {len(rows)} rows would be left out: {said}; more "
                             f"than {MAX_EMPTY_SHARE:.0%} of the prompts empty refuses the file (fill those prompts "
                             "in or remove their rows)", param=column)
    out = set(empty) | set(later)
    kept = [(r, n) for r, n in zip(rows, lines, strict=True) if n not in out]
    note = f"{left} of {len(rows)} rows left out: {said}"
    return [r for r, _ in kept], [n for _, n in kept], (note,)


def _text(value: str | None, where: str, column: str) -> str:
    if value is None or not value.strip():
        raise InvalidRequest(f"{where}, column {column!r}: empty", param=column)
    return value


def _wide(path: Path, rows: list[dict[str, str]], lines: list[int], cols: list[str], small: str | None,
          large: str | None) -> RoutingData:
    rows, lines, notes = _without_empty_prompts(path, rows, lines, "prompt")
    quality = [c for c in cols if c.lower().endswith("_correct")] or [
        c for c in cols if c not in STRUCTURAL and not ROW_ID.fullmatch(c.lower()) and _numbers(rows[:50], c)]
    if not quality:
        raise InvalidRequest(f"{path}: no quality column (one per model: `*_correct`, 0/1, or a numeric score); "
                             f"found {', '.join(cols)}", param="data")
    def judged() -> list[str]:  # read only for the hint of a refusal
        return [c for c in quality if c.lower().endswith("_correct") and any(_above_one(r[c]) for r in rows)]

    values = {c: np.array([_num(r[c], f"{path}, line {n}", c, *((0.0, 1.0) if c.lower().endswith("_correct") else
                                                                 (-math.inf, math.inf)), judged)
                           for r, n in zip(rows, lines, strict=True)])
              for c in quality if not (small and large) or c in (small, large)}  # both named: the others unread
    s, lg = _pick(path, quality, {c: float(v.mean()) for c, v in values.items()}, small, large, "quality column")
    group_col = next((c for c in ("subject", "category") if c in cols), None)
    groups = [r[group_col] or "" if group_col else "" for r in rows]
    prompts = [_text(r["prompt"], f"{path}, line {n}", "prompt") for r, n in zip(rows, lines, strict=True)]
    flags = np.array([_flag(r["contaminated"], f"{path}, line {n}") for r, n in zip(rows, lines, strict=True)]) \
        if "contaminated" in cols else None
    return RoutingData(prompts, groups, values[s], values[lg], s, lg, flags, notes)


def _numbers(rows: list[dict[str, str]], column: str) -> bool:
    """A column of scores: at least half of `rows`' cells are numbers. A score column with one cell mistyped among
    the first rows (`x`, `N/A`) is still one, refused naming that cell's line (_num); before, it was read as a text
    column and left out, the file refused as having one quality column, or a third model's column dropped unsaid."""
    numbers = sum(_isnum(r[column]) for r in rows)
    return numbers > 0 and 2 * numbers >= len(rows)


def _isnum(v: str | None) -> bool:
    try:
        _float(v)
        return True
    except ValueError:
        return False


def _long(path: Path, rows: list[dict[str, str]], lines: list[int], cols: list[str], small: str | None,
          large: str | None) -> RoutingData:
    score_col = next((c for c in cols if "score" in c.lower()), None)
    if score_col is None:
        raise InvalidRequest(f"{path}: long-format data needs a score column (e.g. gpt4_judge_score)", param="data")
    rows, lines, empty = _without_empty_prompts(path, rows, lines, "turn_prompt")
    # one prompt: the question and turn when the file has them, and the prompt's text (without question_id and
    # turn, every row of turn 1 was one prompt: the last row's scores stood for all)
    Key = tuple[str, str, str]
    per: dict[Key, dict[str, float]] = {}
    first: dict[tuple[Key, str], int] = {}
    flags: dict[Key, bool] = {}
    for r, n in zip(rows, lines, strict=True):
        where = f"{path}, line {n}"
        model = _text(r["model"], where, "model").strip()
        prompt = _text(r["turn_prompt"], where, "turn_prompt")
        key = ((r.get("question_id") or "").strip(), (r.get("turn") or "").strip(), prompt)
        if (key, model) in first:
            raise InvalidRequest(f"{where}: a second score for model {model!r} on this prompt (the first is on line "
                                 f"{first[key, model]})", param=score_col)
        first[key, model] = n
        per.setdefault(key, {})[model] = _num(r[score_col], where, score_col, 0, 10)
        if "contaminated" in r:
            flags[key] = flags.get(key, False) or _flag(r["contaminated"], where)
    models = sorted({m for d in per.values() for m in d})
    scored = {m: [k for k in per if m in per[k]] for m in models}
    s, lg = _pick(path, models, {m: float(np.mean([per[k][m] for k in scored[m]])) for m in models}, small, large, "model")
    keys = [k for k in per if s in per[k] and lg in per[k]]
    if not keys:
        raise InvalidRequest(f"{path}: no prompt has a score for both {s!r} and {lg!r}", param="data")
    notes: tuple[str, ...] = empty + ((f"{len(per) - len(keys)} of {len(per)} prompts left out: not scored for both "
                                       "models",) if len(keys) < len(per) else ())
    every = [v for d in per.values() for v in d.values()]
    scale = 10.0 if max(every) > 1.0 else 1.0
    if scale == 10.0:  # a 1-5 judge would print 0.1-0.5: say what the quality figures are
        notes += (f"column {score_col!r} read as a 0-10 judge score and divided by 10 (this file's scores run "
                  f"from {min(every):g} to {max(every):g})",)
    # grouped by question: the two turns of one question are never on both sides of a split
    return RoutingData([k[2] for k in keys], [k[0] for k in keys],
                       np.array([per[k][s] / scale for k in keys]), np.array([per[k][lg] / scale for k in keys]),
                       s, lg, np.array([flags[k] for k in keys]) if flags else None, notes,
                       *_conversations(keys, list(per)))


def _conversations(keys: list[tuple[str, str, str]], every: list[tuple[str, str, str]]) -> tuple[
        tuple[tuple[str, int], ...] | None, Mapping[str, tuple[tuple[int, str], ...]] | None]:
    """RoutingData.turns and .conversations for a long file's prompts `keys` (question_id, turn, prompt), from all
    its prompts `every`, in time linear in the file; (None, None) unless every prompt has a question_id and a
    whole-number turn (ASCII digits, at most 9: str.isdigit takes '²', which int() refuses, as it refuses a
    turn of over 4,300 digits; both were a ValueError traceback out of aigrid models eval)."""
    if not all(q and t.isascii() and t.isdigit() and len(t) <= 9 for q, t, _ in every):
        return None, None
    turns: dict[str, dict[int, str]] = {}
    for q, t, p in every:
        turns.setdefault(q, {})[int(t)] = p
    return (tuple((q, int(t)) for q, t, _ in keys),
            {q: tuple(sorted(by_turn.items())) for q, by_turn in turns.items()})


def _flag(value: str | None, where: str) -> bool:
    """A `contaminated` cell: 0/1, true/false, yes/no, or empty (not flagged)."""
    if value is None or not value.strip():
        return False
    return bool(_num(value, where, "contaminated", 0, 1))
