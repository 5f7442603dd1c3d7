"""Personal data: find and redact emails, phone numbers, card numbers (Luhn), IBANs (mod-97) and national
ids (US SSN, UK National Insurance number).

Numbers are only reported when their checksum or structure holds, so order numbers and timestamps that
merely look like cards are left alone. Each detector is a regex plus an optional validator; detectors run
in priority order and a later match that overlaps an earlier one is dropped. Number detectors only start
at the beginning of a run of digit groups, so a tail of a longer number is never taken for an item; but a run too
long for one number (20 digits or more) is cut at its group boundaries into the numbers it holds one after the other
(_split), and an item that its redaction lays bare (the text after "[REDACTED:PHONE] " read again) is found with the
item beside it (_settled), so redact leaves nothing find_pii finds and redacting again changes nothing.
"""

from __future__ import annotations

import re
import string
import unicodedata
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Concatenate, ParamSpec, TypeVar

import regex

from aigrid.security.firewall.features import INVISIBLE, LATIN_OF, TAG_TO_ASCII

MAX_ITEM_CHARS = 96
"""The longest card, IBAN, phone or id the detectors match (emails may be longer in theory; real ones are
not); the streaming redactor holds back at least this much."""


@dataclass(frozen=True, slots=True)
class PiiMatch:
    kind: str
    start: int
    end: int
    pieces: tuple[int, ...] = ()
    """For an item read across pieces (read_together): the pieces it covers, in order; empty for one found whole
    in its text."""
    rest: bool = False
    """Part of an item read across pieces, in a piece after its first: redact removes it (the placeholder stands
    in the item's first piece, so a model reads one)."""


def luhn_ok(digits: str) -> bool:
    if digits.isascii():  # every other digit from the last doubled (its digits summed), by a table: 3 times faster
        backwards = digits[::-1]
        return (sum(map(int, backwards[::2])) + sum(map(int, backwards[1::2].translate(_DOUBLED)))) % 10 == 0
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


_DOUBLED = str.maketrans("0123456789", "0246813579")


def iban_ok(iban: str) -> bool:
    s = re.sub(r"\s", "", iban).upper()
    return 15 <= len(s) <= 34 and s[:2].isalpha() and s[2:4].isdigit() and s.isalnum() \
        and _remainder_one((s[4:] + s[:4]).translate(_BASE36))


def _remainder_one(digits: str) -> bool:
    """An IBAN's checksum, read of its characters from the fifth on, then its first four, each capital written as its
    value in base 36 (A 10 ... Z 35, _BASE36): the number's remainder by 97 is 1."""
    return int(digits) % 97 == 1


_BASE36 = {ord(c): str(int(c, 36)) for c in string.ascii_uppercase}
"""Each capital as an IBAN's checksum reads it, its value in base 36 written in decimal: one translate, not a Python
call a character (int(c, 36) each until the thirty-fifth session, RV1)."""


def _card(text: str) -> bool:
    digits = _NOT_DIGIT.sub("", text)
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_ok(digits)


_NOT_DIGIT = re.compile(r"\D")


def _ssn(text: str) -> bool:
    area, group, serial = text.split("-")
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _phone(text: str) -> bool:
    digits = _NOT_DIGIT.sub("", text)
    return 8 <= len(digits) <= 15


_Validator = Callable[[str], bool]
_DETECTORS: tuple[tuple[str, re.Pattern[str], _Validator | None], ...] = (
    ("email", re.compile(r"(?<![\w.+-])[\w.+-]{1,64}@(?:[A-Za-z0-9-]{1,63}\.){1,4}[A-Za-z]{2,24}(?![\w-])"), None),
    ("iban", re.compile(r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])"),
     iban_ok),
    ("card", re.compile(r"(?<![\d-])(?<!\d )\d(?:[ -]?\d){12,18}(?![\d-])"), _card),
    ("ssn", re.compile(r"(?<![\d-])(?<!\d )\d{3}-\d{2}-\d{4}(?![\d-])"), _ssn),
    ("uk_nino", re.compile(r"(?<![A-Za-z0-9])(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
                           r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])"), None),
    ("phone", re.compile(r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}"
                         r"(?![\w])"), _phone),
)

KINDS: tuple[str, ...] = tuple(kind for kind, _, _ in _DETECTORS)
_FRESH = {kind: re.compile(re.sub(r"^(?:\(\?<![^)]*\))+", "", pattern.pattern)) for kind, pattern, _ in _DETECTORS}
"""Each detector's pattern without its look-behinds: an item that begins right after another (where the look-behinds
refuse a tail of one number), as it begins after the other's placeholder."""

_NEEDS: dict[str, tuple[int, str | None]] = {
    "email": (0, "@"), "iban": (2, None), "card": (13, None), "ssn": (9, None), "uk_nino": (6, None),
    "phone": (6, None)}
"""What any match of each detector contains: at least this many digits (its pattern's fewest \\d), and this
character. A text with fewer digits or without the character cannot match, so that scan is skipped (the
six scans cost ~75 us per 500 characters; a text with no digit and no @ now costs one digit scan)."""
_MOST_DIGITS = max(n for n, _ in _NEEDS.values())
_DIGIT = re.compile(r"\d")
"""The detectors' own digit class (any Unicode decimal digit, as \\d in a str pattern)."""


def _digits(text: str, start: int, end: int) -> int:
    """Digits at or after `start` (every character of a match is) and before `end`, counted up to _MOST_DIGITS."""
    n = 0
    for _ in _DIGIT.finditer(text, start, end):
        n += 1
        if n == _MOST_DIGITS:
            break
    return n


def cannot_hold(text: str) -> bool:
    """Whether no detector can match `text`, told cheaply: ASCII (what a model reads of it is itself, model_reading)
    and, for each detector, fewer digits than it needs or without the character it needs (_NEEDS). find_pii's
    answer for such a text is [], the same result (what _find's prune skips, after a reading and a scan)."""
    if not text.isascii():
        return False
    digits = sum(text.count(d) for d in "0123456789")
    return all(digits < fewest or (char is not None and char not in text) for fewest, char in _NEEDS.values())


def model_reading(text: str) -> tuple[str, list[int] | None] | None:
    """What a model reads of a non-ASCII text, for the detectors: ASCII smuggled in tag characters as ASCII,
    Cyrillic and Greek look-alikes made Latin, invisible characters dropped (zero-width, soft hyphen,
    directional marks, BOM: the firewall's own list, features.INVISIBLE) and each character NFKC-folded
    (full-width forms); with where each of its characters came from (one entry more, the text's length), or
    None there when every character stayed in its place. None for ASCII text. Until 2026-12-05 the detectors
    read the text as written, so an address or a card with a zero-width space between its characters, in
    full-width forms or in tag characters passed every policy, while a model reads it, and repeats it, as the
    item (helper 122)."""
    if text.isascii():
        return None
    if _MOVED_IN_PLACE.search(text) is not None:
        text = text.translate(_IN_PLACE)  # one character for one: no position moves
    if INVISIBLE.search(text) is None:
        if unicodedata.is_normalized("NFKC", text):
            return text, None
        folded = text.translate(_FOLD)  # each character folded, at C speed
        if len(folded) == len(text):  # none made several: none moved
            return folded, None
        moved: list[int] = []
        _placed(text, 0, len(text), moved)
        return folded, [*moved, len(text)]
    # the visible runs between the invisible ones folded one by one: a run of padding is skipped whole (until the
    # twenty-third session each of its characters was translated three times and mapped one at a time)
    out: list[str] = []
    at: list[int] = []  # where each folded character came from
    pos = 0
    for run in [*INVISIBLE.finditer(text), None]:
        end = len(text) if run is None else run.start()
        if end > pos:
            out.append(text[pos:end].translate(_FOLD))
            _placed(text, pos, end, at)
        pos = len(text) if run is None else run.end()
    at.append(len(text))
    return "".join(out), at


