"""`aigrid bench --mode trace` on traces of other sources (aigrid.traces): BurstGPT's CSV, Azure 2024's time
zone, Mooncake's JSON Lines, a lower-case header, unsorted rows; and a broken file is refused with its file,
line and column, before any request is sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from aigrid.bench import workload
from aigrid.cli import app

NOWHERE = "http://127.0.0.1:1/v1"
AZURE = "TIMESTAMP,ContextTokens,GeneratedTokens\n"


def plans(path: Path, count: int = 100, speedup: float = 1.0) -> list[workload.Plan]:
    return workload.trace(path, speedup=speedup, count=count, max_prompt_tokens=4096, max_output_tokens=1024)


def test_burstgpt_csv_is_replayed_with_its_own_columns(tmp_path: Path) -> None:
    f = tmp_path / "BurstGPT_1.csv"
    f.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type\n"
                 "5,ChatGPT,472,18,490,Conversation log\n"
                 "5,GPT-4,1087,0,1087,API log\n"       # same second; a failed request: 0 output tokens
                 "7.5,ChatGPT,31,260,291,Conversation log\n")
    got = plans(f, speedup=0.5)
    assert [(p.at, p.prompt_tokens, p.output_tokens) for p in got] == [
        (0.0, 472, 18), (0.0, 1087, 1), (5.0, 31, 260)]


def test_azure_2024_times_with_a_time_zone_and_seven_digits(tmp_path: Path) -> None:
    f = tmp_path / "AzureLLMInferenceTrace_code_1week.csv"
    f.write_text(AZURE + "2024-05-10 00:00:00.0099300+00:00,4808,10\n2024-05-10 00:00:01.5099300+00:00,3180,8\n")
    assert [p.at for p in plans(f)] == pytest.approx([0.0, 1.5])


def test_mooncake_jsonl_times_are_milliseconds(tmp_path: Path) -> None:
    f = tmp_path / "mooncake_trace.jsonl"
    f.write_text("\n".join(json.dumps({"timestamp": t, "input_length": n, "output_length": 7, "hash_ids": [1, 2]})
                           for t, n in ((0, 3955), (250, 12), (1250, 512))) + "\n")
    assert [(p.at, p.prompt_tokens) for p in plans(f)] == [(0.0, 3955), (0.25, 12), (1.25, 512)]


def test_unsorted_rows_are_replayed_in_time_order(tmp_path: Path) -> None:
    """They were sent in file order, some planned before the start (negative times)."""
    f = tmp_path / "t.csv"
    f.write_text("timestamp,contexttokens,generatedtokens,extra\n3.0,30,3,x\n1.0,10,1,y\n2.0,20,2,z\n")
    got = plans(f)
    assert [(p.at, p.prompt_tokens) for p in got] == [(0.0, 10), (1.0, 20), (2.0, 30)]


@pytest.mark.parametrize(("body", "named"), [
    ("", "is empty"),
    (AZURE, "no requests"),
    ("TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.1,100\n", "no output column"),
    (AZURE + "2023-11-16 18:15:46.1,100,10\n2023-11-16 18:15:47.1,-5,10\n", "line 3, column ContextTokens"),
    (AZURE + "2023-11-16 18:15:46.1,100,nan\n", "line 2, column GeneratedTokens"),
    (AZURE + "2023-11-16 18:15:46.1,100,10\nyesterday,100,10\n", "line 3, column TIMESTAMP"),
    (AZURE + "2023-11-16 18:15:46.1,100,10\n2023-11-16 18:15:47.1,100\n", "line 3"),  # was a TypeError traceback
])
def test_a_broken_trace_is_refused_with_file_line_and_column(tmp_path: Path, body: str, named: str) -> None:
    f = tmp_path / "bad.csv"
    f.write_text(body)
    r = CliRunner().invoke(app, ["bench", NOWHERE, "--model", "m", "--quiet", "--mode", "trace", "--trace", str(f)])
    assert r.exit_code == 2, r.output
    assert str(f) in r.output.replace("\n", "") and named in r.output.replace("\n", " "), r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), r.exception
    assert "ok," not in r.output


def test_a_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    f = tmp_path / "latin1.csv"
    f.write_bytes(AZURE.encode() + b"2023-11-16 18:15:46.1,100,10\n\xe9t\xe9,1,1\n")
    with pytest.raises(ValueError, match="latin1.csv, line 3: byte 0xe9 is not UTF-8"):
        plans(f)
