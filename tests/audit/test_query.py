"""`aigrid audit query` and `aigrid audit summary` on a real signed log: the records a question selects, what
they add up to (cost at a spec's prices), and a tampered log that is not read as if it were sound."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from aigrid.audit.log import AuditLog
from aigrid.audit.query import Record, Selection, Totals, parse_when, records
from aigrid.audit.record import AuditRecord
from aigrid.cli import app
from tests.audit.signed_log import KEY, tamper
from tests.audit.test_verify_attacks import public_pem

T0 = 1_796_000_000.0  # 2026-11-30T...Z
DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


def rec(i: int, tenant: str, endpoint: str | None, jurisdiction: str, outcome: str = "ok",
        firewall: tuple[str, ...] = (), pt: int = 1000, ct: int = 500) -> AuditRecord:
    chosen = {"endpoint": endpoint, "site": endpoint.split("-")[0], "jurisdiction": jurisdiction} if endpoint \
        else None
    return AuditRecord(ts=T0 + i * 3600, request_id=f"req-{i}", tenant=tenant, key_id=f"key-{tenant}",
                       model="smollm2-135m", decision={"chosen": chosen}, outcome=outcome,
                       firewall=[{"check": "injection", "action": a} for a in firewall],
                       prompt_tokens=pt if endpoint else 0, completion_tokens=ct if endpoint else 0,
                       extra={"route": "/v1/chat/completions"})


RECORDS = [
    rec(0, "bank", "fra-smollm2", "EU"),
    rec(1, "bank", "fra-smollm2", "EU", firewall=("flagged",)),
    rec(2, "bank", None, "", outcome="error:prompt_blocked", firewall=("blocked",)),
    rec(3, "shop", "iad-smollm2", "US"),
    rec(4, "shop", "nrt-smollm2", "JP", outcome="client_closed", pt=200, ct=10),
    rec(5, "shop", "elsewhere-1", "US"),
]


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run where no default public key (.aigrid/audit-signing.pub.pem) lies."""
    monkeypatch.chdir(tmp_path)


def write_log(path: Path, written: list[AuditRecord], checkpoint_every: int) -> Path:
    """A real signed log at `path` holding `written`, written by the audit writer, with its public key beside it."""

    async def write() -> None:
        audit = AuditLog(path, KEY, checkpoint_every=checkpoint_every)
        await audit.start()
        for r in written:
            await audit.append(r)
        await audit.stop()

    asyncio.run(write())
    public_pem(path.parent / "audit.pub.pem")
    return path


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return write_log(tmp_path / "audit.db", RECORDS, checkpoint_every=2)


def cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_a_summary_adds_up_requests_tokens_blocks_errors_and_cost_at_the_specs_prices(log: Path) -> None:
    code, out, err = cli("audit", "summary", str(log), "--by", "tenant", "--spec", str(DEMO), "--format", "json",
                         "--public-key", str(log.parent / "audit.pub.pem"))
    assert code == 0, err
    rows = {r["tenant"]: r for r in json.loads(out)}
    prices = {e["id"]: (e.get("price_in_per_mtok", 0.0), e.get("price_out_per_mtok", 0.0))
              for e in yaml.safe_load(DEMO.read_text())["endpoints"]}
    fra, iad, nrt = prices["fra-smollm2"], prices["iad-smollm2"], prices["nrt-smollm2"]
    assert rows["bank"] == {"tenant": "bank", "requests": 3, "prompt_tokens": 2000, "completion_tokens": 1000,
                            "blocked": 1, "errors": 1,
                            "cost_usd": pytest.approx(2 * (1000 * fra[0] + 500 * fra[1]) / 1e6, abs=1e-6)}
    shop_cost = (1000 * iad[0] + 500 * iad[1] + 200 * nrt[0] + 10 * nrt[1]) / 1e6  # elsewhere-1 is not priced
    assert rows["shop"]["cost_usd"] == pytest.approx(shop_cost, abs=1e-6)
    assert (rows["shop"]["requests"], rows["shop"]["errors"], rows["shop"]["blocked"]) == (3, 1, 0)
    assert "verified: 6 records" in err
    assert "1 request carries no recorded cost and was served" in " ".join(err.split())