def _placed(text: str, start: int, end: int, at: list[int]) -> None:
    """`at` with where each character model_reading makes of text[start:end] came from, a run of characters folded
    alike at a time."""
    for run in _WIDTH_RUNS.finditer(text[start:end].translate(_WIDTHS)):
        width = ord(run.group()[0])
        if width == 1:
            at.extend(range(start + run.start(), start + run.end()))
        elif width:
            at.extend([start + run.start()] * width)


_IN_PLACE = {**TAG_TO_ASCII, **LATIN_OF}
_MOVED_IN_PLACE = re.compile(f"[{chr(min(LATIN_OF))}-{chr(max(LATIN_OF))}{chr(min(TAG_TO_ASCII))}-{chr(max(TAG_TO_ASCII))}]")
"""Where any character _IN_PLACE changes lies (a few ranges: a class of its 145 characters searched 800,000
characters in 130 ms, these ranges in 8 ms); a text with none is not translated."""


class _Folds(dict[int, str]):
    """What model_reading makes of each character (invisible: nothing; otherwise its NFKC form, look-alikes made
    Latin), for str.translate, worked out at its first use; at most 65,536 kept (there are 1.1 million code
    points). CJK text with full-width punctuation (which NFKC folds) went through a Python loop per character:
    240 characters cost 168 us against 3 us for the detectors themselves."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        fold = "" if INVISIBLE.fullmatch(char) else unicodedata.normalize("NFKC", char).translate(_IN_PLACE)
        if len(self) < 65_536:
            self[code] = fold
        return fold


_FOLD = _Folds()


class _Widths(dict[int, str]):
    """How many characters model_reading makes of each character (a character: chr of the count), for
    str.translate: the position map is then built a run of characters alike at a time (a run of invisible ones
    skipped whole), where it was built a character at a time (800,000 zero-width characters: about 0.2 s)."""

    def __missing__(self, code: int) -> str:
        width = chr(len(_FOLD[code]))
        if len(self) < 65_536:
            self[code] = width
        return width


_WIDTHS = _Widths()
_WIDTH_RUNS = re.compile("\x01+|\x00+|[^\x00\x01]")


def held_start(text: str, visible: int, most: int | None = None, end: int | None = None) -> int:
    """Where the last `visible` characters that a model reads of `text` (up to `end`) begin, invisible ones not
    counted, so that a whole item is read however many invisible characters pad it; at most `most` characters
    back where given."""
    end = len(text) if end is None else end
    floor = 0 if most is None else max(0, end - most)
    pos, need = end, visible
    while need > 0 and pos > floor:
        chunk = text[max(floor, pos - need):pos]
        pos -= len(chunk)
        need -= len(chunk) - sum(len(run) for run in INVISIBLE.findall(chunk))
    return pos


def find_pii(text: str, kinds: frozenset[str] | None = None, start: int = 0, *,
             prune: bool = True) -> list[PiiMatch]:
    """Non-overlapping matches starting at or after `start` (earlier text is only look-behind context),
    sorted by position in `text`, found in what a model reads of it (model_reading). `prune=False` runs every
    detector even where no match is possible (too few digits, no @): the same result, slower; the property
    test's reference."""
    reading = model_reading(text)
    if reading is None:
        return _find(text, kinds, start, prune)
    folded, at = reading
    if at is None:
        return _find(folded, kinds, start, prune)
    found = _find(folded, kinds, bisect_left(at, start), prune)
    return [PiiMatch(m.kind, at[m.start], at[m.end - 1] + 1) for m in found]


def _find(text: str, kinds: frozenset[str] | None, start: int, prune: bool, settle: bool = True,
          kept: _Kept | None = None) -> list[PiiMatch]:
    """The detectors in priority order, each match that overlaps an earlier detector's dropped. `taken` is kept in
    order (a detector's own matches come in order and never overlap), so a match is checked against the one item
    before its end (bisect), not against every item: until 2026-12-05 (twenty-second session) each was checked
    against all, and 20,000 addresses (140 KB) cost 9.5 s, a body full of them hours of the firewall's thread.
    `kept`: the windows worked out so far in this reading (a fresh one where none is given)."""
    kept = _Kept() if kept is None else kept
    taken: list[PiiMatch] = []
    stop = len(text)
    digits = _digits(text, start, stop) if prune else 0
    for kind, pattern, valid in _DETECTORS:
        if kinds is not None and kind not in kinds:
            continue
        fewest, char = _NEEDS[kind]
        if prune and (digits < fewest or (char is not None and text.find(char, start, stop) < 0)):
            continue  # no match is possible: same result, without the scan
        starts = [t.start for t in taken]
        mine: list[PiiMatch] = []
        pos = start
        while (m := pattern.search(text, pos, stop)) is not None:
            # after a rejected candidate, retry one character later (not after it), so a valid item
            # overlapping a rejected one is still found wherever the text happens to be cut
            if kind == "iban":  # whole, or, where its last groups are the next word's, the IBAN before them
                items = [(kind, m.start(), e) for e in (_iban_end(text, m.start(), m.end(), kept),) if e]
            elif valid is None or valid(m.group()):
                items = [(kind, m.start(), m.end())]
            else:  # a run of digit groups too long for one item may be several, one after the other
                items = _split(text, m.start(), stop, kinds, kept) if kind in _NUMBERS else []
            # the earlier items starting before one ends: the last may overlap it
            if not items or any((before := bisect_left(starts, b)) and taken[before - 1].end > a for _, a, b in items):
                pos = m.start() + 1
                continue
            mine += [PiiMatch(*item) for item in items]
            pos = items[-1][2]
        if mine:
            taken = sorted(taken + mine, key=lambda t: t.start)  # two runs in order: merged in linear time
    return _settled(text, taken, kinds, start, stop, prune, kept) if settle and taken else taken


def _iban_end(text: str, start: int, end: int, kept: _Kept) -> int | None:
    """Where the longest IBAN ends that begins at `start` within the IBAN pattern's candidate text[start:end]: the
    candidate's end if it is one (iban_ok), else the longest cut at a space inside it that is one, or None. The
    pattern's last groups take any short word of capitals or digits that follows: "BE68 5390 0754 7034 OK" was read as
    one candidate, refused, and the IBAN in it passed (and redact left "AB00411100444111" before "[REDACTED:UK_NINO]"
    of "AB00411100444111 AB 12 34 56 C", which find_pii then found: thirty-fifth session, FIX6). Worked out once a
    candidate in a reading (`kept`: in a run of like words each candidate is one seen before), by _iban_in."""
    found = kept.of(_iban_in, text[start:end], None)
    return None if found is None else start + found


