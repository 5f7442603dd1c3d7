"""`aigrid models eval` on files of the shipped shape written differently, and on files it cannot use: every
figure it prints is defined (or says n/a and why), and every refusal is one `error:` line naming the file and,
where there is one, the line and column."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from aigrid.cli import app
from aigrid.errors import InvalidRequest
from aigrid.rightsize import cli as eval_cli
from aigrid.rightsize.estimator import QualityEstimator
from aigrid.rightsize.evaluation import embed, evaluate
from aigrid.rightsize.routing_data import read_routing_csv, with_earlier_turns
from aigrid.rightsize.sw_ranking import NeighbourScore, quantize

runner = CliRunner()
HEADER = ["prompt", "small_correct", "large_correct", "contaminated"]


def wide(path: Path, rows: list[list[object]], header: list[str] = HEADER) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def labelled(n: int, small: object = None, large: object = 1, flag: object = 0) -> list[list[object]]:
    """n prompts; the small model right on every other one unless `small` is given."""
    return [[f"Question number {i}: what is {i} + {i}?", i % 2 if small is None else small, large, flag]
            for i in range(n)]


def run(*args: str) -> tuple[int, str]:
    r = runner.invoke(app, ["models", "eval", "--no-baseline", *args])
    assert not isinstance(r.exception, Exception) or isinstance(r.exception, SystemExit), r.exception
    return r.exit_code, r.output


def one_error_line(output: str) -> str:
    lines = [x for x in output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    return lines[0]


def test_too_few_prompts_is_one_error_line_not_a_usage_box(tmp_path: Path) -> None:
    code, out = run("--data", str(wide(tmp_path / "one.csv", labelled(1))))
    assert code == 2 and "one.csv: 1 prompt; a curve needs at least 10" in one_error_line(out)


def test_a_prompt_longer_than_the_csv_modules_default_field_limit_is_read(tmp_path: Path) -> None:
    rows = labelled(12)
    rows[3][0] = "why " * 50_000  # 200,000 characters: csv's default limit is 131,072
    d = read_routing_csv(wide(tmp_path / "long.csv", rows))
    assert len(d) == 12 and len(d.prompts[3]) == 200_000


@pytest.mark.parametrize(("yes", "no"), [("true", "false"), ("True", "False"), ("TRUE", "FALSE"), ("yes", "no"),
                                         ("1.0", "0.0")])
def test_labels_written_as_booleans_or_floats_are_read_as_1_and_0(tmp_path: Path, yes: str, no: str) -> None:
    rows = [[f"q{i}", yes if i % 2 else no, yes, no] for i in range(12)]
    d = read_routing_csv(wide(tmp_path / "b.csv", rows))
    assert d.small.tolist() == [0.0, 1.0] * 6 and d.large.tolist() == [1.0] * 12
    assert d.contaminated is not None and not d.contaminated.any()


def test_a_word_that_is_no_boolean_is_still_refused_by_line_and_column(tmp_path: Path) -> None:
    rows = labelled(12)
    rows[2][1] = "maybe"
    code, out = run("--data", str(wide(tmp_path / "m.csv", rows)))
    assert code == 2 and "m.csv, line 4, column 'small_correct': 'maybe'" in one_error_line(out)


def test_equal_models_have_no_gap_and_apgr_says_n_a_not_zero(tmp_path: Path) -> None:
    code, out = run("--data", str(wide(tmp_path / "eq.csv", labelled(20, small=1, large=1))))
    assert code == 0, out
    assert "no gap to recover" in out and "undefined" in out
    aigrid = next(x for x in out.splitlines() if x.startswith("| aigrid |"))
    assert aigrid.startswith("| aigrid | n/a | n/a | n/a |"), aigrid
    assert "nan" not in out.lower().replace("n/a", "")


def test_a_large_model_worse_than_the_small_one_has_no_gap_either(tmp_path: Path) -> None:
    """--small / --large swapped: PGR divided by a negative gap, where a higher APGR is a worse router."""
    f = wide(tmp_path / "s.csv", labelled(20))
    code, out = run("--data", str(f), "--small", "large_correct", "--large", "small_correct")
    assert code == 0 and "below always-small's" in out, out
    assert "| oracle | n/a |" in out


def test_the_same_model_as_small_and_large_is_refused(tmp_path: Path) -> None:
    f = wide(tmp_path / "s.csv", labelled(20))
    code, out = run("--data", str(f), "--small", "small_correct", "--large", "small_correct")
    assert code == 2 and "--small and --large name the same quality column" in one_error_line(out)


def test_one_quality_column_is_refused_not_a_traceback(tmp_path: Path) -> None:
    f = wide(tmp_path / "one.csv", [[f"q{i}", i % 2] for i in range(12)], ["prompt", "small_correct"])
    for extra in ([], ["--small", "small_correct"]):
        code, out = run("--data", str(f), *extra)
        assert code == 2 and "found 1 quality column (small_correct); need two" in one_error_line(out)
    f = wide(tmp_path / "none.csv", [[f"q{i}", "x"] for i in range(12)], ["prompt", "note"])
    code, out = run("--data", str(f))
    assert code == 2 and "none.csv: no quality column" in one_error_line(out)


def test_a_score_mistyped_among_the_first_rows_is_named_not_its_column_dropped(tmp_path: Path) -> None:
    """A score column (not `*_correct`) with one cell that is no number among its first 50 rows (`N/A`) was read as a
    text column and left out: two models' file was refused as having one quality column (`found 1 quality column
    (small); need two`, the mistyped cell unnamed), and a third model's column was dropped unsaid (7 Dec 2026,
    thirty-third session). The cell is named now; with --small and --large both given the others are not read."""
    rows = [[f"q{i}", i % 2, 1, 0.5] for i in range(20)]
    rows[2][2] = "N/A"
    f = wide(tmp_path / "s.csv", [r[:3] for r in rows], ["prompt", "small", "large"])
    code, out = run("--data", str(f))
    assert code == 2 and f"{f}, line 4, column 'large': 'N/A' is not a finite number" in one_error_line(out), out
    rows[2][2], rows[5][3] = 1, "x"
    f = wide(tmp_path / "three.csv", rows, ["prompt", "small", "large", "mid"])
    code, out = run("--data", str(f))
    assert code == 2 and f"{f}, line 7, column 'mid': 'x' is not a finite number" in one_error_line(out), out
    code, out = run("--data", str(f), "--small", "small", "--large", "large")
    assert code == 0, out


def test_a_json_lines_file_is_named_as_such(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_text('{"prompt": "hi", "small_correct": 1, "large_correct": 1}\n' * 12)
    code, out = run("--data", str(f))
    assert code == 2 and "d.jsonl: looks like JSON, not CSV" in one_error_line(out)


def long_rows(turns: int = 2, questions: int = 12) -> list[list[object]]:
    return [[q, t, m, (5 + (q + t) % 5) if m == "small" else 9, f"question {q} turn {t}"]
            for q in range(questions) for t in range(1, turns + 1) for m in ("small", "large")]


LONG = ["question_id", "turn", "model", "judge_score", "turn_prompt"]


@pytest.mark.parametrize("keep", [[0, 2, 3, 4], [1, 2, 3, 4], [2, 3, 4]])
def test_a_long_file_without_question_id_or_turn_keeps_every_prompt(tmp_path: Path, keep: list[int]) -> None:
    """Rows were keyed by (question_id, turn) alone: without them all the turn-1 rows were one prompt."""
    rows = [[r[i] for i in keep] for r in long_rows()]
    d = read_routing_csv(wide(tmp_path / "l.csv", rows, [LONG[i] for i in keep]))
    assert len(d) == 24 and sorted(d.prompts) == sorted({r[4] for r in long_rows()})
    by_prompt = dict(zip(d.prompts, d.small.tolist(), strict=True))
    assert by_prompt["question 3 turn 2"] == 0.5  # (5 + 5 % 5) / 10: its own score, not the last row's


def test_a_long_file_with_two_scores_for_one_model_and_prompt_is_refused(tmp_path: Path) -> None:
    rows = long_rows()
    rows.append(rows[5])
    code, out = run("--data", str(wide(tmp_path / "l.csv", rows, LONG)))
    assert code == 2 and "l.csv, line 50: a second score for model 'large' on this prompt (the first is on line 7)" \
        in one_error_line(out)


def test_a_long_file_says_how_many_prompts_lacked_a_models_score(tmp_path: Path) -> None:
    rows = [r for r in long_rows() if not (r[0] == 3 and r[2] == "large")]
    code, out = run("--data", str(wide(tmp_path / "l.csv", rows, LONG)))
    assert code == 0 and "22 prompts" in out and "note: 2 of 24 prompts left out: not scored for both models" in out


def test_contaminated_prompts_are_counted_and_can_be_left_out(tmp_path: Path) -> None:
    rows = labelled(30)
    for r in rows[:8]:
        r[3] = 1
    f = wide(tmp_path / "c.csv", rows)
    code, out = run("--data", str(f))
    assert code == 0 and "30 prompts" in out and "8 of 30 prompts flagged contaminated, included" in out
    code, out = run("--data", str(f), "--drop-contaminated")
    assert code == 0 and "22 prompts" in out and "8 of 30 prompts flagged contaminated left out" in out
    code, out = run("--data", str(wide(tmp_path / "all.csv", labelled(30, flag=1))), "--drop-contaminated")
    assert code == 2 and "all.csv: 0 prompts not flagged contaminated" in one_error_line(out)
    rows[4][3] = "perhaps"
    code, out = run("--data", str(wide(tmp_path / "bad.csv", rows)))
    assert code == 2 and "bad.csv, line 6, column 'contaminated': 'perhaps'" in one_error_line(out)


def test_the_split_is_named_in_the_heading(tmp_path: Path) -> None:
    """`[test]` was read as rich markup and vanished from the heading."""
    code, out = run("--data", str(wide(tmp_path / "s.csv", labelled(200))), "--split", "test")
    assert code == 0 and "## s.csv [test]: " in out, out


def test_plot_paths(tmp_path: Path) -> None:
    data = str(wide(tmp_path / "s.csv", labelled(20)))
    code, out = run("--data", data, "--plot", str(tmp_path / "noext"))
    # matplotlib added .png itself and the path printed was not the file written
    assert code == 0 and f"plot: {tmp_path / 'noext.png'}" in out and (tmp_path / "noext.png").stat().st_size > 1000
    code, out = run("--data", data, "--plot", str(tmp_path))
    assert code == 2 and "is a directory" in one_error_line(out)
    code, out = run("--data", data, "--plot", str(tmp_path / "c.foo"))
    assert code == 2 and "'.foo' is not an image format" in one_error_line(out)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = wide(tmp_path / "a" / "x.csv", labelled(20)), wide(tmp_path / "b" / "x.csv", labelled(20))
    code, out = run("--data", str(a), "--data", str(b), "--plot", str(tmp_path / "c.png"))
    assert code == 0 and (tmp_path / "c-x.png").exists() and (tmp_path / "c-x-2.png").exists(), out


def test_progress_is_reported_for_every_step(tmp_path: Path) -> None:
    d = read_routing_csv(wide(tmp_path / "s.csv", labelled(30)))
    seen: list[tuple[str, int, int]] = []
    evaluate(d, QualityEstimator.load(), reference=d, crossfit=True,
             progress=lambda what, done, total: seen.append((what, done, total)))
    assert {(w, t) for w, done, t in seen if done == t} == {
        ("estimating", 30), ("embedding the prompts", 30),
        ("sw-ranking: embedding its reference prompts", 30)}


def test_a_long_step_logs_a_line_on_stderr_when_not_on_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with eval_cli._progress("big.csv") as progress:
        for done in range(0, 5001, 500):
            progress("estimating", done, 5000)
        progress("small step", 0, 10)
    err = capsys.readouterr().err
    assert err.count("big.csv: estimating (5000 prompts)") == 1 and "small step" not in err


def test_the_reference_is_embedded_once_for_several_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = eval_cli.embed

    def counted(prompts: list[str], *a: object, **k: object) -> np.ndarray:
        calls.append(len(prompts))
        return real(prompts, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(eval_cli, "embed", counted)
    ref = wide(tmp_path / "ref.csv", labelled(50))
    files = [str(wide(tmp_path / f"d{i}.csv", labelled(20))) for i in range(3)]
    r = runner.invoke(app, ["models", "eval", "--reference", str(ref), *sum((["--data", f] for f in files), [])])
    assert r.exit_code == 0, r.output
    assert len(calls) == 1, calls  # was once per --data file


def test_which_models_errors_name_the_file(tmp_path: Path) -> None:
    f = wide(tmp_path / "three.csv", [[f"q{i}", i % 2, 1, 0] for i in range(12)],
             ["prompt", "a_correct", "b_correct", "c_correct"])
    code, out = run("--data", str(f))
    assert code == 2 and f"{f}: found 3 quality columns (a_correct, b_correct, c_correct); name the two" \
        in one_error_line(out)
    code, out = run("--data", str(f), "--small", "a_correct", "--large", "d_correct")
    assert code == 2 and f"{f}: quality column 'd_correct' is not in the data" in one_error_line(out)


@pytest.mark.parametrize(("sep", "name"), [(";", "semicolons"), ("\t", "tabs")])
def test_a_file_separated_by_something_else_says_so(tmp_path: Path, sep: str, name: str) -> None:
    f = tmp_path / "s.csv"
    f.write_text(sep.join(HEADER) + "\n" + "".join(sep.join((f"q{i}", "1", "1", "0")) + "\n" for i in range(12)))
    code, out = run("--data", str(f))
    assert code == 2 and f"only commas separate columns; this header has {name}" in one_error_line(out)


def test_prompts_the_estimate_was_trained_on_are_counted(tmp_path: Path) -> None:
    """The shipped files evaluated whole gave in-sample figures with nothing said (GSM8K: 1,037 of 1,319)."""
    texts = ["What is the capital of France?", "Integrate x^2 from 0 to 3.", "Write a haiku about autumn rain.",
             "Which enzyme digests starch?", "Translate 'good morning' into German.", "Who wrote Hamlet?",
             "Prove that the square root of 2 is irrational.", "List three uses of copper.",
             "Explain how a transistor amplifies a signal.", "What year did the Berlin Wall fall?",
             "Summarise the plot of Moby-Dick in one sentence.", "How many bones are in the human hand?"]
    d = read_routing_csv(wide(tmp_path / "t.csv", [[t, i % 2, 1, 0] for i, t in enumerate(texts)]))
    est = QualityEstimator.load()
    assert evaluate(d, est).near_training == 0
    trained = NeighbourScore(quantize(embed(texts[:5], est)), np.zeros(5, np.float32), 1)
    est.neighbours = trained  # as if the first five had been its training prompts
    assert evaluate(d, est).near_training == 5


@pytest.mark.parametrize(("head", "kind"), [(b"PAR1\x15\x04", "a Parquet file"), (b"PK\x03\x04\x14\x00", "a zip"),
                                            (b"\x1f\x8b\x08\x00", "a gzip-compressed file"),
                                            ("prompt,a_correct\n".encode("utf-16"), "a UTF-16 file")])
def test_a_binary_file_is_named_by_its_kind(tmp_path: Path, head: bytes, kind: str) -> None:
    f = tmp_path / "d.csv"
    f.write_bytes(head + bytes(range(256)))  # was "line N: not UTF-8 (save the file as UTF-8)"
    code, out = run("--data", str(f))
    assert code == 2 and f"d.csv: {kind}" in one_error_line(out)


def test_a_bad_file_among_several_is_refused_before_any_is_evaluated(tmp_path: Path) -> None:
    good = wide(tmp_path / "good.csv", labelled(20))
    bad = wide(tmp_path / "bad.csv", labelled(1))
    code, out = run("--data", str(good), "--data", str(bad))
    assert code == 2 and "bad.csv: 1 prompt" in one_error_line(out)  # no tables of good.csv first


def test_a_row_with_more_cells_than_the_header_is_refused_not_shifted(tmp_path: Path) -> None:
    """An unquoted comma in a prompt made a row one cell longer: the prompt was cut at the comma and the cells
    after it read one column to the left (a score model's 3 and 4 read as its scores); the extra cell was dropped."""
    f = wide(tmp_path / "x.csv", [[f"q{i}", i % 5, 4] for i in range(12)], ["prompt", "model_a", "model_b"])
    with f.open("a", encoding="utf-8") as out:
        out.write("What is 3,4,1,2\n")  # prompt 'What is 3,4', written without quotes
    code, out = run("--data", str(f))
    assert code == 2 and "x.csv, line 14: 4 fields, the header has 3" in one_error_line(out)
    trailing = tmp_path / "t.csv"  # a trailing comma on every row (an empty last cell) shifts nothing: read
    trailing.write_text("prompt,model_a,model_b\n" + "".join(f"q{i},{i % 2},1,\n" for i in range(12)))
    assert read_routing_csv(trailing).small.tolist() == [0.0, 1.0] * 6


@pytest.mark.parametrize("index", ["", "Unnamed: 0", "id", "row_id", "index"])
def test_a_numbered_index_column_is_not_taken_for_a_model(tmp_path: Path, index: str) -> None:
    """A score file without `*_correct` columns (every numeric column a model) written by pandas with its index
    (an unnamed first column) or with an id column: the row number was a third model, and the file refused."""
    f = wide(tmp_path / "i.csv", [[i, f"q{i}", i % 2, 1] for i in range(12)], [index, "prompt", "model_a", "model_b"])
    d = read_routing_csv(f)
    assert (d.small_name, d.large_name) == ("model_a", "model_b")
    assert d.small.tolist() == [0.0, 1.0] * 6 and d.large.tolist() == [1.0] * 12


def test_a_long_files_judge_scores_divided_by_10_are_said_so(tmp_path: Path) -> None:
    """A 1-5 judge's scores are read as 0-10 and divided by 10 (quality 0.1-0.5): a note says so and names the
    file's range, where the figures printed nothing about it."""
    f = tmp_path / "j.csv"
    with f.open("w", newline="", encoding="utf-8") as out:
        csv.writer(out).writerows([["question_id", "turn", "model", "judge_score", "turn_prompt"]]
                                  + [[q, 1, m, 2 + q % 3 if m == "s" else 5, f"q{q}"] for q in range(12) for m in "sl"])
    d = read_routing_csv(f)
    assert d.large.tolist() == [0.5] * 12
    assert any("'judge_score' read as a 0-10 judge score and divided by 10" in n and "from 2 to 5" in n
               for n in d.notes), d.notes


def test_too_few_prompts_after_pairing_says_how_many_the_file_held(tmp_path: Path) -> None:
    """A random tenth of a long file's rows keeps few prompts scored for both models: '1 prompt; a curve needs at
    least 10' from a file of 24 rows did not say that the rest were left out for want of a pair."""
    rows = [r for r in long_rows() if r[2] == "small" or r[0] == 0]  # only question 0 has the large model's scores
    code, out = run("--data", str(wide(tmp_path / "l.csv", rows, LONG)))
    line = one_error_line(out)
    assert code == 2 and "l.csv: 2 prompts; a curve needs at least 10" in line
    assert "22 of 24 prompts left out: not scored for both models" in line


def test_a_judge_score_under_a_correct_name_is_refused_saying_where_it_goes(tmp_path: Path) -> None:
    """1-10 scores under `*_correct` names: the refusal named the cell ('8' is not a number in [0, 1]) and now
    also what a `*_correct` column holds and what to call a score column instead; a 0-1 share is still read."""
    rows = [[f"q{i}", 3 + i % 5, 8, 0] for i in range(12)]
    code, out = run("--data", str(wide(tmp_path / "s.csv", rows)))
    assert code == 2 and "s.csv, line 2, column 'small_correct': '3' is not a number in [0, 1] (a `*_correct` " \
        "column is 0/1 or a share in [0, 1]; a score on another scale, such as a 1-10 judge's, goes in a column " \
        "not named `*_correct`: rename small_correct to small_score and large_correct to large_score)" \
        in one_error_line(out)
    code, out = run("--data", str(wide(tmp_path / "n.csv", [[f"q{i}", -1, 1, 0] for i in range(12)])))
    assert code == 2 and one_error_line(out).endswith("'-1' is not a number in [0, 1]")  # below 0: no hint
    assert read_routing_csv(wide(tmp_path / "ok.csv", [[f"q{i}", 0.5, 1, 0] for i in range(12)])).small[0] == 0.5


def test_the_hint_names_every_correct_column_holding_a_judge_score(tmp_path: Path) -> None:
    """Two judges' 1-10 scores under `*_correct` names: the hint named the first column only (rename it, run again,
    refused for the next); it names every `*_correct` column with a number above 1, and not one of 0/1 beside
    them; past ten, how many more."""
    rows = [[f"q{i}", 3 + i % 5, 1, 0 if i == 11 else 9] for i in range(12)]
    code, out = run("--data", str(wide(tmp_path / "s.csv", rows, ["prompt", "a_correct", "b_correct", "c_correct"])))
    assert code == 2 and one_error_line(out).endswith(
        "column 'a_correct': '3' is not a number in [0, 1] (a `*_correct` column is 0/1 or a share in [0, 1]; a score "
        "on another scale, such as a 1-10 judge's, goes in a column not named `*_correct`: rename a_correct to a_score "
        "and c_correct to c_score)")
    columns = [f"m{k}_correct" for k in range(13)]
    code, out = run("--data", str(wide(tmp_path / "w.csv", [[f"q{i}"] + [7] * 13 for i in range(12)],
                                       ["prompt", *columns])))
    assert code == 2 and one_error_line(out).endswith(
        "rename " + ", ".join(f"m{k}_correct to m{k}_score" for k in range(10))
        + " and 3 more `*_correct` columns above 1)")


def test_an_empty_prompt_is_left_out_and_counted_not_refusing_the_file(tmp_path: Path) -> None:
    """A held-out file with one empty prompt was refused whole (`column 'prompt': empty`, exit 2; eval_firewall.py
    leaves such rows out): the rows with an empty or blank prompt are left out, a note counts them and names their
    lines, and every figure is the file's without them (2 of 42 rows: within MAX_EMPTY_SHARE, 5%)."""
    rows = labelled(40)
    with_empty = rows[:2] + [["", 1, 0, 0]] + rows[2:9] + [["   ", 0, 1, 1]] + rows[9:]
    code, out = run("--data", str(wide(tmp_path / "e.csv", with_empty)))
    assert code == 0, out
    assert "## e.csv: 40 prompts" in out and "note: 2 of 42 rows left out: an empty 'prompt' (lines 4, 12)" in out
    code, plain = run("--data", str(wide(tmp_path / "p.csv", rows)))
    tables = [[line for line in o.splitlines() if line.startswith("|")] for o in (out, plain)]
    assert code == 0 and tables[0] == tables[1] and tables[0]


def test_a_file_mostly_empty_is_refused_naming_the_share_and_the_first_lines(tmp_path: Path) -> None:
    """Empty prompts were left out whatever their number: a file of which most rows had none (a column shifted,
    the prompts not exported) was evaluated on what was left, a note its only trace. More than MAX_EMPTY_SHARE
    (5%) of the rows left out refuses the file, saying the share and the first lines; 1 of 20 (5%) is read."""
    rows = labelled(30)
    for i in (3, 4, 9, 20, 21, 22, 28):
        rows[i][0] = " " if i % 2 else ""
    code, out = run("--data", str(wide(tmp_path / "m.csv", rows)))
    assert code == 2 and one_error_line(out).endswith(
        "m.csv: 7 of 30 rows (23.3%) would be left out: an empty 'prompt' (lines 5, 6, 11, 22, 23, ...); more than "
        "5% refuses the file (fill those prompts in or remove their rows)")
    rows = labelled(20)
    rows[7][0] = ""
    d = read_routing_csv(wide(tmp_path / "one.csv", rows))
    assert len(d) == 19 and d.notes == ("1 of 20 rows left out: an empty 'prompt' (line 9)",)
    rows = labelled(21)
    rows[7][0] = rows[8][0] = ""
    with pytest.raises(InvalidRequest, match=r"2 of 21 rows \(9\.5%\) would be left out: an empty 'prompt' "
                                             r"\(lines 9, 10\)"):
        read_routing_csv(wide(tmp_path / "two.csv", rows))


def test_an_empty_turn_leaves_out_its_question_from_that_turn_on(tmp_path: Path) -> None:
    """A long file's empty turn 1 was left out alone: its turn 2 was then read (with_earlier_turns, as a gateway
    reads a conversation) without the turn before it, a request nobody sends. Every row of that question from the
    empty turn on, every model's, is left out and the note says so; earlier turns stay (they are read whole)."""
    def blank(r: list[object], q: int, t: int, model: str | None = None) -> bool:
        return r[0] == q and r[1] == t and (model is None or r[2] == model)

    rows = [[*r[:4], "" if blank(r, 3, 1) or blank(r, 7, 2, "small") else r[4]] for r in long_rows(3, 40)]
    d = read_routing_csv(wide(tmp_path / "l.csv", rows, LONG))
    gone = {"question 3 turn 1", "question 3 turn 2", "question 3 turn 3", "question 7 turn 2", "question 7 turn 3"}
    assert len(d) == 120 - 5 and not gone & set(d.prompts) and "question 7 turn 1" in d.prompts
    # lines: header 1, then 6 rows a question (3 turns x 2 models): question 3 on lines 20-25, question 7 on 44-49
    assert d.notes[0] == ("10 of 240 rows left out: an empty 'turn_prompt' (lines 20, 21, 46) and 7 more of those "
                          "questions' rows from that turn on, which would be read without it (lines 22, 23, 24, 25, "
                          "47, ...)"), d.notes
    joined = with_earlier_turns(d)
    for (q, t), prompt in zip(d.turns or (), joined.prompts, strict=True):
        assert prompt.count("question") == t and prompt.endswith(f"question {q} turn {t}"), prompt
    # without question_id and turn nothing is read as a conversation: only the empty rows are left out
    flat = read_routing_csv(wide(tmp_path / "f.csv", [r[2:] for r in rows], LONG[2:]))
    assert flat.notes[0] == "3 of 240 rows left out: an empty 'turn_prompt' (lines 20, 21, 46)", flat.notes
    assert "question 3 turn 2" in flat.prompts


def test_a_file_whose_every_prompt_is_empty_is_refused_saying_so(tmp_path: Path) -> None:
    code, out = run("--data", str(wide(tmp_path / "e.csv", [["", 1, 0, 0], [" ", 0, 1, 0]])))
    assert code == 2 and one_error_line(out).endswith("e.csv: every row's 'prompt' is empty (2 rows)")


def test_the_share_counts_empty_prompts_not_their_follow_on_rows(tmp_path: Path) -> None:
    """The 5% rule counted rows, follow-on ones included: in a per-turn file one empty turn 1 leaves out 4 rows (both
    models' turns 1 and 2), so a 22-question held-out MT-Bench split (88 rows) with 2 empty turn-1 prompts (2 of 44
    prompts, 4.5%) was refused as '8 of 88 rows (9.1%)'. The share is of distinct prompts (a question's turn); the
    rows left out are said in the note."""
    def empty(r: list[object]) -> bool:
        return r[0] in (4, 15) and r[1] == 1

    rows = [[*r[:4], "" if empty(r) else r[4]] for r in long_rows(2, 22)]
    d = read_routing_csv(wide(tmp_path / "mt.csv", rows, LONG))
    assert len(d) == 44 - 4 and d.notes[0].startswith("8 of 88 rows left out: an empty 'turn_prompt' (lines 18, 19, "
                                                       "62, 63) and 4 more of those questions' rows"), d.notes
    three = [[*r[:4], "" if empty(r) or (r[0] == 9 and r[1] == 2) else r[4]] for r in long_rows(2, 22)]
    with pytest.raises(InvalidRequest, match=r"mt3\.csv: 3 of 44 prompts \(6\.8%\) are empty; 10 of 88 rows would "
                                             r"be left out: an empty 'turn_prompt'"):
        read_routing_csv(wide(tmp_path / "mt3.csv", three, LONG))