def test_residency_by_jurisdiction_and_a_csv_an_auditor_can_load(log: Path) -> None:
    code, out, _ = cli("audit", "summary", str(log), "--by", "tenant,jurisdiction", "--format", "csv",
                       "--tenant", "shop")
    assert code == 0
    rows = list(csv.DictReader(io.StringIO(out)))
    assert {(r["jurisdiction"], r["requests"]) for r in rows} == {("US", "2"), ("JP", "1")}
    assert "cost_usd" not in rows[0]  # no spec: no prices


@pytest.mark.parametrize(("args", "seqs"), [
    (["--tenant", "bank"], [1, 2, 3]),
    (["--firewall", "blocked"], [3]),
    (["--firewall", "any"], [2, 3]),
    (["--outcome", "error:*"], [3]),
    (["--outcome", "ok", "--jurisdiction", "US"], [4, 6]),
    (["--site", "nrt"], [5]),
    (["--request-id", "req-4"], [5]),
    (["--since", datetime.fromtimestamp(T0 + 3 * 3600, UTC).isoformat(), "--until",
      datetime.fromtimestamp(T0 + 5 * 3600, UTC).strftime("%Y-%m-%dT%H:%M:%S")], [4, 5]),
    (["--limit", "2"], [1, 2]),
    (["--limit", "2", "--last"], [5, 6]),
])
def test_query_selects_the_records_a_question_asks_for(log: Path, args: list[str], seqs: list[int]) -> None:
    code, out, err = cli("audit", "query", str(log), "--format", "jsonl", *args)
    assert code == 0, err
    found = [json.loads(line) for line in out.splitlines()]
    assert [r["seq"] for r in found] == seqs
    assert "not verified" in err  # no key given and none at the default path


def test_a_tampered_log_is_not_read_as_if_it_were_sound(log: Path) -> None:
    body = json.dumps({**json.loads(RECORDS[3].body()), "tenant": "bank"}, sort_keys=True, separators=(",", ":"))
    tamper(log, f"UPDATE audit_records SET body = '{body}' WHERE seq = 4")
    key = str(log.parent / "audit.pub.pem")
    code, out, err = cli("audit", "query", str(log), "--tenant", "bank", "--public-key", key)
    assert code == 1 and out == ""
    assert "fails verification (first bad record 4)" in err and "--unverified" in err
    code, out, err = cli("audit", "query", str(log), "--tenant", "bank", "--public-key", key, "--unverified",
                         "--format", "jsonl")
    assert code == 0 and [json.loads(line)["seq"] for line in out.splitlines()] == [1, 2, 3, 4]
    assert "reading it anyway" in err


@pytest.mark.parametrize(("args", "says"), [
    (["--since", "yesterday"], "--since"),
    (["--until", "2026-13-01"], "--until"),
    (["--firewall", "maybe"], "--firewall"),
    (["--format", "xml"], "--format"),
])
def test_bad_options_are_named(log: Path, args: list[str], says: str) -> None:
    code, _, err = cli("audit", "query", str(log), *args)
    assert code == 2 and says in err and "Traceback" not in err


def test_summary_refuses_an_unknown_group_and_a_file_that_is_not_a_log(log: Path, tmp_path: Path) -> None:
    code, _, err = cli("audit", "summary", str(log), "--by", "tenant,colour")
    assert code == 2 and "--by" in err
    other = tmp_path / "other.db"
    other.write_bytes(b"not a database at all" * 100)
    code, out, err = cli("audit", "summary", str(other))
    assert code == 2 and out == "" and "cannot read" in err and "Traceback" not in err


@pytest.mark.parametrize("command", ["query", "summary"])
def test_a_missing_log_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    """Without a public key at hand, a mistyped database path printed "note: X was not verified (no public key ...)"
    before "error: cannot read X: no audit database at X" (7 Dec 2026, thirty-third session): only the error now."""
    monkeypatch.chdir(tmp_path)  # no .aigrid/audit-signing.pub.pem here
    code, out, err = cli("audit", command, "nosuch.db")
    assert code == 2 and out == "" and err.strip() == "error: cannot read nosuch.db: no audit database at nosuch.db", err


def test_times_are_iso_in_utc_or_a_span_back_from_now() -> None:
    now = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert parse_when("2026-12-04") == datetime(2026, 12, 4, tzinfo=UTC).timestamp()
    assert parse_when("2026-12-04T13:00+01:00") == now.timestamp()
    assert parse_when("90m", now) == now.timestamp() - 5400
    assert parse_when("7d", now) == now.timestamp() - 7 * 86_400
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_when("last tuesday")


