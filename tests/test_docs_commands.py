"""Every command line the docs show can be typed as shown: `aigrid ...`, `python scripts/...`, `python -m ...`,
`make ...` and `scripts/....sh` in shell blocks (```bash, ```sh, ```console, or no language; `\\` continuations
joined) and in inline code spans (over a line break too). Each is parsed, never run: an `aigrid` line against the
Typer app itself (the sub-command exists, each option is one of its options, takes a value where given one and
none where it is a flag, a value among those an Enum or Literal lists, no more positional arguments than it has;
in a shell block also none it requires left out), a script or module against its argparse calls (read from its
source, not imported) or its typer app, a `make` line against the Makefile's targets and variables, a variable
set before a scripts/*.sh against what the script reads; and every repository file a command reads
(`examples/...`, `scripts/...`) exists. test_docs_match.py's flag test reads only the flags of commands that
exist; this one also finds `aigrid serve`, a flag given a value, a value left out, a script renamed. Blocks of
printed output are tagged ```text in the docs, so `aigrid gateway on http://...` is not read."""

from __future__ import annotations

import ast
import enum
import importlib
import math
import re
import shlex
import typing
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.test_docs_match import DOCS, NOT_HERE, ROOT, _lines

SHELL_BLOCKS = {"", "bash", "sh", "shell", "console"}
WRAPPERS = {"sudo", "env", "nohup", "exec", "time", "/usr/bin/time", "taskset"}
"""Words before the command that run it (`taskset -c 0 python ...`, `/usr/bin/time -v aigrid sim ...`)."""
ASSIGNMENT = re.compile(r"[A-Z_][A-Z0-9_]*=.*")
PROFILERS = {"py-spy", "valgrind"}
PROGRAM = re.compile(r"(?:\S*/)?(?:aigrid|python(?:3(?:\.\d+)?)?)")
PATH_ROOTS = ("examples/", "scripts/", "deploy/", "data/", "docs/", "tests/")
PLACEHOLDER = re.compile(r"[A-Z]{2,}|\.\.\.|\*|\bX\b")
"""`examples/sim/NAME.yaml`, `DIR/checks/03-...yaml`, `<tree>` (read as X): a path a reader fills in."""
OUTPUT_OPTIONS = {"--out", "-o", "--plot", "--json", "--private-key"}
"""Options whose value is a file the command writes (`--plot docs/models/curve.png` need not exist)."""
OPTION = re.compile(r"--?[A-Za-z][\w-]*(=.*)?")


@dataclass
class Grammar:
    """What a command accepts: each option's (fewest, most) values, positional arguments (fewest, most),
    options it requires, the values an option may take where they are listed; `source`, where a script reads its arguments by hand (`"--cost" in sys.argv`): any
    option it names as a string is one."""

    options: dict[str, tuple[float, float]] = field(default_factory=dict)
    positional: tuple[float, float] = (0, math.inf)
    required: set[str] = field(default_factory=set)
    choices: dict[str, set[str]] = field(default_factory=dict)
    source: str = ""


def _logical_lines(doc: Path) -> Iterator[tuple[int, str, bool]]:
    """(line number, text, whether in a shell block) of every shell block line (a `\\` continuation joined)
    and every inline code span (one that goes on over a line break too, up to the paragraph's end)."""
    lang: str | None = None
    pending: tuple[int, str] | None = None
    for n, line in enumerate(_lines(doc), 1):
        stripped = line.lstrip()
        if stripped.startswith("```"):
            lang, pending = stripped[3:].strip() if lang is None else None, None
            continue
        if lang is None:
            start, text = (pending[0], f"{pending[1]} {line}") if pending and line.strip() else (n, line)
            pending = None
            if text.count("`") % 2:  # a span opened here goes on on the next line
                cut = text.rindex("`")
                pending, text = (n if cut >= len(text) - len(line) else start, text[cut:]), text[:cut]
            for span in re.findall(r"`([^`]+)`", text):
                yield start, span, False
        elif lang in SHELL_BLOCKS:
            start, text = pending if pending else (n, "")
            text += " " + re.sub(r"^\$ ", "", stripped)
            if text.rstrip().endswith("\\"):
                pending = start, text.rstrip()[:-1]
            else:
                pending = None
                yield start, text.strip(), True