def _iban_in(candidate: str, kinds: frozenset[str] | None = None) -> int | None:
    """_iban_end of a candidate alone (its length, a cut's, or None; a space follows each cut in the text, so the
    pattern's look-ahead holds there too). Its capitals are read in base 36 by one translate, for the candidate whole
    (iban_ok's checksum) and for each cut at a space, the last first: the cut's length and checksum, then the pattern.
    Until RV1 (thirty-fifth session) iban_ok and the pattern read each cut afresh: 262,144 characters of "AB00 " took
    find_pii 6.0 s, 375 ms before 21e6e0c7; until the thirty-sixth session every candidate was worked out (the whole
    one by iban_ok, its cuts after it), ~1.2-1.6 s for 300,000 characters of "AB00 " (scripts/bench_pii_worst_case.py)."""
    rest = candidate[4:]  # after its country and check digits (no space in them)
    digits, head = rest.translate(_BASE36), candidate[:4].translate(_BASE36)
    spaces = rest.count(" ")
    if 11 <= len(rest) - spaces <= 30 and _remainder_one(digits.replace(" ", "") + head):
        return len(candidate)  # whole: iban_ok (the pattern's candidate holds capitals, digits and spaces only)
    cut, at = len(rest), len(digits)
    # each space in `rest`, the last first, `at` the same space in `digits` (each character is read alone)
    while spaces:
        cut, at, spaces = rest.rfind(" ", 0, cut), digits.rfind(" ", 0, at), spaces - 1
        if 11 <= cut - spaces <= 30 and _remainder_one(digits[:at].replace(" ", "") + head) \
                and _DETECTOR["iban"][0].fullmatch(candidate, 0, 4 + cut) is not None:
            return 4 + cut
    return None


def _split(text: str, start: int, stop: int, kinds: frozenset[str] | None, kept: _Kept) -> list[tuple[str, int, int]]:
    """The first item of the run of digit groups at `start` (whose first item, read whole, its validator refuses)
    where the run is too long for one number: the longest card, SSN or phone number (the higher detector first) that
    ends at the end of one of its groups; the items after it are read by _settled, as redact leaves the run. A run
    of 19 digits or fewer is left whole (it may be one number that its checksum refuses: "order 4111 1111 1111
    1112"). "020 7946 0958 0044 20 7946 0959" (24 digits: no phone number read whole, its tail refused by the
    look-behinds) passed whole until the twenty-fourth session, though a model reads two. A few anchored matches.
    What it reads lies within text[start:start + 2 * MAX_ITEM_CHARS] (up to `stop`; its patterns have no look-behind
    and its look-aheads read one character, before the run's 20th digit), so the cut is worked out on that window
    alone and kept for the reading (_cut_of, `kept`): in a long run of like digit groups each item's window is one
    seen before (a run of "12 " cost 38 us an item, ~2.5 us a character, in the twenty-fourth session until this)."""
    window = text[start:min(stop, start + 2 * MAX_ITEM_CHARS)]
    if _TWENTY_DIGITS.match(window) is None:
        return []  # at most 19 digits in reach: may be one number (a card holds up to 19) that its checksum refuses
    cut = kept.of(_cut_of, window, kinds)
    return [] if cut is None else [(cut[0], start, start + cut[1])]


def _cut_of(text: str, kinds: frozenset[str] | None) -> tuple[str, int] | None:
    """_split of the run at the start of `text` (its window), as (kind, end), or None. A group's end is found by a
    regex, and a card's checksum read from the run's digits taken once (a phone number's validator, its digit count,
    holds at every end tried)."""
    stop = len(text)
    # the run read only up to its 20th digit (the window's 20th, if the run holds it: reading on costs ~4 us)
    twenty = _TWENTY_DIGITS.match(text)
    if twenty is None or (run := _GROUP_RUN.match(text, 0, twenty.end())) is None or run.end() != twenty.end():
        return None  # may be one number (a card holds up to 19 digits) that its checksum refuses: left whole
    digits = list(_DIGIT.finditer(text, 0, run.end()))
    at = [d.start() for d in digits]
    figures = "".join(d.group() for d in digits)
    # an item ends at a group's end before the run's 20th digit; each end with the digits before it
    ends = [(j, bisect_left(at, j)) for j in map(_START, _GROUP_END.finditer(text, 1, at[-1]))][::-1]  # longest first
    for kind in KINDS:
        if kind in _NUMBERS and (kinds is None or kind in kinds):
            pattern, after = _FRESH[kind], _AFTER[kind]
            fewest, most = _DIGITS_IN[kind]
            for e, n in ends:
                if fewest <= n <= most and after.match(text, e, stop) is not None \
                        and (m := pattern.match(text, 0, e)) is not None and m.end() == e \
                        and (kind == "phone" or (_ssn(m.group()) if kind == "ssn" else
                                                 len(set(figures[:n])) > 1 and luhn_ok(figures[:n]))):
                    return kind, e
    return None


_GROUP_END = re.compile(r"(?<=\d)[ .-]")
_START = re.Match.start
_TWENTY_DIGITS = re.compile(r"(?:\D*\d){20}")
"""Text that holds 20 digits (_LONGEST_NUMBER + 1) or more."""


_NUMBERS = frozenset(("card", "ssn", "phone"))
_GROUP_RUN = re.compile(r"[+(]?\d+(?:(?:[ .-]|\)[ .-]?)[+(]?\d+)*")
"""A run of digit groups: each a number's sign or bracket, digits, and one separator (a bracket and one) before
the next."""
_LONGEST_NUMBER = 19
"""The most digits one card, SSN or phone number holds (a card's 19)."""


def _settled(text: str, taken: list[PiiMatch], kinds: frozenset[str] | None, start: int, end: int,
             prune: bool, kept: _Kept) -> list[PiiMatch]:
    """`taken` with the items its redaction lays bare, each stretch between two items read as redact leaves it (a
    placeholder's "]" before it, which no look-behind refuses, and its "[" after it, which no look-ahead refuses)
    until nothing more is found. "+44 20 7946 0958 00411100444111": the digits after the phone number are a tail of
    it for the look-behinds, and a phone number after "[REDACTED:PHONE] ", so until the twenty-fourth session a text
    redacted once still held an item, and redacting it again redacted more. An item found so at a stretch's edge is
    made one with the item beside it (one placeholder, the first's kind): whether it is an item depends on that one,
    so the streaming redactor, which never cuts inside a match, reads the two together. Only a stretch's edges are
    read again (_EDGE characters), and only where an item may begin or end there: linear in the text."""
    out: list[PiiMatch] = []
    todo: list[tuple[int, PiiMatch | None]] = [(taken[-1].end, None)]  # (where a stretch begins, the item after it)
    todo += [(taken[i - 1].end if i else -1, taken[i]) for i in range(len(taken) - 1, -1, -1)]  # -1: as written
    while todo:
        lo, item = todo.pop()
        hi = end if item is None else item.start
        head = lo >= 0 and lo < hi and _BARED.match(text, lo, hi) is not None  # an item may begin at its "]"
        # or end at its "[": an item read on into a number after it (a digit, with or without a separator between)
        tail = item is not None and hi > max(lo, start) and text[hi].isdigit() and (text[hi - 1].isalnum() or (
            text[hi - 1] in " .-" and hi - 1 > max(lo, start) and text[hi - 2].isdigit()))
        if head and not tail and out:  # (tail stays false as `lo` moves on)
            # each number of a run of digit groups read straight (as below) and made one with the item before it: read
            # on along the run here, a number at a time, without the queue (a run of "12 " cost ~6 us an item through it)
            moved = lo
            while head and (reach := _reach(text, lo, hi)) <= lo + _NUMBER_EDGE \
                    and _NOT_A_NUMBER.search(text, lo, reach) is None \
                    and (got := kept.of(_first_in, text[lo:reach], _ahead(text, lo, kinds), kept)):  # _in_run, unwrapped
                lo += got[2]
                out[-1] = PiiMatch(out[-1].kind, out[-1].start, lo)
                head = lo < hi and _BARED.match(text, lo, hi) is not None
            if lo != moved:
                todo.append((lo, item))  # what follows the run read as before
                continue
        found: list[PiiMatch] = []
        if head and tail and hi - lo <= 2 * _EDGE:  # both edges, close: the stretch read whole
            found = [PiiMatch(m.kind, lo + m.start, lo + m.end)
                     for m in _find(text[lo:hi], kinds, 0, prune, False, kept)]
        else:
            if head:
                found = _bared(text, lo, hi, kinds, prune, kept)
            if tail:
                at = max(start, lo, hi - (_EDGE if text.find("@", hi - _EDGE, hi) >= 0 else _NUMBER_EDGE))
                cut = max(0, at - 2)  # and the two characters the look-behinds read before it
                found += [PiiMatch(m.kind, cut + m.start, cut + m.end) for m in _find(text[cut:hi], kinds, at - cut,
                                                                                      prune, False, kept)
                          if not found or cut + m.start >= found[-1].end]
        if not found:
            if item is not None:
                out.append(item)
            continue
        if lo >= 0 and found[0].start <= lo + 1 and out:  # made one with the item before it
            first = found.pop(0)
            out[-1] = PiiMatch(out[-1].kind, out[-1].start, first.end)
            lo = first.end
        if found and item is not None and found[-1].end == hi:  # and with the item after it
            last = found.pop()
            item = PiiMatch(last.kind, last.start, item.end)
        # the stretches around them read again
        todo.append((found[-1].end if found else lo, item))
        todo += [(found[k - 1].end, found[k]) for k in range(len(found) - 1, 0, -1)]
        todo += [(lo, found[0])] if found else []
    return out


