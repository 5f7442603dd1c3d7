"""Model-routing CSVs of other sources (rightsize/routing_data.py): a header in another case, a byte-order
mark, extra columns; a value that would give a silently wrong curve (NaN, a `_correct` of 7, a negative judge
score) is refused with the file, line and column, by `aigrid models eval --data` too."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aigrid.cli import app
from aigrid.errors import InvalidRequest
from aigrid.rightsize.routing_data import read_routing_csv, with_earlier_turns

PROMPT = "Which river flows through Vienna?\nA. Danube\nB. Rhine"  # 3 lines: line numbers count the file's


def wide(path: Path, header: list[str], cell: str = "1", at: int = -1, encoding: str = "utf-8") -> Path:
    with path.open("w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(12):
            w.writerow([f"{PROMPT} #{i}", cell if i == at else str(i % 2), "1", "x"])
    return path


def test_a_header_in_another_case_with_a_bom_and_extra_columns(tmp_path: Path) -> None:
    f = wide(tmp_path / "w.csv", ["Prompt", "Llama_8B_Correct", "Llama_70B_Correct", "Source"], encoding="utf-8-sig")
    d = read_routing_csv(f)
    assert len(d) == 12 and (d.small_name, d.large_name) == ("Llama_8B_Correct", "Llama_70B_Correct")
    assert d.prompts[0] == f"{PROMPT} #0" and d.small.tolist() == [0.0, 1.0] * 6


@pytest.mark.parametrize(("cell", "named"), [
    ("nan", "line 14, column 'a_correct': 'nan'"),   # row 4 starts at line 2 + 4 x 3 (every prompt has 3 lines)
    ("7", "line 14, column 'a_correct': '7' is not a number in [0, 1]"),
    ("-1", "line 14, column 'a_correct': '-1'"),
    ("", "line 14, column 'a_correct': ''"),
])
def test_a_bad_score_is_named_by_file_line_and_column(tmp_path: Path, cell: str, named: str) -> None:
    f = wide(tmp_path / "w.csv", ["prompt", "a_correct", "b_correct", "note"], cell, at=4)
    with pytest.raises(InvalidRequest) as e:
        read_routing_csv(f)
    assert f"{f}, {named}" in str(e.value), e.value
    r = CliRunner().invoke(app, ["models", "eval", "--data", str(f), "--no-baseline"])
    assert r.exit_code == 2 and named in r.output.replace("\n", ""), r.output


def test_a_long_file_with_a_nan_or_negative_judge_score_is_refused(tmp_path: Path) -> None:
    """A NaN score used to pass and swap which model was called small (the means compared NaN)."""
    for bad in ("nan", "-3", "11"):
        f = tmp_path / "long.csv"
        rows = [f"{q},1,{m},{bad if (q, m) == (2, 'small') else 5 + q % 5},question {q}"
                for q in range(10) for m in ("small", "large")]
        f.write_text("Question_ID,Turn,Model,Judge_Score,Turn_Prompt\n" + "\n".join(rows) + "\n")
        with pytest.raises(InvalidRequest, match=rf"long.csv, line 6, column 'Judge_Score': '{bad}'"):
            read_routing_csv(f)


@pytest.mark.parametrize(("body", "named"), [
    (b"", "has no rows (empty)"),
    (b"prompt,a_correct,b_correct\n", "has no rows (only a header)"),
    (b"prompt,a_correct,b_correct\nhello,1,0\n\xe9t\xe9,1,0\n", "line 3: not UTF-8"),
    # an empty prompt is left out (a note counts it); one too short to have the column is still a short row
    (b"a_correct,b_correct,prompt\n1,0,hello\n1,0\n", "line 3, column 'prompt': empty"),
    (b"prompt,a_correct,b_correct\nhello,1,0\nshort\n", "line 3, column 'a_correct': no value"),
    # blank lines (DictReader skips them) were not counted: line 3 for the record on line 5
    (b"prompt,a_correct,b_correct\nq1,1,0\n\n\nq2,7,1\n", "line 5, column 'a_correct': '7'"),
    (b"prompt,a_correct,b_correct\r\nq1,1,0\r\n\r\n\"multi\r\n\r\nline\",1,0\r\n\r\nq2,7,1\r\n",
     "line 8, column 'a_correct': '7'"),
    (b"prompt,a_correct,b_correct\n\n\"two\nlines\",x,0\n", "line 3, column 'a_correct': 'x'"),
    # a column given twice: the last cell of the name was read, the other column as if it were not there
    (b"prompt,a_correct,a_correct,b_correct\nq1,1,0,1\n", "line 1: the header names column 'a_correct' twice"),
    (b"Prompt,a_correct,prompt ,b_correct\nq1,1,q,1\n", "line 1: the header names column 'prompt' twice"),
    # an unclosed quote read the rest of the file into one cell: reported as a short row further on
    (b"prompt,a_correct,b_correct\nq1,1,0\n\"q2,0,1\nq3,1,1\n", "line 3: a quote that is never closed"),
    (b"prompt,a_correct,b_correct\n\"a\nb\",1,0\n\nq2,\"0,1\nq3,1,1\n", "line 5: a quote that is never closed"),
    # lines counted by str.splitlines, which also breaks at a form feed or U+2028 inside a cell: line 7 (review)
    ("prompt,a_correct,b_correct\na\u2028b,1,0\nc\fd,1,0\nok,1,0\n\"open,1,0\nx,1,0\n".encode(),
     "line 5: a quote that is never closed"),
])
def test_files_that_cannot_be_used_are_named(tmp_path: Path, body: bytes, named: str) -> None:
    f = tmp_path / "d.csv"
    f.write_bytes(body)
    with pytest.raises(InvalidRequest) as e:
        read_routing_csv(f)
    assert str(f) in str(e.value) and named in str(e.value), e.value


def test_a_file_too_big_too_wide_or_not_a_file_is_refused_by_name(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """`aigrid models eval --data /dev/zero` read the device whole (a MemoryError, or the machine's memory),
    and a CSV of short rows under a wide header had no bound on the cells held as Python objects."""
    import aigrid.rightsize.routing_data as rd

    with pytest.raises(InvalidRequest, match="cannot read /dev/zero: not a regular file"):
        read_routing_csv(Path("/dev/zero"))
    f = tmp_path / "d.csv"
    f.write_bytes(b"prompt,a_correct,b_correct\nq1,1,0\nq2,0,1\nq3,1,1\n")
    monkeypatch.setattr(rd, "MAX_CELLS", 9)
    assert len(read_routing_csv(f)) == 3
    monkeypatch.setattr(rd, "MAX_CELLS", 8)
    with pytest.raises(InvalidRequest, match=r"d.csv, line 4: more than 8 cells \(3 columns x 3 rows\)"):
        read_routing_csv(f)
    monkeypatch.setattr(rd, "MAX_BYTES", 20)
    with pytest.raises(InvalidRequest, match=r"d.csv: larger than 0 MiB"):
        read_routing_csv(f)


def test_a_later_turn_is_read_after_the_earlier_turns_of_its_conversation(tmp_path: Path) -> None:
    """with_earlier_turns: turn 2 (and 3) as the gateway reads that request, the user turns so far joined by a
    line break (ChatRequest.prompt_text), whatever the file's row order; a file without turns unchanged."""
    f = tmp_path / "long.csv"
    rows = [("7", "2", "Now in French."), ("7", "1", "Say hello."), ("8", "1", "Add 2 and 3."),
            ("7", "3", "Shorter."), ("8", "2", "Times 4?")]
    with f.open("w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["question_id", "turn", "model", "score", "turn_prompt"])
        for i, (q, t, p) in enumerate(rows + [(str(9 + i), "1", f"Question {i}.") for i in range(6)]):
            w.writerow([q, t, "a", "4", p])
            w.writerow([q, t, "b", str(5 + i % 3), p])
    d = with_earlier_turns(read_routing_csv(f))
    by = dict(zip([(g, p.rsplit("\n", 1)[-1]) for g, p in zip(d.groups, d.prompts, strict=True)], d.prompts, strict=True))
    assert by["7", "Now in French."] == "Say hello.\nNow in French."
    assert by["7", "Shorter."] == "Say hello.\nNow in French.\nShorter."
    assert by["7", "Say hello."] == "Say hello." and by["8", "Times 4?"] == "Add 2 and 3.\nTimes 4?"
    assert d.subset(np.array([g == "8" for g in d.groups])).prompts == ["Add 2 and 3.", "Add 2 and 3.\nTimes 4?"]
    assert read_routing_csv(f).subset(np.array([g == "8" for g in d.groups])).turns == (("8", 1), ("8", 2))
    plain = wide(tmp_path / "w.csv", ["prompt", "a_correct", "b_correct", "x"])
    assert with_earlier_turns(read_routing_csv(plain)).prompts == read_routing_csv(plain).prompts


def test_a_question_of_thousands_of_turns_is_read_in_time_linear_in_the_file(tmp_path: Path) -> None:
    """Every read of a long file with turns joined each prompt's earlier turns: 8,000 turns of one question (a
    0.5 MB file) took 22 s of CPU and 0.72 GB, where `aigrid models eval` reads files of up to 256 MiB. The
    conversations are kept whole and joined only by with_earlier_turns."""
    f = tmp_path / "long.csv"
    with f.open("w", newline="") as out:
        w = csv.writer(out)
        w.writerow(["question_id", "turn", "model", "score", "turn_prompt"])
        for t in range(1, 8_001):
            w.writerow(["q", t, "a", "4", f"Turn {t} asks something."])
            w.writerow(["q", t, "b", "6", f"Turn {t} asks something."])
    start = time.process_time()
    d = read_routing_csv(f)
    assert time.process_time() - start < 3.0 and len(d) == 8_000 and d.turns is not None


@pytest.mark.parametrize("turn", ["\u00b2", "9" * 5000])
def test_a_turn_int_cannot_read_is_not_a_turn_not_a_traceback(tmp_path: Path, turn: str) -> None:
    """Review of dd8669d5: a turn str.isdigit() takes but int() refuses ('²', or over 4,300 digits) was a
    ValueError out of read_routing_csv (a traceback from aigrid models eval); such a file has no turns."""
    path = tmp_path / "long.csv"
    path.write_text("turn_prompt,model,judge_score,question_id,turn\n"
                    f"hi,a,1,q1,{turn}\nhi,b,0,q1,{turn}\nyo,a,1,q1,1\nyo,b,0,q1,1\n")
    data = read_routing_csv(path)
    assert len(data) == 2 and data.turns is None


def test_a_wide_header_is_checked_for_names_given_twice_in_linear_time(tmp_path: Path) -> None:
    """Review of 0a2a43f3: each header name was counted over the whole header (list.count), quadratic: a header
    of 40,000 columns (a 350 KB file) took 23 s of CPU before its error."""
    path = tmp_path / "wide.csv"
    path.write_text(",".join(["prompt", *(f"m{i}" for i in range(40_000))]) + "\n"
                    + ",".join(["x", *["1"] * 40_000]) + "\n")
    start = time.process_time()
    with pytest.raises(InvalidRequest, match="found 40000 quality columns"):
        read_routing_csv(path)
    assert time.process_time() - start < 5