def _segments(text: str) -> Iterator[list[str]]:
    """The words of each command in a line: comments dropped, split at `&&`, `||`, `;`, `&` and ` | `; a
    `<placeholder>` is one word (X), `[optional parts]` are read without their brackets."""
    text = re.sub(r"(^|\s)#.*", "", text)
    text = re.sub(r"<[^<>]*>", "X", text)
    for part in re.split(r"\s*(?:&&|\|\||;|&(?=\s|$))\s*|\s+\|\s+", text):
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        yield [w for w in (w.strip("[]") for w in words) if w]


def _strip_wrappers(words: list[str]) -> list[str]:
    while words:
        if ASSIGNMENT.fullmatch(words[0]):
            words = words[1:]
        elif words[0] in PROFILERS:  # py-spy record -r 200 -o prof.txt -- python ...: its own options first
            words = words[next((i for i, w in enumerate(words) if PROGRAM.fullmatch(w)), len(words)):]
        elif words[0] in WRAPPERS:
            words = words[1:]
            while words and words[0].startswith("-"):  # taskset -c 1, time -v
                words = words[2:] if words[0] == "-c" else words[1:]
        else:
            return words
    return words


@cache
def _root() -> Any:
    import typer

    from aigrid.cli import app

    return typer.main.get_command(app)


def _choices(annotation: Any) -> set[str]:
    """The values of an Enum or a Literal (inside `X | None` too); none for any other type."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return {str(m.value) for m in annotation}
    if typing.get_origin(annotation) is typing.Literal:
        return {str(a) for a in typing.get_args(annotation)}
    return {c for a in typing.get_args(annotation) for c in _choices(a)}


def _click_grammar(cmd: Any) -> Grammar:
    g = Grammar(options={"--help": (0, 0)}, positional=(0, 0))
    low, high = 0.0, 0.0
    for p in cmd.params:
        if p.param_type_name == "option":
            takes = (0, 0) if p.is_flag or p.count else (p.nargs, p.nargs)
            g.options.update({o: takes for o in (*p.opts, *p.secondary_opts)})
            if _choices(p.type_descriptor.annotation):
                g.choices[p.opts[0]] = _choices(p.type_descriptor.annotation)
            if p.required:
                g.required.add(p.opts[0])
        else:
            low += p.nargs if p.required and p.nargs > 0 else 0
            high += math.inf if p.nargs < 0 else p.nargs
    g.positional = (low, high)
    return g


def _argparse_grammar(source: str) -> Grammar | None:
    """The options and positional arguments of a script's `add_argument` calls; None where it has none."""
    calls = [c for c in ast.walk(ast.parse(source)) if isinstance(c, ast.Call)
             and isinstance(c.func, ast.Attribute) and c.func.attr == "add_argument"]
    if not calls:
        return None
    g = Grammar(options={"--help": (0, 0), "-h": (0, 0)}, positional=(0, 0))
    low, high = 0.0, 0.0
    for c in calls:
        names = [a.value for a in c.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
        kw = {k.arg: k.value for k in c.keywords}
        action, nargs = kw.get("action"), kw.get("nargs")
        nargs_value = nargs.value if isinstance(nargs, ast.Constant) else None
        takes: tuple[float, float] = {None: (1, 1), "?": (0, 1), "*": (0, math.inf), "+": (1, math.inf)}.get(
            nargs_value, (nargs_value, nargs_value) if isinstance(nargs_value, int) else (1, 1))  # type: ignore[arg-type]
        if isinstance(action, ast.Constant) and action.value in (
                "store_true", "store_false", "store_const", "count", "help", "version", "append_const"):
            takes = (0, 0)
        boolean = isinstance(action, ast.Attribute) and action.attr == "BooleanOptionalAction"
        if boolean:
            takes = (0, 0)
        if names and names[0].startswith("-"):
            for name in names:
                g.options[name] = takes
                if boolean and name.startswith("--"):
                    g.options["--no-" + name[2:]] = takes
            if isinstance(kw.get("choices"), ast.Tuple | ast.List | ast.Set):
                g.choices[names[0]] = {str(e.value) for e in kw["choices"].elts  # type: ignore[attr-defined]
                                       if isinstance(e, ast.Constant)}
            required = kw.get("required")
            if isinstance(required, ast.Constant) and required.value is True:
                g.required.add(names[0])
        elif names:
            low, high = low + takes[0], high + takes[1]
    g.positional = (0, math.inf) if "add_subparsers" in source else (low, high)
    return g


@cache
def _grammar_of(path: Path) -> Grammar:
    """A script's or module's grammar: its typer app, its argparse calls, or (arguments read by hand from
    sys.argv) any option its source names as a string."""
    source = path.read_text(encoding="utf-8")
    if "typer.Typer(" in source and path.is_relative_to(ROOT / "src"):
        import typer

        module = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts)
        return _click_grammar(typer.main.get_command(importlib.import_module(module).app))
    return _argparse_grammar(source) or Grammar(options={}, source=source)


