"""The docs name things the code must have: links between docs, CLI flags, spec fields, metric names and
headers. Each test reads only exact tokens (links, code spans, fenced blocks), never prose, and checks them
against the code's own tables (the Typer app, the pydantic models, the metrics registry, the sources)."""

from __future__ import annotations

import re
import typing
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SOURCES = "\n".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "src" / "aigrid").rglob("*.py")))


def _lines(doc: Path) -> list[str]:
    return doc.read_text(encoding="utf-8").splitlines()


def _code(doc: Path) -> Iterator[tuple[int, str]]:
    """(line number, code) for every line of a fenced block and every inline code span."""
    fenced = False
    for n, line in enumerate(_lines(doc), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            yield n, line
        else:
            for span in re.findall(r"`([^`]+)`", line):
                yield n, span


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but - and _ dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")


def _anchors(doc: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in _lines(doc):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        m = None if fenced else re.match(r"#{1,6}\s+(.*)", line)
        if m:
            slug = _slug(m.group(1))
            seen[slug] = seen.get(slug, -1) + 1
            found.add(slug if seen[slug] == 0 else f"{slug}-{seen[slug]}")
    return found


def test_every_link_between_docs_reaches_a_file_and_its_heading() -> None:
    bad = []
    for doc in DOCS:
        for n, line in enumerate(_lines(doc), 1):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"[a-z]+:", target):
                    continue  # http(s), mailto
                path, _, anchor = target.partition("#")
                dest = (doc.parent / path).resolve() if path else doc
                if not dest.exists():
                    bad.append(f"{doc.name}:{n}: {target}: no such file")
                elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
                    bad.append(f"{doc.name}:{n}: {target}: no such heading in {dest.name}")
    assert not bad, "\n".join(bad)


def test_every_flag_of_an_aigrid_command_in_the_docs_exists() -> None:
    """`aigrid SUB [SUBSUB] ... --flag` in code: the flag is one of that command's options. Words after
    `aigrid` that are no command are prose or another tool's arguments (`kubectl -n aigrid create`)."""
    import typer

    from aigrid.cli import app

    root = typer.main.get_command(app)
    ctx = typer.Context(root)
    bad = []
    checked = 0
    for doc in DOCS:
        for n, code in _code(doc):
            code = code.split(" #")[0]
            for m in re.finditer(r"(?:^|[\s(])(?:\S*/)?aigrid ([a-z][a-z-]*)([^|;&]*)", code):
                cmd = root.get_command(ctx, m.group(1))  # type: ignore[attr-defined]
                rest = m.group(2).split()
                if cmd is None:
                    continue
                if hasattr(cmd, "list_commands"):
                    if not rest or rest[0].startswith("-"):
                        continue
                    sub = cmd.get_command(ctx, rest[0])
                    if sub is None:
                        bad.append(f"{doc.name}:{n}: aigrid {m.group(1)} has no command {rest[0]!r}")
                        continue
                    cmd, rest = sub, rest[1:]
                flags = {"--help"} | {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
                for word in rest:
                    flag = word.split("=")[0]
                    if re.fullmatch(r"--[a-z][a-z0-9-]*", flag):
                        checked += 1
                        if flag not in flags:
                            bad.append(f"{doc.name}:{n}: `aigrid {m.group(1)} ... {flag}`: no such option")
    assert checked > 50, checked  # the scan still finds the docs' commands
    assert not bad, "\n".join(bad)


def _models_in(annotation: object) -> list[tuple[str, type[BaseModel] | None]]:
    """The models a field holds: ('', M) itself, ('*', M) as a mapping's values, ('[]', M) as list items;
    None where a mapping or list holds plain values."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [("", annotation)]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is dict and args:
        return [("*", m) for _, m in _models_in(args[1])] or [("*", None)]
    if origin in (list, tuple) and args:
        return [("[]", m) for _, m in _models_in(args[0])] or [("[]", None)]
    return [found for a in args for found in _models_in(a)]


def _resolves(model: type[BaseModel], parts: list[str]) -> bool:
    """`gateway.admission.max_wait_slo`, `tenants.eu-bank.priority.max` (a mapping's key may be given or
    left out), `endpoints.0.url`: a path of fields of `model`."""
    if not parts:
        return True
    field = model.model_fields.get(parts[0])
    if field is None:
        return False
    rest = parts[1:]
    if not rest:
        return True
    for kind, inner in _models_in(field.annotation):
        keyed = kind == "*" or (kind == "[]" and rest[0].isdigit())
        if inner is None:
            if kind and len(rest) == 1:
                return True
        elif _resolves(inner, rest[1:] if keyed else rest) or (kind == "*" and _resolves(inner, rest)):
            return True
    return False


def test_every_spec_field_the_docs_name_exists() -> None:
    """A code span such as `gateway.shared_sync_interval_s` or `tenants.NAME.right_size.escalate` names a
    field of the grid spec, of a simulator scenario or of a planner demand file."""
    from aigrid.plan.demand import Demand
    from aigrid.sim.scenario import Scenario
    from aigrid.spec.models import GridSpec

    roots: tuple[type[BaseModel], ...] = (GridSpec, Scenario, Demand)
    tops = {name for r in roots for name, f in r.model_fields.items() if _models_in(f.annotation)}
    bad = []
    checked = 0
    for doc in DOCS:
        for n, line in enumerate(_lines(doc), 1):
            for m in re.finditer(r"`([a-z_]+(?:\.[\w-]+)+)(?:[:=\s][^`]*)?`", line):
                parts = m.group(1).split(".")
                if parts[0] not in tops or parts[-1] in {"md", "py", "yaml", "json", "jsonl", "csv", "png", "sh"}:
                    continue
                checked += 1
                if not any(_resolves(r, parts) for r in roots):
                    bad.append(f"{doc.name}:{n}: `{m.group(1)}` is no field of the spec, a scenario or a demand")
    assert checked > 50, checked
    assert not bad, "\n".join(bad)


METRIC_DOCS = DOCS


def test_every_metric_the_docs_name_is_exported() -> None:
    """aigrid_* and gen_ai_* names in the docs are a metric of the gateway's registry (with a Prometheus
    suffix), one of its labels, or a name the sources define (the body's aigrid_steps, ...)."""
    from prometheus_client import Counter, Gauge, Histogram

    from aigrid.gateway.metrics import GatewayMetrics

    metrics = [m for m in vars(GatewayMetrics()).values() if isinstance(m, Counter | Gauge | Histogram)]
    names = {m._name + suffix for m in metrics for suffix in ("", "_total", "_created", "_bucket", "_sum", "_count")}
    labels = {label for m in metrics for label in m._labelnames}
    bad = []
    for doc in METRIC_DOCS:
        for n, line in enumerate(_lines(doc), 1):
            for token in re.findall(r"(?<![\w.:])((?:aigrid|gen_ai)_[a-z0-9_]+)", line):
                if token not in names and token not in labels and not re.search(rf"\b{token}\b", SOURCES):
                    bad.append(f"{doc.name}:{n}: {token}")
    assert not bad, "no such metric, label or name in src/aigrid:\n" + "\n".join(bad)


def test_every_aigrid_header_the_docs_name_is_one_the_code_uses() -> None:
    bad = [f"{doc.name}:{n}: {h}" for doc in DOCS for n, line in enumerate(_lines(doc), 1)
           for h in re.findall(r"x-aigrid-[a-z][a-z-]*[a-z]", line) if f'"{h}"' not in SOURCES]
    assert not bad, "headers no source names:\n" + "\n".join(bad)


NOT_HERE = {"scripts/issue11/README.md"}
"""Paths the docs name as living elsewhere (docs/simulator.md: on an unmerged branch, not in this repository)."""
BUILT = {line[1:] for line in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
         if line.startswith("/") and line.endswith("/_compiled.txt")}
"""Paths a build writes (`make core`'s manifests, src/aigrid/*/_compiled.txt, and nothing else), named in .gitignore one by one: a fresh
clone without that build (COMPILE=0, no C compiler, or a `make core` under way beside it) has none of them."""


def test_every_repository_path_the_docs_name_exists() -> None:
    """`tests/...`, `scripts/...`, `examples/...`, `src/...`, `deploy/...`, `data/...`, `docs/...` in code spans
    (a renamed test or script leaves its old name in the docs)."""
    bad = [f"{doc.name}:{n}: {path}" for doc in DOCS for n, line in enumerate(_lines(doc), 1)
           for path in re.findall(r"`((?:tests|scripts|examples|src|deploy|data|docs)/[\w./-]*)`", line)
           if path not in NOT_HERE | BUILT and not (ROOT / path).exists()]
    assert not bad, "no such path in the repository:\n" + "\n".join(bad)


@pytest.mark.parametrize("doc", DOCS, ids=lambda d: d.name)
def test_fenced_blocks_are_closed(doc: Path) -> None:
    """An unclosed ``` turns the rest of a page into code (and hides its headings from the anchors)."""
    assert sum(1 for line in _lines(doc) if line.lstrip().startswith("```")) % 2 == 0


def _unknown_keys(model: type[BaseModel], data: object, path: str = "") -> list[str]:
    """The keys of `data` (YAML as the docs write it) that are no field of `model`, at any depth."""
    if not isinstance(data, dict):
        return []
    bad = []
    for key, value in data.items():
        field = model.model_fields.get(key) or next(
            (f for f in model.model_fields.values() if f.alias is not None and f.alias == key), None)
        if field is None:
            bad.append(f"{path}{key}")
            continue
        for kind, inner in _models_in(field.annotation):
            if inner is None:
                continue
            if kind == "*" and isinstance(value, dict):
                bad += [k for name, v in value.items() for k in _unknown_keys(inner, v, f"{path}{key}.{name}.")]
            elif kind == "[]" and isinstance(value, list):
                bad += [k for i, v in enumerate(value) for k in _unknown_keys(inner, v, f"{path}{key}.{i}.")]
            elif kind == "":
                bad += _unknown_keys(inner, value, f"{path}{key}.")
            break
    return bad


def _spec_models() -> tuple[tuple[type[BaseModel], ...], list[type[BaseModel]], list[type[BaseModel]]]:
    """The roots (grid spec, scenario, demand), every model under them, and those that are a mapping's values
    (`slo.by_class`'s SLOs, `tenants`' tenants)."""
    from aigrid.plan.demand import Demand
    from aigrid.sim.scenario import Scenario
    from aigrid.spec.models import GridSpec

    roots: tuple[type[BaseModel], ...] = (GridSpec, Scenario, Demand)
    seen: list[type[BaseModel]] = []
    values: list[type[BaseModel]] = []

    def reach(model: type[BaseModel]) -> None:
        if model not in seen:
            seen.append(model)
            for f in model.model_fields.values():
                for kind, inner in _models_in(f.annotation):
                    if inner is not None:
                        if kind == "*" and inner not in values:
                            values.append(inner)
                        reach(inner)

    for root in roots:
        reach(root)
    return roots, seen, values


def _fenced(doc: Path) -> Iterator[tuple[int, str, str]]:
    """(first line, language, text) of every fenced block."""
    lang, start, body = None, 0, []  # type: ignore[var-annotated]
    for n, line in enumerate(_lines(doc), 1):
        if line.lstrip().startswith("```"):
            if lang is None:
                lang, start, body = line.lstrip()[3:].strip(), n, []
            else:
                yield start, lang, "\n".join(body)
                lang = None
        elif lang is not None:
            body.append(line)


def test_every_spec_snippet_of_the_docs_uses_fields_that_exist() -> None:
    """A YAML block (`gateway: ...`, a demand file, a tenant) and an inline mapping such as
    `slo: {ttft_ms: 1000, tpot_ms: 100}` or `escalate: {below_confidence: 0.6}`: each key is a field where it
    stands (of the grid spec, a scenario or a demand). The dotted-name test above reads only `a.b.c` spans,
    so a mistyped key inside a snippet, which a reader pastes, went unseen."""
    import yaml

    roots, models, values = _spec_models()
    bad = []
    checked = 0
    for doc in DOCS:
        for n, lang, text in _fenced(doc):
            if lang not in ("yaml", "yml", ""):
                continue
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError:
                assert lang == "", f"{doc.name}:{n}: a yaml block YAML cannot read"
                continue
            if not isinstance(data, dict) or not any(k in r.model_fields for r in roots for k in data):
                continue  # another tool's YAML (an OpenTelemetry collector's), or console output
            checked += 1
            misses = [_unknown_keys(r, data) for r in roots]
            if all(misses):
                bad.append(f"{doc.name}:{n}: yaml block: no such field {min(misses, key=len)}")
        for n, line in enumerate(_lines(doc), 1):
            for span in re.findall(r"`([a-z_]+: *\{[^`]*\})`", line):
                try:
                    data = yaml.safe_load(span.replace("...", "x"))
                except yaml.YAMLError:
                    continue
                key = next(iter(data)) if isinstance(data, dict) else None
                owners = [m for m in models if key in m.model_fields]
                if not owners:
                    continue  # not a spec field: an API body's (`tool_choice: {"type": "any"}`)
                checked += 1
                if all(_unknown_keys(m, data) for m in owners) and all(_unknown_keys(m, data[key]) for m in values):
                    bad.append(f"{doc.name}:{n}: `{span}`: {_unknown_keys(owners[0], data)} no such field")
    assert checked > 20, checked
    assert not bad, "\n".join(bad)


def test_every_module_the_docs_run_or_name_exists() -> None:
    """`python -m aigrid.sim.cli ...` runs a module that has a main; `aigrid.bench.cli:bench_command` names a
    function that exists (the paths test above reads only `src/...` spans: a renamed module kept its old
    name in a command a reader pastes)."""
    import importlib

    bad = []
    checked = 0
    for doc in DOCS:
        for n, line in enumerate(_lines(doc), 1):
            for module in re.findall(r"python3? -m (aigrid(?:\.\w+)*)", line):
                checked += 1
                path = ROOT / "src" / Path(*module.split("."))
                source = path.with_suffix(".py") if path.with_suffix(".py").is_file() else path / "__main__.py"
                if not source.is_file() or "__main__" not in source.read_text(encoding="utf-8"):
                    bad.append(f"{doc.name}:{n}: python -m {module}: no such module with a main")
            for module, name in re.findall(r"`(aigrid(?:\.\w+)+):(\w+)", line):
                checked += 1
                try:
                    found = hasattr(importlib.import_module(module), name)
                except ImportError:
                    found = False
                if not found:
                    bad.append(f"{doc.name}:{n}: {module}:{name}: no such function")
    assert checked > 10, checked
    assert not bad, "\n".join(bad)