def test_a_body_that_is_not_a_record_is_counted_and_skipped(log: Path) -> None:
    tamper(log, "UPDATE audit_records SET body = 'not json' WHERE seq = 2")
    from aigrid.audit.query import Reading

    reading = Reading()
    assert [r.seq for r in records(log, Selection(), reading)] == [1, 3, 4, 5, 6]
    assert reading.unreadable == [2] and reading.read == 6


def test_the_default_key_verifies_and_the_table_has_a_total_row(log: Path, tmp_path: Path) -> None:
    (tmp_path / ".aigrid").mkdir()
    public_pem(tmp_path / ".aigrid" / "audit-signing.pub.pem")
    code, out, err = cli("audit", "summary", str(log), "--by", "tenant", "--spec", str(DEMO))
    assert code == 0 and "verified: 6 records" in err
    lines = out.splitlines()
    assert lines[0].split() == ["tenant", "requests", "prompt_tokens", "completion_tokens", "blocked", "errors",
                                "cost_usd"]
    assert [line.split()[:2] for line in lines[1:]] == [["bank", "3"], ["shop", "3"], ["total", "6"]]


def log_of_models(path: Path, models: list[str], *, far_future: bool = False) -> Path:
    """A log at `path` of one bank record a model name in `models`; `far_future`: one more, dated 1e20."""
    async def write() -> None:
        audit = AuditLog(path, KEY, checkpoint_every=100)
        await audit.start()
        for i, model in enumerate(models):
            await audit.append(dataclasses.replace(rec(i, "bank", "fra-smollm2", "EU"), model=model))
        if far_future:
            await audit.append(dataclasses.replace(rec(9, "bank", "fra-smollm2", "EU"), ts=1e20))
        await audit.stop()

    asyncio.run(write())
    return path


def hostile_log(tmp_path: Path) -> Path:
    """A log whose records carry what clients choose (a model name, a batch's custom_id in the route) and what
    a forger could append: markup, an escape sequence, a spreadsheet formula, a time beyond any calendar."""
    values = ["[/x]", "\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\", '=HYPERLINK("http://e")', "[red]x"]
    return log_of_models(tmp_path / "hostile.db", values, far_future=True)


def test_values_from_the_log_are_text_never_markup_formulas_or_escapes(tmp_path: Path) -> None:
    path = hostile_log(tmp_path)
    for args in (["audit", "query", str(path)], ["audit", "summary", str(path), "--by", "model,day"]):
        code, out, err = cli(*args)
        assert code == 0, err
        assert "[/x]" in out and "[red]x" in out and "\x1b" not in out, out
        assert "\\x1b]8;;http://evil" in out
    code, out, _ = cli("audit", "query", str(path), "--format", "csv")
    assert code == 0
    models = [row["model"] for row in csv.DictReader(io.StringIO(out))]
    assert "'=HYPERLINK(\"http://e\")" in models and not any(m.startswith("=") for m in models)
    code, out, _ = cli("audit", "summary", str(path), "--by", "model", "--format", "csv")
    assert code == 0 and not any(line.startswith("=") for line in out.splitlines())


def test_a_csv_holds_no_formula_whatever_the_separator_and_json_no_raw_control(tmp_path: Path) -> None:
    models = ["x;=1+1", "y\t=2+2", "z\n@SUM(1)", "w\x9b2J\u202erev\x7f"]
    path = log_of_models(tmp_path / "audit.db", models)
    for args in (["audit", "query", str(path), "--format", "csv"],
                 ["audit", "summary", str(path), "--by", "model", "--format", "csv"]):
        code, out, _ = cli(*args)
        assert code == 0
        for separator in (",", ";", "\t"):  # a reader that takes the file's quotes, or one that splits at its own
            cells = [c for row in csv.reader(io.StringIO(out), delimiter=separator) for c in row]
            assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], (separator, cells)
            split = [c for line in out.splitlines() for c in line.split(separator)]
            assert not [c for c in split if c.lstrip('"')[:1] in ("=", "+", "-", "@")], (separator, split)
        # the numbers stay numbers (unquoted), the text is quoted
        rows = list(csv.reader(io.StringIO(out), quoting=csv.QUOTE_NONNUMERIC))
        number = rows[0].index("prompt_tokens" if args[1] == "query" else "requests")
        assert len(rows) == 5 and all(isinstance(r[number], float) and r[number] >= 1 for r in rows[1:]), rows
    code, out, _ = cli("audit", "query", str(path), "--format", "jsonl")
    assert code == 0 and all(line.isprintable() for line in out.splitlines()), repr(out)
    assert [json.loads(line)["model"] for line in out.splitlines()] == models
    code, out, _ = cli("audit", "summary", str(path), "--by", "model", "--format", "json")
    assert code == 0 and all(line.isprintable() for line in out.splitlines()), repr(out)
    assert sorted(r["model"] for r in json.loads(out)) == sorted(models)


