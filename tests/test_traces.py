"""aigrid.traces: the one reader of request traces (bench, simulator, planner)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pytest

from aigrid.traces import TraceFileError, read_trace


def write(tmp_path: Path, body: str, name: str = "t.csv") -> Path:
    f = tmp_path / name
    f.write_text(body)
    return f


def test_rows_come_back_in_time_order_stably(tmp_path: Path) -> None:
    f = write(tmp_path, "Time,Input Length,Output-Length\n2,20,2\n1,10,1\n2,21,3\n1,11,0\n")
    t = read_trace(f)
    assert t.t.tolist() == [1, 1, 2, 2] and t.prompt.tolist() == [10, 11, 20, 21]
    assert t.output.tolist() == [1, 0, 2, 3] and not t.was_sorted
    assert t.columns == ("Time", "Input Length", "Output-Length")


def test_iso_and_numeric_times_give_the_same_gaps(tmp_path: Path) -> None:
    iso = read_trace(write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.6805900,1,1\n"
                           "2023-11-16T18:15:48.1805900,1,1\n", "iso.csv"))
    ms = read_trace(write(tmp_path, "timestamp_ms,prompt_tokens,output_tokens\n1000,1,1\n2500,1,1\n", "ms.csv"))
    assert np.diff(iso.t) == pytest.approx([1.5]) and np.diff(ms.t) == pytest.approx([1.5])


@pytest.mark.parametrize(("body", "named"), [
    ("time,prompt_tokens,input_tokens,output_tokens\n1,2,3,4\n", "several prompt columns"),
    ("time,prompt_tokens,output_tokens\n1,2,3\n2023-11-16 18:15:46,2,3\n", "line 3, column time"),
    ("time,prompt_tokens,output_tokens\n1,2,3\ninf,2,3\n", "line 3, column time"),
    ("time,prompt_tokens,output_tokens\n1,2,3\n2,2.5,3\n", "line 3, column prompt_tokens"),
    # a quoted field over two lines: the line counted is the file's, not the record's
    ('time,note,prompt_tokens,output_tokens\n1,"a\nb",2,3\n2,x,,3\n', "line 4, column prompt_tokens"),
    ('{"timestamp": 1, "input_length": 2, "output_length": 3}\n{"timestamp": 2\n', "line 2: not valid JSON"),
    ('{"timestamp": 1, "input_length": 2, "output_length": 3}\n{"timestamp": 2, "input_length": 2}\n',
     "line 2: no 'output_length'"),
    ('{"timestamp": 1, "input_length": -2, "output_length": 3}\n', "line 1, column input_length"),
    # too big: an OverflowError traceback in bench, sim and plan (numpy's int64, or no float for 10**400)
    ("time,prompt_tokens,output_tokens\n1,2,3\n2,1e19,3\n", "line 3, column prompt_tokens: '1e19' tokens is "
                                                            "more than a request may count (at most 2147483647)"),
    ("time,prompt_tokens,output_tokens\n1,2,3\n2,2,2147483648\n", "line 3, column output_tokens"),
    ('{"timestamp": 1, "input_length": 1' + "0" * 400 + ', "output_length": 3}\n',
     "line 1, column input_length: 10000000000000000000...00000000 (401 characters) tokens is more than"),
    # an unquoted comma in a count: '1,024' read as 1 prompt token and 024 output tokens, the row's last cell dropped
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00,1,024,10\n",
     "line 2: 4 fields, the header has 3"),
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00,5,100,10\n", "line 2: 4 fields"),
    ('{"timestamp": 1' + "0" * 400 + ', "input_length": 1, "output_length": 3}\n',
     "line 1, column timestamp: 10000000000000000000...00000000 (401 characters) is not a time"),
])
def test_broken_rows_are_named(tmp_path: Path, body: str, named: str) -> None:
    f = write(tmp_path, body)
    with pytest.raises(TraceFileError, match="t.csv") as e:
        read_trace(f)
    assert named in str(e.value), e.value


def test_a_missing_file_is_a_trace_error(tmp_path: Path) -> None:
    with pytest.raises(TraceFileError, match="nothere.csv: cannot read"):
        read_trace(tmp_path / "nothere.csv")


def test_a_token_count_up_to_the_simulators_int32_is_read(tmp_path: Path) -> None:
    t = read_trace(write(tmp_path, "time,prompt_tokens,output_tokens\n1,2147483647,0\n"))
    assert t.prompt.tolist() == [2**31 - 1]


def test_a_time_without_an_offset_is_utc_whatever_the_hosts_zone(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Naive times were read in the host's time zone: across a daylight-saving change the gap was an hour
    shorter in New York than in UTC (1 s instead of 3601 s here), so a replay differed between machines."""
    f = write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n2024-03-10 01:59:59,1,1\n2024-03-10 03:00:00,1,1\n"
                        "2024-03-10T03:00:01+00:00,1,1\n")
    for zone in ("America/New_York", "UTC"):
        monkeypatch.setenv("TZ", zone)
        time.tzset()
        t = read_trace(f)
        assert np.diff(t.t).tolist() == [3601.0, 1.0], zone
        assert t.t[0] == 1710035999.0
    monkeypatch.undo()
    time.tzset()


