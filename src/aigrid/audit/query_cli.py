"""`aigrid audit query` and `aigrid audit summary`: the audit log read for a question, after it is verified.

Both check the chain first when a public key is at hand (`--public-key`, or the default key file when it
exists): a log that fails verification is not read as if it were sound (exit 1, with verify's findings;
`--unverified` reads it anyway and says so). Without any key they read it and say that it was not verified.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Literal, TextIO

import orjson
import typer
from rich.console import Console
from rich.table import Table

from aigrid.audit.cli import public_key as read_public_key
from aigrid.audit.query import (
    FIREWALL_ACTIONS,
    FLAT_COLUMNS,
    GROUPS,
    Prices,
    Reading,
    Record,
    Selection,
    flat,
    parse_when,
    records,
    summarise,
)
from aigrid.audit.verify import verify
from aigrid.cli_error import agreeing, counted, print_error
from aigrid.errors import AigridError
from aigrid.printable import printable, printable_json, printable_text, spreadsheet_cell, spreadsheet_writer

DEFAULT_DB = Path(".aigrid/audit.db")
DEFAULT_KEY = Path(".aigrid/audit-signing.pub.pem")
TABLE_ROWS = 1000
"""The most records a table shows without --limit (a table is laid out whole, in memory)."""
WIDE = 240
"""Columns of a table printed to a file or a pipe (never cut to 80)."""

Db = Annotated[Path, typer.Argument(help="audit database (security.audit.path)")]
PublicKey = Annotated[list[Path] | None, typer.Option(
    help="Ed25519 public key(s) to verify the log with first (default: .aigrid/audit-signing.pub.pem when it "
         "exists)")]
Unverified = Annotated[bool, typer.Option("--unverified", help="read a log that fails verification anyway")]
Since = Annotated[str | None, typer.Option(help="from this time: ISO 8601 (UTC without an offset) or a span "
                                                "back from now (90m, 24h, 7d)")]
Until = Annotated[str | None, typer.Option(help="before this time (same forms as --since)")]
Tenant = Annotated[list[str] | None, typer.Option(help="only this tenant (repeat for several)")]
Key = Annotated[list[str] | None, typer.Option("--key", help="only this key id (repeat for several)")]
Model = Annotated[list[str] | None, typer.Option(help="only this model as asked (repeat for several)")]
Site = Annotated[list[str] | None, typer.Option(help="only requests served at this site (repeat for several)")]
Jurisdiction = Annotated[list[str] | None, typer.Option(
    help="only requests served in this jurisdiction (repeat for several)")]
Outcome = Annotated[list[str] | None, typer.Option(
    help="only this outcome, a shell pattern: ok, 'error:*', client_closed (repeat for several)")]
RequestId = Annotated[str | None, typer.Option(help="only the record of this request id (x-request-id)")]
Firewall = Annotated[str | None, typer.Option(
    help=f"only records with a firewall verdict that did this: {', '.join(FIREWALL_ACTIONS)}")]


def _when(text: str | None, option: str) -> float | None:
    try:
        return None if text is None else parse_when(text)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint=option) from None


def _selection(since: str | None, until: str | None, tenant: list[str] | None, key: list[str] | None,
               model: list[str] | None, site: list[str] | None, jurisdiction: list[str] | None,
               outcome: list[str] | None, request_id: str | None, firewall: str | None) -> Selection:
    if firewall is not None and firewall not in FIREWALL_ACTIONS:
        raise typer.BadParameter(f"{firewall!r}: one of {', '.join(FIREWALL_ACTIONS)}", param_hint="--firewall")
    return Selection(since=_when(since, "--since"), until=_when(until, "--until"),
                     tenants=frozenset(tenant or ()), keys=frozenset(key or ()), models=frozenset(model or ()),
                     sites=frozenset(site or ()), jurisdictions=frozenset(jurisdiction or ()),
                     outcomes=tuple(outcome or ()), request_id=request_id, firewall=firewall)


def _checked(db: Path, public_key: list[Path] | None, unverified: bool, err: Console) -> int | None:
    """Verify the log when a key is at hand; exit 1 (tampered) or 2 (unusable input) unless it is sound.
    Returns the records the verification covered (None: not verified, or read anyway), so that records the
    live log gains meanwhile are not shown under its banner."""
    keys = public_key or ([DEFAULT_KEY] if DEFAULT_KEY.exists() else [])
    if not keys and not db.exists():  # the read says there is no database: a note that it was not verified was noise
        return None
    if not keys:
        err.print(f"note: {db} was not verified (no public key: give --public-key, or run aigrid audit verify)",
                  highlight=False, soft_wrap=True, markup=False)
        return None
    try:
        loaded = [read_public_key(p) for p in keys]
    except ValueError as e:  # said it was the log it could not read
        print_error(err, e)
        raise typer.Exit(2) from None
    try:
        report = verify(db, loaded)
    except (OSError, ValueError, sqlite3.Error) as e:
        print_error(err, f"cannot read {db}: {printable(str(e))}")
        raise typer.Exit(2) from None
    if report.ok:
        err.print(f"verified: {counted(report.records, 'record')}, the chain intact, the last signed checkpoint at "
                  f"record {report.last_checkpoint_seq} ({counted(report.unsigned_tail, 'record')} after it); records "
                  "written since are not read", highlight=False, soft_wrap=True, markup=False)
        return report.records
    print_error(err, f"{db} fails verification (first bad record {report.first_bad_seq}); run aigrid audit "
                     "verify for the findings" + ("; reading it anyway (--unverified)" if unverified else
                                                   ", or give --unverified to read it anyway"))
    for problem in report.problems[:5]:
        err.print(f"  - {problem}", highlight=False, soft_wrap=True, markup=False)
    if not unverified:
        raise typer.Exit(1)
    return None


def _read(db: Path, selection: Selection, reading: Reading, err: Console,
          through: int | None = None) -> Iterator[Record]:
    try:
        yield from records(db, selection, reading, through)
    except (OSError, ValueError, sqlite3.Error) as e:  # NotAnAuditLog is a ValueError
        print_error(err, f"cannot read {db}: {printable(str(e))}")
        raise typer.Exit(2) from None


def _unreadable(reading: Reading, err: Console) -> None:
    if reading.unreadable:
        shown = ", ".join(map(str, reading.unreadable[:10])) + (" ..." if len(reading.unreadable) > 10 else "")
        n = len(reading.unreadable)
        err.print(f"note: {counted(n, 'record')} could not be read as "
                  f"{agreeing(n, 'an audit record and was', 'audit records and were')} skipped "
                  f"({shown}); aigrid audit verify names them", highlight=False, soft_wrap=True, markup=False)


def _console(out: TextIO) -> Console:
    console = Console(file=out)
    return console if console.is_terminal else Console(file=out, width=WIDE)


def query_command(db: Db = DEFAULT_DB, since: Since = None, until: Until = None, tenant: Tenant = None,
                  key: Key = None, model: Model = None, site: Site = None, jurisdiction: Jurisdiction = None,
                  outcome: Outcome = None, request_id: RequestId = None, firewall: Firewall = None,
                  limit: Annotated[int | None, typer.Option(min=1, help="at most this many records (the last "
                                                                       "ones, with --last)")] = None,
                  last: Annotated[bool, typer.Option("--last", help="with --limit: the latest records, "
                                                                   "not the first")] = False,
                  fmt: Annotated[Literal["table", "jsonl", "csv"], typer.Option(
                      "--format", help="table, jsonl (each record as stored, with its seq) or csv")] = "table",
                  public_key: PublicKey = None, unverified: Unverified = False) -> None:
    """The records that answer a question: who sent what, where it was served, what the firewall did."""
    err = Console(stderr=True)
    selection = _selection(since, until, tenant, key, model, site, jurisdiction, outcome, request_id, firewall)
    through = _checked(db, public_key, unverified, err)
    reading = Reading()
    found = _read(db, selection, reading, err, through)
    if limit is not None:
        found = iter(_last(found, limit) if last else _first(found, limit))
    elif fmt == "table":  # a table is laid out whole: bounded (CSV and JSONL stream any number)
        found = iter(_first(found, TABLE_ROWS + 1))
    out = sys.stdout
    shown = 0
    if fmt == "jsonl":
        for rec in found:
            out.write(printable_json(orjson.dumps({"seq": rec.seq, **rec.body}).decode()) + "\n")
            shown += 1
    elif fmt == "csv":
        writer = spreadsheet_writer(out, lineterminator="\n")
        writer.writerow(FLAT_COLUMNS)
        for rec in found:
            writer.writerow([spreadsheet_cell(v) for v in flat(rec).values()])
            shown += 1
    else:
        table = Table(*FLAT_COLUMNS, box=None, pad_edge=False)
        cut = False
        for rec in found:
            if shown == TABLE_ROWS and limit is None:
                cut = True
                break
            table.add_row(*(printable_text(v) for v in flat(rec).values()))
            shown += 1
        if shown:
            _console(out).print(table, soft_wrap=True)
        if cut:
            err.print(f"note: the first {TABLE_ROWS} matching records; give --limit N, or --format csv or jsonl "
                      "for all of them", highlight=False, soft_wrap=True, markup=False)
    _unreadable(reading, err)
    err.print(f"{shown} of {counted(reading.read, 'record')}", highlight=False, markup=False)


def _first(found: Iterator[Record], limit: int) -> list[Record]:
    taken: list[Record] = []
    for rec in found:
        taken.append(rec)
        if len(taken) == limit:
            break
    return taken


def _last(found: Iterator[Record], limit: int) -> list[Record]:
    from collections import deque

    return list(deque(found, maxlen=limit))


def summary_command(db: Db = DEFAULT_DB,
                    by: Annotated[str, typer.Option(help=f"group by these, comma-separated: {', '.join(GROUPS)}")] =
                    "tenant",
                    spec: Annotated[Path | None, typer.Option(help="grid spec whose endpoint prices give the "
                                                                   "cost (USD)")] = None,
                    since: Since = None, until: Until = None, tenant: Tenant = None, key: Key = None,
                    model: Model = None, site: Site = None, jurisdiction: Jurisdiction = None,
                    outcome: Outcome = None, firewall: Firewall = None,
                    fmt: Annotated[Literal["table", "csv", "json"], typer.Option(
                        "--format", help="table, csv or json")] = "table",
                    public_key: PublicKey = None, unverified: Unverified = False) -> None:
    """What the records add up to per group: requests, tokens, firewall blocks, errors and cost."""
    err = Console(stderr=True)
    groups_by = [b.strip() for b in by.split(",") if b.strip()]
    if not groups_by or any(b not in GROUPS for b in groups_by):
        raise typer.BadParameter(f"{by!r}: comma-separated, each one of {', '.join(GROUPS)}", param_hint="--by")
    prices = _prices(spec, err) if spec is not None else Prices({})
    selection = _selection(since, until, tenant, key, model, site, jurisdiction, outcome, None, firewall)
    through = _checked(db, public_key, unverified, err)
    reading = Reading()
    groups, total = summarise(_read(db, selection, reading, err, through), groups_by, prices)
    costed = spec is not None or total.charged > 0  # the gateway's own figures, or a spec's prices
    columns = [*groups_by, "requests", "prompt_tokens", "completion_tokens", "blocked", "errors"]
    columns += ["cost_usd"] if costed else []
    rows = [[*key, t.requests, t.prompt_tokens, t.completion_tokens, t.blocked, t.errors,
             *([round(t.cost_usd, 6)] if costed else [])]
            for key, t in sorted(groups.items(), key=lambda kv: (-kv[1].requests, kv[0]))]
    out = sys.stdout
    if fmt == "json":
        body = orjson.dumps([dict(zip(columns, row, strict=True)) for row in rows], option=orjson.OPT_INDENT_2)
        # line by line: orjson escapes a line break inside a string, so each line break here is the layout's
        out.write("\n".join(printable_json(line) for line in body.decode().split("\n")) + "\n")
    elif fmt == "csv":
        writer = spreadsheet_writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([spreadsheet_cell(v) for v in row] for row in rows)
    else:
        table = Table(*columns, box=None, pad_edge=False, show_footer=bool(rows))
        for row in rows:
            table.add_row(*("-" if v == "" else (f"{v:,.4f}" if isinstance(v, float) else
                                                  f"{v:,}" if isinstance(v, int) else printable_text(v)) for v in row))
        if rows:
            footer = ["total", *([""] * (len(groups_by) - 1)), f"{total.requests:,}", f"{total.prompt_tokens:,}",
                      f"{total.completion_tokens:,}", f"{total.blocked:,}", f"{total.errors:,}"]
            footer += [f"{total.cost_usd:,.4f}"] if costed else []
            for column, text in zip(table.columns, footer, strict=True):
                column.footer = text
            _console(out).print(table, soft_wrap=True)
    _unreadable(reading, err)
    if total.notes:
        n = total.notes
        err.print(f"note: {counted(n, 'record')} {agreeing(n, 'is', 'are')} the audit writer's own (outcome "
                  f"audit:..., such as a gateway worker's lost requests), {agreeing(n, 'not a request', 'not requests')},"
                  " and not counted above: "
                  f"aigrid audit query {db} --outcome 'audit:*' lists them", highlight=False, soft_wrap=True,
                  markup=False)
    if costed and total.unpriced:
        where = f"{spec} does not list" if spec is not None else "no spec prices (give --spec)"
        n = total.unpriced
        err.print(f"note: {counted(n, 'request')} {agreeing(n, 'carries', 'carry')} no recorded cost and "
                  f"{agreeing(n, 'was', 'were')} served by endpoints {where}: "
                  "not in the cost", highlight=False, soft_wrap=True, markup=False)
    err.print(f"{total.requests} of {counted(reading.read, 'record')}", highlight=False, markup=False)


def _prices(spec_path: Path, err: Console) -> Prices:
    from aigrid.spec.load import load_spec

    try:
        spec = load_spec(spec_path)
    except AigridError as e:
        print_error(err, e)
        raise typer.Exit(2) from None
    return Prices({ep.id: (ep.price_in_per_mtok, ep.price_out_per_mtok) for ep in spec.endpoints})