def _not_a_choice(g: Grammar, name: str, value: str) -> list[str]:
    """`--mode poisson`: one of the option's values, where it lists them (`--transport direct|http1`: either;
    a placeholder such as MODE or X is not checked)."""
    if name not in g.choices or PLACEHOLDER.search(value):
        return []
    return [f"{name} {v!r} is none of {sorted(g.choices[name])}" for v in value.split("|") if v not in g.choices[name]]


def _check_args(g: Grammar, args: list[str], strict: bool) -> list[str]:
    """What is wrong with `args` for a command of grammar `g`. `strict` (a shell block, a whole command): a
    required value or argument left out is wrong too; in an inline span (`aigrid gateway --redis`, prose
    naming an option) it is not."""
    bad: list[str] = []
    positional, open_ended, given = 0, False, set()
    i = 0
    while i < len(args):
        word = args[i]
        i += 1
        if word == "...":
            open_ended = True
        elif word == "--":
            positional += len(args) - i
            break
        elif OPTION.fullmatch(word) and not re.fullmatch(r"-\d.*", word):
            name, eq, value = word.partition("=")
            if name not in g.options:
                if not re.search(rf"[\"']{re.escape(name)}[\"'=]", g.source):
                    bad.append(f"no option {name}")
                continue
            given.add(name)
            low, high = g.options[name]
            if high and (eq or (i < len(args) and not OPTION.fullmatch(args[i]))):
                bad += _not_a_choice(g, name, value if eq else args[i])
            if high == 0 and eq:
                bad.append(f"{name} is a flag: it takes no value")
            elif not eq:
                taken = 0
                while taken < high and i < len(args) and (not OPTION.fullmatch(args[i]) or args[i][1].isdigit()):
                    open_ended |= args[i] == "..."
                    taken, i = taken + 1, i + 1
                if taken < low and (strict or i < len(args)) and not open_ended:
                    bad.append(f"{name} needs a value")
        else:
            positional += 1
    if not open_ended and positional > g.positional[1]:
        bad.append(f"{positional} arguments; it takes at most {g.positional[1]:.0f}")
    if strict and not open_ended and "--help" not in given and "-h" not in given:
        if positional < g.positional[0]:
            bad.append(f"{positional} arguments; it needs {g.positional[0]:.0f}")
        bad += [f"{name} is required" for name in sorted(g.required - given)]
    return bad