def test_a_trace_too_big_too_long_or_not_a_file_is_refused_by_name(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """/dev/zero as a trace was read whole (a MemoryError after 2.7 GB, or the machine's memory), a FIFO no one
    wrote to hung the command, and a trace had no bound on its rows (each about 300 bytes of Python objects)."""
    import aigrid.traces as traces

    with pytest.raises(TraceFileError, match="/dev/zero: cannot read: not a regular file"):
        read_trace("/dev/zero")
    monkeypatch.setattr(traces, "MAX_TRACE_ROWS", 3)
    with pytest.raises(TraceFileError, match=r"t.csv, line 5: more than 3 requests, the most a trace may hold"):
        read_trace(write(tmp_path, "time,prompt_tokens,output_tokens\n1,1,1\n2,1,1\n3,1,1\n4,1,1\n"))
    with pytest.raises(TraceFileError, match=r"t.jsonl, line 4: more than 3 requests"):
        read_trace(write(tmp_path, '{"time": 1, "prompt_tokens": 1, "output_tokens": 1}\n' * 4, "t.jsonl"))
    assert len(read_trace(write(tmp_path, "time,prompt_tokens,output_tokens\n1,1,1\n2,1,1\n3,1,1\n"))) == 3
    monkeypatch.setattr(traces, "MAX_TRACE_BYTES", 40)
    with pytest.raises(TraceFileError, match="larger than 0 MiB, the most a trace may be"):
        read_trace(write(tmp_path, "time,prompt_tokens,output_tokens\n1,1,1\n2,1,1\n3,1,1\n"))


def test_azure_2024_times_in_other_precisions_and_zone_suffixes_give_the_same_gaps(tmp_path: Path) -> None:
    """The 2024 traces' '+00:00', a 'Z' (either case, RFC 3339), 3, 7 or 9 fractional digits, and a trailing
    comma (an empty last cell) on every row."""
    body = ("TIMESTAMP,ContextTokens,GeneratedTokens\n2024-05-10 00:00:00.009930+00:00,1,1,\n"
            "2024-05-10t00:00:00.5099300z,2,2,\n2024-05-10T00:00:01.009930123Z,3,3,\n2024-05-10 02:00:01.51+02:00,4,4,\n")
    t = read_trace(write(tmp_path, body))
    assert np.diff(t.t) == pytest.approx([0.5, 0.5, 0.50007]) and t.prompt.tolist() == [1, 2, 3, 4]


def _epoch_ms_copy(tmp_path: Path, rows: int) -> tuple[Path, Path]:
    """The first rows of the shipped Azure conversation trace, and the same rows with TIMESTAMP as the number of
    epoch milliseconds (the held-out shape: Azure's columns, a numeric time)."""
    from datetime import UTC, datetime

    from aigrid.traces import trace_dir

    lines = (trace_dir() / "azure_llm_2023_conv.csv").read_text().splitlines()[:rows + 1]
    iso = write(tmp_path, "\n".join(lines) + "\n", "iso.csv")
    out = [lines[0]]
    for line in lines[1:]:
        when, prompt, output = line.split(",")
        t = datetime.fromisoformat(when[:26]).replace(tzinfo=UTC).timestamp()
        out.append(f"{round(t * 1000)},{prompt},{output}")
    return iso, write(tmp_path, "\n".join(out) + "\n", "epoch_ms.csv")


def test_an_azure_trace_with_epoch_millisecond_timestamps_keeps_its_gaps(tmp_path: Path) -> None:
    """TIMESTAMP as 1700158546681 was read as seconds: gaps 1000x too long (an hour's trace lasting 41 days)."""
    iso, ms = _epoch_ms_copy(tmp_path, 500)
    a, b = read_trace(iso), read_trace(ms)
    assert float(b.t[0]) == pytest.approx(1700158546.681, abs=1e-3)
    assert np.diff(b.t) == pytest.approx(np.diff(a.t), abs=1e-3)
    assert b.prompt.tolist() == a.prompt.tolist() and b.output.tolist() == a.output.tolist()
    # epoch seconds and relative seconds stay seconds
    secs = read_trace(write(tmp_path, "TIMESTAMP,ContextTokens,GeneratedTokens\n1700158546.5,1,1\n1700158548,1,1\n"))
    rel = read_trace(write(tmp_path, "Timestamp,Request tokens,Response tokens\n0,1,1\n86400,1,1\n", "rel.csv"))
    assert np.diff(secs.t).tolist() == [1.5] and np.diff(rel.t).tolist() == [86400.0]


@pytest.mark.parametrize(("body", "named"), [
    # one value as seconds, one as milliseconds: a column is one unit
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n1700158546,1,1\n1700158546681,1,1\n",
     "column TIMESTAMP: one column, two units: line 2 ('1700158546') reads as seconds, line 3"),
    # epoch microseconds
    ("TIMESTAMP,ContextTokens,GeneratedTokens\n1700158546681000,1,1\n1700158546682000,1,1\n",
     "column TIMESTAMP, line 2: '1700158546681000' is past the epoch milliseconds"),
])
def test_a_numeric_time_column_of_two_units_or_microseconds_is_refused(tmp_path: Path, body: str, named: str) -> None:
    with pytest.raises(TraceFileError, match=re.escape(named)):
        read_trace(write(tmp_path, body))