def _bared(text: str, lo: int, hi: int, kinds: frozenset[str] | None, prune: bool, kept: _Kept) -> list[PiiMatch]:
    """The item that begins at `lo` (or one character after it) as redaction lays it bare (an item's placeholder
    before `lo`), read up to `hi` at most: [] or one item."""
    reach, ahead = _reach(text, lo, hi), _ahead(text, lo, kinds)
    if reach <= lo + _NUMBER_EDGE and _NOT_A_NUMBER.search(text, lo, reach) is None:
        return _in_run(text, lo, reach, ahead, kept)  # digit groups only: a number, read straight (as _find)
    return [PiiMatch(m.kind, lo + m.start, lo + m.end)
            for m in _find(text[lo:reach], ahead, 0, prune, False, kept)[:1] if m.start <= 1]


def _reach(text: str, lo: int, hi: int) -> int:
    """How far _settled reads from `lo` (before `hi`): an item's reach with its look-arounds, a number's where no @ is
    in reach."""
    return min(hi, lo + (_EDGE if text.find("@", lo, lo + _EDGE) >= 0 else _NUMBER_EDGE))


def _ahead(text: str, lo: int, kinds: frozenset[str] | None) -> frozenset[str] | None:
    """The detectors _settled reads from `lo` with: after a space only a number's look-behind (a digit and a
    separator) changes, so only the number detectors."""
    return kinds if text[lo] != " " else _NUMBERS if kinds is None else kinds & _NUMBERS


def _in_run(text: str, lo: int, hi: int, kinds: frozenset[str] | None, kept: _Kept) -> list[PiiMatch]:
    """What _settled's _find reads at `lo` (or one separator after it) where what follows is digit groups only (no
    letter, no @: no address, IBAN or National Insurance number): the first number detector whose candidate there
    its validator takes, or _split cuts (read up to `hi`); a run of "12 " cost 90 us an item through _find. All it
    reads is text[lo:hi] (no look-behind; the look-aheads end at `hi`), so it is worked out on that window and kept
    for the reading (_first_in, `kept`): in a long run of like digit groups each window is one seen before."""
    got = kept.of(_first_in, text[lo:hi], kinds, kept)
    return [] if got is None else [PiiMatch(got[0], lo + got[1], lo + got[2])]


def _first_in(text: str, kinds: frozenset[str] | None, kept: _Kept) -> tuple[str, int, int] | None:
    """_in_run of the whole of `text`, as (kind, start, end), or None."""
    hi = len(text)
    for b in (0, 1) if text[0] in " .-" else (0,):
        for kind in KINDS:
            if kind in _NUMBERS and (kinds is None or kind in kinds) \
                    and (m := _FRESH[kind].match(text, b, hi)) is not None:
                valid = _DETECTOR[kind][1]
                if valid is None or valid(m.group()):
                    return kind, b, m.end()
                if cut := _split(text, b, hi, kinds, kept):
                    return cut[0]
    return None


_T = TypeVar("_T")
_P = ParamSpec("_P")


class _Kept(dict[tuple[Any, str, frozenset[str] | None], Any]):
    """What _split and _in_run worked out on each window (_cut_of, _first_in), for one reading (a find_pii, a
    read_together): in a long run of like digit groups each item's window is one seen before. At most 4,096 windows,
    the oldest dropped. Until the twenty-fourth session's review (R2) they were kept by a process-wide lru_cache:
    windows of tenants' text (card and phone numbers) held after their request ended, for every request after."""

    def of(self, work: Callable[Concatenate[str, frozenset[str] | None, _P], _T], window: str,
           kinds: frozenset[str] | None, *more: _P.args, **named: _P.kwargs) -> _T:
        """work(window, kinds, *more), worked out once per (work, window, kinds) in this reading (`more` is not part of
        the key: this reading's memo, which _first_in passes on to _split)."""
        key = (work, window, kinds)
        if key not in self:
            got = work(window, kinds, *more, **named)
            if len(self) >= 4096:
                del self[next(iter(self))]
            self[key] = got
        return self[key]


_NOT_A_NUMBER = re.compile(r"[^\d .()+-]")
"""A character no number is written with: where one follows, _settled reads on with every detector."""


_EDGE = 64 + 1 + 4 * 64 + 24 + 8
"""LONGEST_ITEM + 8 (defined below): the characters at either edge of a stretch between two items that _settled reads
again: any item that begins or ends at the edge lies within them with its look-arounds."""
_NUMBER_EDGE = 56 + 4
"""The same without an @ there: any item but an address (_NUMBER_AROUND, below, and the look-arounds)."""
_BARED = re.compile(r"[\w.+(-]|[ .-][\d+(]")
"""What may follow an item where the look-behinds refused an item that its placeholder lets begin: a character an
item begins with (after the item's last character), or a number's separator and a number's first character (after a
digit)."""



LONGEST_ITEM = 64 + 1 + 4 * 64 + 24
"""The most characters a model reads of any match: the e-mail pattern's longest (local part, @, four labels
and their dots, a top-level domain); the other patterns' are shorter."""