def _check_aigrid(cmd: Any, args: list[str], strict: bool) -> list[str]:
    ctx = cmd.context_class(cmd)  # typer's own click, not the click package
    while hasattr(cmd, "list_commands"):
        if not args or args[0] == "--help":
            return []
        if args[0].startswith("-"):
            return [f"no option {args[0]} before a command"]
        names = args[0].split("|")  # `aigrid up|gateway --workers N`: either
        subs = [cmd.get_command(ctx, name) for name in names]
        missing = [name for name, sub in zip(names, subs, strict=True) if sub is None]
        if missing:
            return [f"no command {name!r}" for name in missing]
        if len(subs) > 1:
            return [b for sub in subs if sub is not None for b in _check_aigrid(sub, args[1:], strict)]
        cmd, args = subs[0], args[1:]
    return _check_args(_click_grammar(cmd), args, strict)


@cache
def _makefile() -> tuple[set[str], set[str]]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w.-]+)\s*:(?!=)", text, re.M))
    variables = set(re.findall(r"\$\((\w+)\)", text)) | set(re.findall(r"^(\w+)\s*[?:]?=", text, re.M))
    return targets, variables


def _check_make(args: list[str]) -> list[str]:
    targets, variables = _makefile()
    bad = []
    for word in args:
        if "=" in word:
            if word.split("=")[0] not in variables:
                bad.append(f"the Makefile uses no variable {word.split('=')[0]}")
        elif not word.startswith("-") and word not in targets:
            bad.append(f"the Makefile has no target {word!r}")
    return bad


def _inputs(args: list[str]) -> list[str]:
    """The words a command reads: all but the value of an option that names a file it writes."""
    return [w for i, w in enumerate(args) if w.split("=")[0] not in OUTPUT_OPTIONS
            and (i == 0 or args[i - 1] not in OUTPUT_OPTIONS)]


def _missing_paths(words: list[str]) -> list[str]:
    here = {str(Path(p).parent) + "/" for p in NOT_HERE}
    return [f"no such file {w}" for w in words if w.startswith(PATH_ROOTS) and not PLACEHOLDER.search(w)
            and not w.startswith(tuple(here)) and not (ROOT / w).exists()]


def _check_python(args: list[str], strict: bool) -> list[str] | None:
    """`python -m MODULE ...` (aigrid's and the tests' own modules) or `python scripts/x.py ...`; None for
    another tool's module (pytest, json.tool)."""
    if len(args) >= 2 and args[0] == "-m":
        module, rest = args[1], args[2:]
        if module == "aigrid.cli":
            return _check_aigrid(_root(), rest, strict)
        if module == "pytest":  # its file arguments exist (tests/e2e/test_chaos.py)
            return _missing_paths([w.split("::")[0] for w in rest])
        if not module.startswith(("aigrid.", "tests.")):
            return None
        base = ROOT / ("src" if module.startswith("aigrid") else "") / Path(*module.split("."))
        path = next((p for p in (base.with_suffix(".py"), base / "__main__.py") if p.is_file()), None)
        if path is None:
            return [f"no module {module}"]
        return _check_args(_grammar_of(path), rest, strict)
    if args and args[0].endswith(".py"):
        if PLACEHOLDER.search(args[0]) or _missing_paths(args[:1]) or not (ROOT / args[0]).is_file():
            return _missing_paths(args[:1]) or None
        return _check_args(_grammar_of(ROOT / args[0]), args[1:], strict)
    return None


def check_command(words: list[str], strict: bool) -> list[str] | None:
    """What is wrong with one command line's words (wrappers and assignments first); None where it is no
    command of this repository's."""
    given, words = words, _strip_wrappers(words)
    if not words:
        return None
    assigned = [w.split("=")[0] for w in given[:len(given) - len(words)] if ASSIGNMENT.fullmatch(w)]
    program, args = words[0], words[1:]
    if program == "aigrid" or program.endswith("/aigrid"):
        bad = _check_aigrid(_root(), args, strict)
    elif PROGRAM.fullmatch(program):
        found = _check_python(args, strict)
        if found is None:
            return None
        bad = found
    elif program == "make":
        bad = _check_make(args)
    elif (program if program != "bash" or not args else args[0]).startswith("scripts/"):
        script, rest = (args[0], args[1:]) if program == "bash" else (program, args)
        if _missing_paths([script]) or not script.endswith(".sh"):
            return _missing_paths([script])
        source = (ROOT / script).read_text(encoding="utf-8")
        passed = re.search(r"python\S* -m ([\w.]+) \"\$@\"", source)  # scripts/bench_compare.sh: exec ... "$@"
        bad = (_check_python(["-m", passed.group(1), *rest], strict) or [] if passed
               else _check_args(Grammar(source=source), rest, strict))
        bad += [f"{script} reads no variable {name}" for name in assigned  # TOKENS=N scripts/bench_ab.sh
                if not re.search(rf"\$\{{?{name}\b", source)]
    else:
        return None
    return bad + _missing_paths(_inputs(args))