def test_a_time_beyond_any_calendar_is_blank_not_a_traceback(tmp_path: Path) -> None:
    path = hostile_log(tmp_path)
    code, out, err = cli("audit", "query", str(path), "--format", "csv", "--request-id", "req-9")
    assert code == 0 and "Traceback" not in err
    (row,) = csv.DictReader(io.StringIO(out))
    assert row["time"] == ""
    code, _, err = cli("audit", "query", str(path), "--since", "99999999d")
    assert code == 2 and "--since" in err and "Traceback" not in err


def test_a_table_shows_a_bounded_number_of_records(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aigrid.audit import query_cli

    monkeypatch.setattr(query_cli, "TABLE_ROWS", 2)
    code, out, err = cli("audit", "query", str(log))
    assert code == 0 and len(out.splitlines()) == 3 and "the first 2 matching records" in err
    code, out, _ = cli("audit", "query", str(log), "--format", "csv")
    assert len(out.splitlines()) == 7  # CSV streams them all


def test_records_written_after_the_verification_are_not_shown_under_its_banner(log: Path) -> None:
    assert [r.seq for r in records(log, Selection(), through=4)] == [1, 2, 3, 4]


def test_a_log_of_a_newer_format_is_said_so_by_verify_and_query(log: Path) -> None:
    import sqlite3

    from aigrid.audit.store import FORMAT

    db = sqlite3.connect(log)
    db.execute(f"PRAGMA user_version = {FORMAT + 1}")
    db.commit()
    db.close()
    key = str(log.parent / "audit.pub.pem")
    for args in (["audit", "verify", str(log), "--public-key", key], ["audit", "query", str(log)],
                 ["audit", "summary", str(log), "--public-key", key]):
        code, out, err = cli(*args)
        assert code == 2 and "newer aigrid" in out + err and "Traceback" not in out + err, (args, out, err)


def test_a_recorded_cost_is_the_cost_as_charged_whatever_the_spec_says_now(tmp_path: Path) -> None:
    """Records carry what the gateway charged (`extra.cost_usd`, at the prices of that day): the summary adds
    those up without a spec, and prefers them to a spec's prices of today."""
    path = tmp_path / "charged.db"

    async def write() -> None:
        audit = AuditLog(path, KEY, checkpoint_every=100)
        await audit.start()
        for i, cost in enumerate((0.25, 0.5)):
            r = rec(i, "bank", "fra-smollm2", "EU")
            await audit.append(dataclasses.replace(r, extra={**r.extra, "cost_usd": cost}))
        await audit.append(rec(2, "bank", "fra-smollm2", "EU"))  # written before costs were recorded
        await audit.stop()

    asyncio.run(write())
    code, out, err = cli("audit", "summary", str(path), "--format", "json")
    assert code == 0 and json.loads(out)[0]["cost_usd"] == 0.75
    assert "1 request carries no recorded cost and was served" in " ".join(err.split()), err
    code, out, _ = cli("audit", "summary", str(path), "--format", "json", "--spec", str(DEMO))
    prices = {e["id"]: (e.get("price_in_per_mtok", 0.0), e.get("price_out_per_mtok", 0.0))
              for e in yaml.safe_load(DEMO.read_text())["endpoints"]}
    fra = prices["fra-smollm2"]
    assert json.loads(out)[0]["cost_usd"] == pytest.approx(0.75 + (1000 * fra[0] + 500 * fra[1]) / 1e6, abs=1e-6)


def test_the_writers_own_records_are_not_counted_as_requests(tmp_path: Path) -> None:
    """A worker's lost requests (Hub.worker_lost) are a record of the writer's own, route `audit`: the summary
    counted it as a request and an error of a tenant named "-"; now it says how many such records it left out,
    and query lists them by their outcome."""
    path = tmp_path / "audit.db"
    lost = AuditRecord(ts=T0 + 9 * 3600, request_id="", tenant="-", key_id="-", model="", outcome="audit:worker_lost",
                       extra={"route": "audit", "in_flight": 2, "tenants": {"bank": 2}})

    async def write() -> None:
        audit = AuditLog(path, KEY, checkpoint_every=2)
        await audit.start()
        for r in [*RECORDS, lost]:
            await audit.append(r)
        await audit.stop()

    asyncio.run(write())
    public_pem(tmp_path / "audit.pub.pem")
    key = ("--public-key", str(tmp_path / "audit.pub.pem"))
    code, out, err = cli("audit", "summary", str(path), "--by", "tenant", "--format", "json", *key)
    assert code == 0, err
    assert {r["tenant"] for r in json.loads(out)} == {"bank", "shop"}
    assert sum(r["requests"] for r in json.loads(out)) == len(RECORDS)
    assert "1 record is the audit writer's own" in " ".join(err.split()), err
    code, out, err = cli("audit", "query", str(path), "--outcome", "audit:*", "--format", "jsonl", *key)
    assert code == 0, err
    assert [json.loads(line)["extra"]["in_flight"] for line in out.splitlines()] == [2]


def test_a_target_cut_by_its_clients_steer_is_no_error_in_a_summary() -> None:
    totals = Totals()
    for i, outcome in enumerate(["ok", "steered", "client_closed", "error:upstream_failed"]):
        totals.add(Record(i, {"outcome": outcome, "tenant": "shop"}), None)
    assert (totals.requests, totals.errors) == (4, 2)


@pytest.mark.parametrize(("seqs", "says"), [
    ("2", "note: 1 record could not be read as an audit record and was skipped (2)"),
    ("2, 3", "note: 2 records could not be read as audit records and were skipped (2, 3)")])
def test_one_unreadable_record_is_noted_in_the_singular(log: Path, seqs: str, says: str) -> None:
    """The note's words agree with its count (cli_error.agreeing, one helper for every such line)."""
    tamper(log, f"UPDATE audit_records SET body = 'not json' WHERE seq IN ({seqs})")
    for command in ("query", "summary"):
        code, _, err = cli("audit", command, str(log), "--unverified")
        assert code == 0 and says in " ".join(err.split()), err


def test_a_loops_stop_is_kept_in_the_chain_shown_grouped_and_absent_from_older_records(tmp_path: Path) -> None:
    """`extra.loop_stop` (brief AUDSTOP, thirty-seventh session): why a tool loop ended, an `ok` loop cut short told
    from one that answered. `query` shows it, `summary --by loop_stop` groups by it, a record written before it (none)
    still verifies and reads "", and changing it breaks the chain."""
    written = [rec(0, "bank", "fra-smollm2", "EU"),  # as written before the field
               dataclasses.replace(rec(1, "bank", "fra-smollm2", "EU"),
                                   extra={"route": "/v1/chat/completions", "loop_stop": "revoked"}),
               dataclasses.replace(rec(2, "shop", "iad-smollm2", "US"),
                                   extra={"route": "/v1/responses", "loop_stop": "answer"})]
    log = write_log(tmp_path / "stops.db", written, checkpoint_every=2)
    key = str(log.parent / "audit.pub.pem")
    code, out, err = cli("audit", "verify", str(log), "--public-key", key)
    assert code == 0, out + err
    code, out, err = cli("audit", "query", str(log), "--public-key", key, "--format", "csv")
    assert code == 0, err
    assert [(r["seq"], r["outcome"], r["loop_stop"]) for r in csv.DictReader(io.StringIO(out))] == [
        ("1", "ok", ""), ("2", "ok", "revoked"), ("3", "ok", "answer")]
    code, out, _ = cli("audit", "summary", str(log), "--public-key", key, "--by", "loop_stop", "--format", "csv")
    assert code == 0
    assert {(r["loop_stop"], r["requests"]) for r in csv.DictReader(io.StringIO(out))} == {
        ("", "1"), ("revoked", "1"), ("answer", "1")}
    body = json.dumps({**json.loads(written[1].body()), "extra": {"route": "/v1/chat/completions",
                                                                  "loop_stop": "answer"}},
                      sort_keys=True, separators=(",", ":"))
    tamper(log, f"UPDATE audit_records SET body = '{body}' WHERE seq = 2")  # a cut loop passed off as answered
    code, out, err = cli("audit", "verify", str(log), "--public-key", key)
    assert code != 0 and "2" in out + err, out + err