def read_together(pieces: Sequence[str], own: Sequence[list[PiiMatch]], kinds: frozenset[str] | None = None, *,
                  ids: Sequence[int] | None = None) -> list[list[PiiMatch]]:
    """The matches of each of `pieces` (texts a model reads one after the other as one text: a message's text
    parts, a conversation's user turns) given `own`, each piece's find_pii, with the items that cross from one
    piece to the next ("john.doe@" + "example.com", "078-05" + "-1120") found in the pieces joined as they are
    written (nothing put between them) and mapped back to the part of each piece they cover: the item's first
    piece holds its placeholder, the later ones lose their part (`rest`). Only the text around each seam is read:
    the word it cuts (up to LONGEST_ITEM characters a model reads on either side) and the 56 characters on either
    side, enough for any item written with spaces. An item found across a seam stands for the matches
    it overlaps in its pieces (a card cut in two was two phone numbers), and is redacted whole even where one
    piece alone holds an item too: "j" + "ohn@x.io" leaves no "j" (a template that puts nothing between the
    pieces shows a model "john@x.io"), and so "my address is" + "jo@x.io" loses its "is" as well (with a space
    at either end it keeps it). Each seam's window is read as well cut at the seams either side of it (the two pieces
    around the seam alone, as with a break between them and their neighbours), so an item whose end runs straight
    into the next piece's word is still found: "Call me on +" | "1 415 555 0100" | "thanks" read joined only is
    "+1 415 555 0100thanks", no phone number (until the twenty-second session it passed). Where three pieces or
    more lie within LONGEST_ITEM characters, each seam is read as well with a break there alone: an item that ends
    at the seam, read backwards from it (_ending_at: "call +" | "1 415" | " 555 0100" | "thanks", missed until the
    twenty-third session), and one that begins there (_beginning_at: "ab5" | "+1 415" | " 555 " | "0100 thanks"),
    each anchored at the seam, so in as many steps as the item is long; and from a seam where the text before refuses
    an item up to each later seam, two pieces on or more, that such an item may reach (_to_break: "ab 5" | "+1 415" |
    " 555" | " 0100" | "thanks", an item that needs a break at both its ends, missed until the twenty-fourth
    session), each detector's few candidate ends found by bisection, the longest item kept. Until
    2026-12-05 each piece was read alone, so an e-mail or an SSN cut in two passed `pii_input: redact`. `ids`: how
    the caller numbers the pieces in PiiMatch.pieces (their positions here by default)."""
    joined = "".join(pieces)
    if joined.isascii() and "@" not in joined and _DIGIT.search(joined) is None:
        return [list(mine) for mine in own]  # every item has an @ or digits (_NEEDS), in any text that folds to nothing else
    starts = list(accumulate((len(p) for p in pieces), initial=0))
    seams = sorted({s for s in starts[1:-1] if 0 < s < len(joined)})
    # What a model reads of the pieces joined, folded once: each character is folded alone (model_reading), so a
    # window of this text is what the same window of the pieces folds to, and every window is counted, read and
    # searched in characters a model reads, whatever invisible padding lies between them. Until the twenty-third
    # session each window was cut from the pieces as written and folded by find_pii, each piece's padding walked
    # and folded at each reading of it (400 one-digit parts each padded by 2,000 zero-width characters: 632 ms).
    reading = model_reading(joined)
    text, at = (joined, None) if reading is None else reading
    cuts = sorted({c for s in seams if 0 < (c := s if at is None else bisect_left(at, s)) < len(text)})
    regions: list[tuple[int, int]] = []
    pairs: list[tuple[int, int]] = []  # a seam's window cut at the seams either side of it (a break there)
    alone: list[tuple[int, int]] = []  # a seam's window before it and after it, cut at the seam (a break there alone)
    ends: list[int] = []  # seams read as well with a break there, back from them (_ending_at) and forwards
    begins: list[int] = []  # (_beginning_at), where an item across three pieces or more may end or begin
    for k, seam in enumerate(cuts):
        before, after = cuts[k - 1] if k else 0, cuts[k + 1] if k + 1 < len(cuts) else len(text)
        # an item with whitespace in it is a number (at most _NUMBER_AROUND characters); an e-mail address has none,
        # so beyond those only the word the seam cuts is read (a space missed here only widens what is read)
        near, far = max(0, seam - _NUMBER_AROUND), max(0, seam - _AROUND)
        lo = min(near, max([far, *(text.rfind(space, far, seam) + 1 for space in _SPACES)]))
        near, far = min(len(text), seam + _NUMBER_AROUND), min(len(text), seam + _AROUND)
        hi = max(near, min([far, *(i for space in _SPACES if (i := text.find(space, seam, far)) >= 0)]))
        if (k and lo <= before) or (k + 1 < len(cuts) and hi >= after):
            # the window reaches the seam before or after: read as well with a break there (the two pieces around
            # this seam alone), so that an item whose end runs into the next piece's word is still read
            pairs.append((max(lo, before), min(hi, after)))
        # and each with a break at the seam alone: the _NUMBER_AROUND characters before it, and after it, read whole
        # where they hold another seam (else an item there lies in one piece: its own reading has it). Until the
        # twenty-ninth session a break alone was read only back from the seam for an item ending at it (_ending_at)
        # and forwards for one beginning at it (_beginning_at), each anchored, and an item ending a separator and a
        # digit, or a `)`, before a break, or one beginning at a break and running on over pieces, was left in part:
        # about 1 in 2,000 cuttings of scripts/firewall_pii_fuzz.py
        if k and before > seam - _NUMBER_AROUND:
            alone.append((max(0, seam - _NUMBER_AROUND), seam))
        if k + 1 < len(cuts) and after < seam + _NUMBER_AROUND:
            alone.append((seam, min(len(text), seam + _NUMBER_AROUND)))
        if k > 1 and seam - cuts[k - 2] < _AROUND:
            ends.append(seam)  # an item across the two seams before this one may end here
        if k + 2 < len(cuts) and cuts[k + 2] - seam < _AROUND:
            begins.append(k)  # and one across the two after it begin here
        if regions and lo <= regions[-1][1]:
            regions[-1] = (regions[-1][0], hi)
        else:
            regions.append((lo, hi))
    kept = _Kept()  # the windows worked out, for this reading
    found = [(m.kind, lo + m.start, lo + m.end) for lo, hi in regions + pairs
             for m in _find(text[lo:hi], kinds, 0, True, True, kept)]
    if alone:  # read only where a digit or a `+` is left that the readings so far do not redact (every item but an
        # address holds a digit; an address's end is read at a break by _ending_at): read everywhere, 4,000 parts
        # "12 " took 1,132 ms of read_together against 229 before, 353 so
        read = _spans((a, b) for _, a, b in found)
        found += [(m.kind, lo + m.start, lo + m.end) for lo, hi in alone if _bare_digit(text, lo, hi, read)
                  for m in _find(text[lo:hi], kinds, 0, True, True, kept)]
    digits = [m.start() for m in _DIGIT.finditer(text)] if begins else []  # for _to_break: where each digit is
    # the items read from each seam on, each that overlaps the one before it, of the same kind, made one with it: the
    # same characters redacted, one item mapped to the pieces where each seam's gave one (4,000 one-digit parts read
    # with a break at both ends hold a phone number from every seam, each across 15 pieces)
    chain: list[tuple[str, int, int]] = []
    begun: list[tuple[int, int]] = []  # each item read from a seam on, before it is read on and after
    reached = 0  # where those read so far end: an item read to a break that ends before it adds nothing to redact
    for k in begins:
        for kind, a, b, to_break in _beginning_at(text, cuts[k], cuts, k + 2, digits, reached, kinds, kept):
            # read on, unless read up to a break (until the twenty-fifth session, also not where an item read joined
            # ended at a seam: "+44" | "11111111053234" | "-4111 555 0512" | "05 1111" left "05 1111")
            begun.append((b, a))
            if b > reached and not to_break:
                b = _run_on(text, b, kinds, kept)
                begun.append((b, a))
            if chain and chain[-1][0] == kind and a < chain[-1][2]:
                chain[-1] = (kind, chain[-1][1], max(b, chain[-1][2]))
            else:
                chain.append((kind, a, b))
            reached = max(reached, b)
    # the items read so far, by their ends: an item may follow one, up to a break (those read from a break before it
    # too since the twenty-fifth session: "1111" | "41542" | "12 +4401300044", breaks at both ends, left "+4401300044")
    bare = sorted([*((b, a) for _, a, b in found), *begun])
    redacted = _spans((a, b) for b, a in bare)  # what those redact
    found += chain
    found += [item for seam in ends for item in _ending_before(text, seam, kinds, bare, redacted, kept)]
    parts: list[list[PiiMatch]] = [[] for _ in pieces]
    for kind, a, b in found:
        if at is not None:
            a, b = at[a], at[b - 1] + 1  # as written: from its first character to its last
        after = bisect_right(seams, a)
        if after == len(seams) or seams[after] >= b:
            continue  # whole in one piece: its own reading has it
        covered = tuple(i for i in range(bisect_right(starts, a) - 1, bisect_left(starts, b))
                        if starts[i] < starts[i + 1])
        spans = [(i, max(a, starts[i]) - starts[i], min(b, starts[i + 1]) - starts[i]) for i in covered]
        named = covered if ids is None else tuple(ids[i] for i in covered)
        for n, (i, start, end) in enumerate(spans):
            parts[i].append(PiiMatch(kind, start, end, named, n > 0))
    return [_merged(parts[i] + mine) if parts[i] else list(mine) for i, mine in enumerate(own)]