def _doc_commands(docs: list[Path] = DOCS) -> Iterator[tuple[str, list[str], bool]]:
    for doc in docs:
        for n, text, fenced in _logical_lines(doc):
            for words in _segments(text):
                yield f"{doc.name}:{n}", words, fenced


PENDING: set[tuple[str, str]] = set()
"""Wrong lines in a page another engineer owns, reported for them to fix: (page, command line). Each must still
be in the docs: a fixed one is taken off this list, or the test fails."""


def _wrong_lines(docs: list[Path]) -> tuple[list[str], int, set[tuple[str, str]]]:
    """What is wrong in the command lines of `docs`, how many were read, and which PENDING lines were seen."""
    bad, checked, pending = [], 0, set()
    for where, words, fenced in _doc_commands(docs):
        found = check_command(words, strict=fenced)
        if found is None:
            continue
        checked += 1
        if found and (where.split(":")[0], " ".join(words)) in PENDING:
            pending.add((where.split(":")[0], " ".join(words)))
            continue
        bad += [f"{where}: `{' '.join(words)}`: {b}" for b in found]
    return bad, checked, pending


def test_every_command_line_in_the_docs_parses_against_what_it_runs() -> None:
    bad, checked, pending = _wrong_lines(DOCS)
    assert checked > 300, checked  # the scan still finds the docs' commands
    assert not bad, "\n".join(bad)
    assert pending == PENDING, f"fixed in the docs, to be taken off PENDING: {PENDING - pending}"


@pytest.mark.parametrize(("line", "wrong"), [
    ("aigrid gateway SPEC --workers 2 --made-up-option 3", "no option --made-up-option"),
    ("aigrid serve --host :: --workers N", "no command 'serve'"),
    ("aigrid keys rotate ops", "no command 'rotate'"),
    ("aigrid sim examples/sim/small.yaml --no-plots=yes", "--no-plots is a flag: it takes no value"),
    ("aigrid sim examples/sim/small.yaml --out", "--out needs a value"),
    ("aigrid sim examples/sim/small.yaml examples/sim/global.yaml", "2 arguments; it takes at most 1"),
    ("aigrid up|gateway --made-up-option", "no option --made-up-option"),
    ("aigrid models eval --split 0.5", "--data is required"),
    ("aigrid sim examples/sim/no-such.yaml", "no such file examples/sim/no-such.yaml"),
    (".venv/bin/python scripts/no_such_script.py", "no such file scripts/no_such_script.py"),
    ("python scripts/hot_prefix_split.py --made-up-option 3", "no option --made-up-option"),
    ("python scripts/sim_cpu.py examples/sim/planet.yaml 1000 balanced more", "4 arguments; it takes at most 3"),
    ("python scripts/sim_cpu.py examples/sim/planet.yaml 1000 balanced --dense=1", "--dense is a flag: it takes no value"),
    ("py-spy record -o prof.txt -- python scripts/sim_cpu.py X 1 nearest --sparse", "no option --sparse"),
    ("python -m aigrid.bench.gateway_launch SPEC --transport", "--transport needs a value"),
    ("python -m aigrid.bench.gateway_launch SPEC --port 1 --transport http2",
     "--transport 'http2' is none of ['aiohttp', 'direct', 'http1', 'httpx']"),
    ("aigrid bench URL --mode open", "--mode 'open' is none of ['closed', 'poisson', 'trace']"),
    ("python -m aigrid.bench.gateway_launch SPEC", "--port is required"),
    ("python -m tests.gateway.test_hangup --made-up-option", "no option --made-up-option"),
    ("python -m aigrid.sim.cli examples/sim/small.yaml --made-up-option", "no option --made-up-option"),
    ("PYTHONPATH=src taskset -c 0 python -m aigrid.nowhere", "no module aigrid.nowhere"),
    ("sudo make run SPEC=examples/demo.yaml FOO=1", "the Makefile uses no variable FOO"),
    ("make deploy", "the Makefile has no target 'deploy'"),
    ("ROUNDS=2 WORKRES=2 scripts/bench_ab.sh OUT a=src:SPEC", "scripts/bench_ab.sh reads no variable WORKRES"),
    ("scripts/bench_compare.sh --soak-seconds 600", "no option --soak-seconds"),
])
def test_a_wrong_command_line_is_found(line: str, wrong: str) -> None:
    """The checks find what they are for: each line here is wrong in one way, as a doc could be."""
    found = [b for words in _segments(line) for b in check_command(words, strict=True) or []]
    assert wrong in found, found