def _spans(items: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The spans `items` cover, in order, made one where they overlap or touch."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(items):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


_DIGIT_OR_PLUS = re.compile(r"[\d+]")


def _bare_digit(text: str, lo: int, hi: int, covered: Sequence[tuple[int, int]]) -> bool:
    """Whether text[lo:hi] holds a digit or a `+` (a number's country code) outside the spans `covered` (in order,
    apart)."""
    for m in _DIGIT_OR_PLUS.finditer(text, lo, hi):
        i = bisect_right(covered, (m.start(), len(text))) - 1
        if i < 0 or covered[i][1] <= m.start():
            return True
    return False


_AROUND = LONGEST_ITEM + 8
"""Characters a model reads on either side of a seam within which read_together reads the word (no whitespace) the
seam cuts: any e-mail address that crosses the seam lies within them, look-behinds and look-aheads included."""
_NUMBER_AROUND = 56
"""Characters a model reads on either side of a seam that read_together reads whatever they are: the longest card,
IBAN, phone or id written with spaces (44: an IBAN in groups of four) and its look-behind."""
_SPACES = " \n\t\r"
_DETECTOR = {kind: (pattern, valid) for kind, pattern, valid in _DETECTORS}
_AFTER = {kind: re.compile(pattern.pattern[pattern.pattern.rindex("(?!"):]) for kind, pattern, _ in _DETECTORS}
"""Each detector's look-ahead, the end of its pattern: what may not follow an item."""
_BACKWARDS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"[A-Za-z]{2,24}(?:\.[A-Za-z0-9-]{1,63}){1,4}@[\w.+-]{1,64}(?![\w.+-])"),
    "iban": re.compile(r"(?:[A-Z0-9]{1,4} ?)?(?:[A-Z0-9]{4} ?){2,7}\d{2}[A-Z]{2}(?![A-Za-z0-9])"),
    "card": re.compile(r"\d(?:[ -]?\d){12,18}(?![\d-])(?! \d)"),
    "ssn": re.compile(r"\d{4}-\d{2}-\d{3}(?![\d-])(?! \d)"),
    "uk_nino": re.compile(r"[A-D] ?\d{2} ?\d{2} ?\d{2} ?[A-CEGHJ-NPR-TW-Z][A-CEGHJ-PR-TW-Z](?![A-Za-z0-9])"),
    "phone": re.compile(r"\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?:[ .-]?\)\d{1,4}\()?(?:[ .-]?\d{1,3}\+)?(?![\w+])(?![ .-]\d)"),
}
"""Each detector's pattern written backwards (its look-behinds as look-aheads), to read the text before a seam
from the seam back: an item that ends at the seam, found in as many steps as it is long."""
_BACKWARDS_BARE = {kind: re.compile(re.sub(r"(?:\(\?![^)]*\))+$", "", backwards.pattern))
                   for kind, backwards in _BACKWARDS.items()}
"""The same without their look-aheads (the look-behinds): where none matches, no detector's match ends there, whatever
is before it (an item after another, a placeholder's "]")."""


def _run_on(text: str, end: int, kinds: frozenset[str] | None, kept: _Kept) -> int:
    """Where the items that redact lays bare after an item ending at `end` (_settled: "4111 4111" | " +44 4241 1141",
    the second a tail of the first for the look-behinds) end, read on from it: `end` where none. Each read as _settled
    reads it (_bared; until the twenty-fifth session by _find, whose look-behinds refused the card that a separator
    after the item lays bare: "+44" | "11111111053234" | "-4111 555 0512" | "05 1111", a break before the second, left
    "05 1111")."""
    while _BARED.match(text, end) is not None and (got := _bared(text, end, len(text), kinds, True, kept)):
        end = got[0].end
    return end


def _ending_before(text: str, seam: int, kinds: frozenset[str] | None, bare: Sequence[tuple[int, int]],
                   redacted: Sequence[tuple[int, int]], kept: _Kept) -> list[tuple[str, int, int]]:
    """_ending_at the break at `seam`, and before each number or address found so that begins with a digit: the number
    that ends there or one separator before, which redaction lays bare once that item is redacted (_settled's `tail`:
    "+1" | "0532" | "41534 111134" | "@" | "1120.comx" with a break after the address, whose "111134" the pieces
    joined read into a phone number, left "+1" until the twenty-fifth session), and before that one, up to
    _NUMBER_AROUND characters back from the first."""
    out = _ending_at(text, seam, kinds, bare, redacted, kept)
    todo = [a for _, a, _ in out]
    while todo:
        a = todo.pop()
        if a < 2 or seam - a > _NUMBER_AROUND or not text[a].isdigit() \
                or not (text[a - 1].isalnum() or (text[a - 1] in " .-" and text[a - 2].isdigit())):
            continue
        more = [item for item in _ending_at(text, a, kinds, (), (), kept) if item[2] <= a and item[1] < a]
        out += more
        todo += [b for _, b, _ in more]
    return out


def _ending_at(text: str, seam: int, kinds: frozenset[str] | None, bare: Sequence[tuple[int, int]],
               redacted: Sequence[tuple[int, int]], kept: _Kept) -> list[tuple[str, int, int]]:
    """The items that end at `seam` with a break there (what is after it unread), or one separator before it, each
    detector's at most: the text before read backwards from there, anchored, and what it finds read again by the
    detector itself from where it starts, as the text is written up to the break (its pattern, its look-behinds,
    its validator). A number that its look-behinds refuse, right after an item read joined (the last of `bare`, the
    items' (end, start), before the seam, or one separator after it), is read as redact lays it bare (_settled), and
    made one with that item (which may lie in other pieces), as find_pii does. `redacted`: the spans that
    `bare` covers, in order, made one where they overlap or touch; `kept`: the windows worked out so far in this reading.
    Where a separator and one digit lie before the break ("8-069 6" | "1-2"), a number that ends before them is read
    as well (_ended_at that end): a digit alone is no number's group, so the break ends the number there, where the
    pieces joined read on into the next piece's digits (" 61-2") and find no such end; until the thirty-sixth session
    it was left (" 5 093" | "15 9170060 80" | "5-4933349353" | "8-069 6" | "1-2", breaks before the second piece and
    after the fourth: "8-069" of "...805-49333493538-069" passed, scripts/firewall_pii_fuzz.py's kind of miss)."""
    end = seam if text[seam - 1].isalnum() else seam - 1  # every item ends in a letter or a digit: at the seam,
    if end == seam - 1 and (text[end] not in " .-" or end < 1 or not text[end - 1].isalnum()):
        return []  # or before a number's separator there (which the pieces joined read on, into the next piece)
    out = _ended_at(text, seam, end, kinds, bare, redacted, kept)
    if end == seam and seam >= 3 and text[seam - 2] in " .-" and text[seam - 1].isdigit() and text[seam - 3].isdigit():
        out += [item for item in _ended_at(text, seam, seam - 2, kinds, bare, redacted, kept) if item not in out]
    return out


def _ended_at(text: str, seam: int, end: int, kinds: frozenset[str] | None, bare: Sequence[tuple[int, int]],
              redacted: Sequence[tuple[int, int]], kept: _Kept) -> list[tuple[str, int, int]]:
    """_ending_at's items that end at `end` (the break at `seam`, or a separator, or a separator and a digit, before
    it), the text read up to the break."""
    back = text[max(0, end - _AROUND - 2):end][::-1]
    skip = _skipped(back)
    out = []
    for kind, backwards in _BACKWARDS.items():
        if (kinds is None or kind in kinds) and kind not in skip and (m := backwards.match(back)) is not None:
            pattern, valid = _DETECTOR[kind]
            start = end - m.end()
            if (item := pattern.match(text, start, seam)) is not None and (valid is None or valid(item.group())):
                out.append((kind, start, item.end()))
    if (k := bisect_left(bare, (end,))) and end - (after := bare[k - 1][0]) <= _NUMBER_AROUND:
        b = after + 1 if text[after] in " .-" else after
        for kind in KINDS:
            if kind in _NUMBERS and (kinds is None or kind in kinds) and all(o[0] != kind for o in out) \
                    and (m := _FRESH[kind].match(text, b, seam)) is not None and m.end() >= end \
                    and ((valid := _DETECTOR[kind][1]) is None or valid(m.group())):
                out.append((kind, bare[k - 1][1], m.end()))
                break
        else:
            if k < len(bare) and bare[k][1] <= after:  # an item read so far runs on from that one over the break
                return out
            # read forwards from the first of the items read so far that end within reach, up to the break: the
            # number may follow an item inside one read as a run of several ("344200340532" in "344200340532+443704555",
            # read joined), or another than the last ("112001300130555" | " 3704555 341120"), as find_pii reads them
            # from each of their starts, the first first (an item read from a break starts after one read joined)
            j = k
            while j and end - bare[j - 1][0] <= _NUMBER_AROUND:
                j -= 1
            # not from a start where the items read so far redact all up to the break (a number read from there ends
            # at the break: it adds nothing to redact), and only where an item may end there (_may_end); until the
            # twenty-fifth session's review every seam was read so, and one-character pieces of random digit groups
            # cost 3 times as much as before 9e9e508
            i = bisect_left(redacted, (end,)) - 1
            covered = redacted[i][0] if i >= 0 and redacted[i][1] >= end else seam
            firsts = sorted({a for _, a in bare[j:k] if a < covered})[:_STARTS_TRIED]
            if not firsts or not _may_end(text, firsts, end, back, kinds):
                return out
            for first in firsts:  # an item begins there: read from it
                more = [(m.kind, first + m.start, first + m.end) for m in _find(text[first:seam], kinds, 0, True, True,
                                                                                kept)
                        if first + m.end >= end and first + m.start < end]
                if more:
                    out += more
                    break
    return out


_STARTS_TRIED = 4
"""The most items read before a break that _ending_at reads forwards from, to a number that follows one."""


def _may_end(text: str, firsts: Sequence[int], end: int, back: str, kinds: frozenset[str] | None) -> bool:
    """Whether an item read from one of `firsts` (in order) may end at `end` (`back`: the text before it, backwards):
    a detector's pattern, without its look-arounds, matches there (_BACKWARDS_BARE), and for a number, from one of
    `firsts` or a start after a character that is not a digit (where one may follow an item, which ends before a
    non-digit, or a placeholder) up to `end`, with its validator's consent (an item _settled reads after another, or
    _split cuts, is such a match). Starts inside the span already redacted up to `end` count too: a number read there
    is made one with the item before it, which may begin before that span (57ac9d21 left them out, and "10100." of "4" |
    "0044555  " | "10100." | "555 37041111" | "0532" | ".3704" | "2", breaks before "10100." and after "0532", passed)."""
    numbers = []
    for kind, bare_back in _BACKWARDS_BARE.items():
        if (kinds is None or kind in kinds) and bare_back.match(back) is not None:
            if kind not in _NUMBERS:
                return True  # an address or an id: read
            numbers.append(kind)
    if not numbers:
        return False
    starts = {*firsts, *(m.start() for m in _NUMBER_START.finditer(text, firsts[0], end))}
    for kind in numbers:
        pattern, valid = _FRESH[kind], _DETECTOR[kind][1]
        if any((m := pattern.fullmatch(text, s, end)) is not None and (valid is None or valid(m.group()))
               for s in starts):
            return True
    return False


_NUMBER_START = re.compile(r"(?<!\d)[\d+(]")
"""Where a number may begin after an item or a placeholder: not after a digit."""


def _beginning_at(text: str, seam: int, cuts: Sequence[int], k: int, digits: Sequence[int], covered: int,
                  kinds: frozenset[str] | None, kept: _Kept) -> list[tuple[str, int, int, bool]]:
    """The items that begin at `seam` with a break there (what is before it unread), or one character after it
    (the look-behinds read two back), each detector's at most: where the text before the seam refuses an item
    that the break lets begin. Each is read on into what follows (the pieces joined) and, where it may reach a later
    seam `cuts[k]` or after (three pieces or more on), with a break there too (_to_break; `digits`: where each digit
    of `text` is; one that ends by `covered` is not looked for). A number its validator refuses read whole is cut as
    find_pii cuts it (_split: "AB56" | "0100" | "078" | "0044-1120555 12" with a break after "AB56", 22 digits, read
    only whole until the twenty-fifth session, passed)."""
    if _SHUT.search(text, max(0, seam - 2), seam) is None:
        return []
    ahead = text[seam:seam + _AROUND]
    out: list[tuple[str, int, int, bool]] = []  # (kind, start, end, read up to a break)
    for first in (0, 1) if ahead[:1] in (" ", ".", "-") else (0,):  # a separator after a digit: from the next one
        skip = _skipped(ahead[first:])
        for kind, pattern, valid in _DETECTORS:
            if (kinds is None or kind in kinds) and kind not in skip and (m := pattern.match(ahead, first)) is not None:
                if kind == "iban":  # whole, or the IBAN before a word its last groups took
                    if e := _iban_end(ahead, first, m.end(), kept):
                        out.append((kind, seam + first, seam + e, False))
                elif valid is None or valid(m.group()):
                    out.append((kind, seam + first, seam + m.end(), False))
                elif kind in _NUMBERS and (cut := _split(ahead, first, len(ahead), kinds, kept)):
                    out += [(cut_kind, seam + a, seam + b, False) for cut_kind, a, b in cut]
        # 24 digits in a row are no item read on (_skipped), but up to a break they may hold one: not skipped there
        tried = [d for d in _DETECTORS if (kinds is None or d[0] in kinds) and (d[0] not in skip or d[0] in _NUMBERS)]
        if tried and k < len(cuts):
            out += [(kind, seam + first, seam + end, True) for kind, end in _to_break(ahead, first, cuts, k, seam, digits,
                                                                                       covered, tried)]
    return out