@pytest.mark.parametrize(("line", "strict"), [
    ("aigrid gateway SPEC --workers 2 --log-level debug", True),
    ("aigrid up|gateway --workers N", False),  # inline: gateway's SPEC left out
    ("aigrid gateway --redis", False),  # inline: an option named, its value left out
    ("aigrid bench URL1 URL2 ...   # several base URLs", True),
    ("aigrid keys", True),
    ("/usr/bin/time -v .venv/bin/aigrid sim examples/sim/planet.yaml --out OUT", True),
    ("python scripts/hot_prefix_split.py --rate 400 --runs 3 [--policy round-robin] [--unique]", True),
    ("python -m aigrid.bench.gateway_launch SPEC --port 9610 [--transport direct|http1|httpx]", True),
    ("scripts/bench_compare.sh --soak-s 600", True),  # its options are aigrid.bench.compare's ("$@")
    ("aigrid models eval --data FILE.csv --plot docs/models/curve.png", True),  # a file it writes
    ("OTEL_SERVICE_NAME=aigrid make run SPEC=examples/demo-netns.yaml", True),
])
def test_a_right_command_line_passes(line: str, strict: bool) -> None:
    found = [check_command(words, strict=strict) for words in _segments(line)]
    assert found == [[]], found


def test_another_tools_command_is_not_read() -> None:
    """`kubectl -n aigrid create ...`: aigrid is a namespace there, not the command (no `aigrid create`)."""
    line = "kubectl -n aigrid create secret generic x && rm keys.json | python3 -m json.tool"
    assert [check_command(words, strict=True) for words in _segments(line)] == [None, None, None]


def test_a_page_with_a_wrong_command_fails(tmp_path: Path) -> None:
    """The scan of a page reads shell blocks (a `\\` continuation joined), inline spans, not ```text output."""
    page = tmp_path / "page.md"
    page.write_text("Run `aigrid sim examples/sim/small.yaml --made-up-inline`, or\n`aigrid up --port 1\n"
                    "--made-up-over-a-line-break`.\n\n"
                    "```bash\naigrid plan examples/plan/small.yaml \\\n  --out DIR --made-up-option\n```\n\n"
                    "```text\naigrid gateway on http://127.0.0.1:8080 (printed)\n```\n", encoding="utf-8")
    bad, checked, _ = _wrong_lines([page])
    assert checked == 3
    assert bad == ["page.md:1: `aigrid sim examples/sim/small.yaml --made-up-inline`: no option --made-up-inline",
                   "page.md:2: `aigrid up --port 1 --made-up-over-a-line-break`: no option --made-up-over-a-line-break",
                   "page.md:6: `aigrid plan examples/plan/small.yaml --out DIR --made-up-option`: "
                   "no option --made-up-option"], bad