def _to_break(ahead: str, first: int, cuts: Sequence[int], k: int, seam: int, digits: Sequence[int], covered: int,
              tried: Sequence[tuple[str, re.Pattern[str], _Validator | None]]) -> list[tuple[str, int]]:
    """The longest item (its kind and end) that begins at `first` of `ahead` (the text from `seam`, a break before
    it) and reaches a break at a later seam (`cuts[k]` or after: three pieces or more from the first): the text between the
    two breaks alone. An item read so is missed by the other readings where both its ends need the break ("ab 5" |
    "+1 415" | " 555" | " 0100" | "thanks": joined, the text before refuses its start and the text after its end;
    until the twenty-fourth session it passed). Only the stops an item could end at are tried, each detector's own:
    the text up to them written in its characters (`_RUN`, within its reach) and holding as many digits as it may
    (an address: its one @ before them), the furthest first, each an anchored match of the detector's pattern; a
    shorter item than one found is not looked for (it adds nothing to redact), so a seam costs a bounded number of
    short matches however many pieces follow."""
    out: list[tuple[str, int]] = []
    furthest = max(first, covered - seam)
    for kind, pattern, valid in tried:
        written = _RUN[kind].match(ahead, first, first + (_AROUND if kind == "email" else _NUMBER_AROUND))
        run = first if written is None else written.end()
        if kind == "email":  # its one @ before the break
            fewest, most, marks = 1, 1, [i for i in (ahead.find("@", first, run),) if i >= 0]
            if marks:
                marks += [i for i in (ahead.find("@", marks[0] + 1, run),) if i >= 0]
        else:
            at = bisect_left(digits, seam + first)  # the text's digits from here, as positions in `ahead`
            fewest, most = _DIGITS_IN[kind]
            marks = [d - seam for d in digits[at:at + most + 2]]
        if len(marks) < fewest:
            continue
        # the stops after its fewest-th digit (and past the item found), at most one separator past its run and not
        # past its most+2-th digit (a number may end a separator and one digit before the break: "x" | "0044 3" |
        # "02" | "01003704 4" | "0@", breaks before the second piece and after the fourth, read "0044 30201003704"
        # and left "0044 3" until the thirty-seventh session, the stops not past its most+1-th digit): found by
        # bisection, so a seam's cost does not grow with the pieces in reach
        last = min(run + 1, len(ahead), marks[most + 1] if len(marks) > most + 1 else len(ahead))
        low = max(k, bisect_right(cuts, seam + max(marks[fewest - 1], furthest)))
        for i in range(bisect_right(cuts, seam + last) - 1, low - 1, -1):  # the furthest first
            if (m := pattern.match(ahead, first, cuts[i] - seam)) is not None and (valid is None or valid(m.group())):
                if m.end() > furthest:
                    out.append((kind, m.end()))
                    furthest = m.end()
                break
    return out


_RUN = {"email": re.compile(r"[\w.+@-]*"), "iban": re.compile("[A-Z0-9 ]*"), "card": re.compile(r"[\d -]*"),
        "ssn": re.compile(r"[\d-]*"), "uk_nino": re.compile(r"[A-Z0-9 ]*"), "phone": re.compile(r"[\d .()+-]*")}
"""The characters each detector's matches are written in: an item read with a break at both ends lies within a run of
them from its start."""
_DIGITS_IN = {"iban": (2, 32), "card": (13, 19), "ssn": (9, 9), "uk_nino": (6, 6), "phone": (8, 15)}
"""The fewest and the most digits a valid item of each number detector holds (its pattern, its validator)."""


def _skipped(text: str) -> frozenset[str]:
    """The detectors that cannot match at the start of `text` (read forwards from a seam, or backwards), so are not
    tried: an address without an @ in reach, an IBAN or a National Insurance number without a capital, and a card,
    an SSN or a phone number where 24 digits follow one another (none holds more than 23 in a row: 19, 4, and a
    phone's country code and 20), which the phone pattern otherwise splits every way before giving up (89 us a
    seam backwards; 4,000 one-digit parts: 0.28 s)."""
    skip = set()
    if "@" not in text:
        skip.add("email")
    if _CAPITAL.search(text, 0, _NUMBER_AROUND) is None:
        skip.update(("iban", "uk_nino"))
    if _DIGIT_RUN.match(text):
        skip.update(("card", "ssn", "phone"))
    return frozenset(skip)


_CAPITAL = re.compile("[A-Z]")
_DIGIT_RUN = re.compile(r"[+(]?\d{24}")

_SHUT = re.compile(r"(?:[\w.+-]|\d[ .-])\Z")
"""What some detector's look-behind refuses before an item: a letter, digit or mark of an address's or a number's,
or a number's separator after a digit."""


def _merged(matches: list[PiiMatch]) -> list[PiiMatch]:
    """Overlapping matches made one, that of an item read across pieces standing for the others (its kind and
    pieces: of the first to start, one running on from the piece before first, then the higher detector; a tuple
    shared, not copied: an item across thousands of invisible pieces is in each of them). One stretch of overlapping items is removed whole and named once, in the piece where it begins: the
    merged match is a `rest` (no placeholder) where any item in it continues from the piece before (whose own
    merged match then holds the stretch's placeholder, or continues it from further back), whatever the order the
    readings found them in. Until the twenty-third session the first match in the readings' order decided: the same texts gave
    one placeholder or two, a second named where an item beginning in this piece was read before the one running
    into it."""
    out: list[PiiMatch] = []
    for m in sorted(matches, key=lambda t: (t.start, not t.pieces, not t.rest, _RANK[t.kind], -t.end)):
        if out and m.start < out[-1].end:
            top = out[-1]
            keep = top if top.pieces or not m.pieces else m
            out[-1] = PiiMatch(keep.kind, top.start, max(top.end, m.end), keep.pieces, top.rest or m.rest)
        else:
            out.append(m)
    return out


_RANK = {kind: n for n, kind in enumerate(KINDS)}


_UNFINISHED = {kind: regex.compile(f"(?:{pattern.pattern})\\Z") for kind, pattern, _ in _DETECTORS}
"""Each detector's pattern, up to the text's end, for the `regex` package, whose partial matching tells a text's end
that more text could still make a match (unfinished_start). Anchored at the end: unanchored, a whole match that stops
short of the end (an IBAN's first groups) was taken over a partial one from the same start that reaches it."""


def unfinished_start(text: str, kinds: frozenset[str] | None = None, start: int = 0) -> int:
    """Where the earliest part of `text` begins (at or after `start`) that more text could still make an item, or
    len(text): a start from which a detector's pattern matches up to the text's end or is cut off by it (`regex`'s
    partial match, every start tried), read as a model reads the text (model_reading). Validators are not asked:
    more digits may make any number valid. An address's local part is any word, so a text that ends in a word (or in
    `.`, `+` or `-` after one) ends in such a part, and one that ends in a digit group too. For a stream cut before its
    end (StreamingRedactor.cut): what lies from here on may be the start of an item whose rest never came."""
    reading = model_reading(text)
    read, at = (text, None) if reading is None else reading
    begin = start if at is None else bisect_left(at, start)
    end = len(read)
    first = end
    for kind, pattern in _UNFINISHED.items():
        if kinds is not None and kind not in kinds:
            continue
        for m in pattern.finditer(read, begin, end, partial=True, overlapped=True):
            if m.end() == end and m.start() < min(first, end):
                first = m.start()
                break
    if first == end:
        return len(text)
    return first if at is None else at[first]


def placeholder(kind: str) -> str:
    return f"[REDACTED:{kind.upper()}]"


def redact(text: str, matches: list[PiiMatch] | None = None) -> str:
    found = find_pii(text) if matches is None else matches
    out: list[str] = []
    pos = 0
    for m in found:
        out += [text[pos:m.start], "" if m.rest else placeholder(m.kind)]
        pos = m.end
    out.append(text[pos:])
    return "".join(out)
