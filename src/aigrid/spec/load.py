"""Load a grid spec from YAML, and turn it into the core's types.

Every problem with a spec becomes one SpecError naming the file and each bad field, never a traceback.
"""

from __future__ import annotations

import errno
import os
import re
import selectors
import stat
import time
import types
import typing
from collections.abc import Mapping
from pathlib import Path

import yaml
from pydantic import BaseModel, ValidationError

from aigrid.core.policies import BUILTIN_POLICIES, with_slo
from aigrid.core.types import Endpoint, GeoPoint, ModelInfo, Policy, Site
from aigrid.errors import MAX_LISTED, SpecError
from aigrid.spec.models import GridSpec, SpecProblems
from aigrid.spec.near import did_you_mean, nearest

MAX_SPEC_BYTES = 8 * 1024 * 1024
"""A grid spec is kilobytes; a bigger file is the wrong file (a 56 MB one took minutes to parse, then failed)."""
PIPE_DEADLINE_S = 30.0
"""How long a pipe (`aigrid spec check <(envsubst < grid.yaml)`, a FIFO) may take to be written to its end."""
FIFO_WRITER_S = 5.0
"""How long a FIFO may wait for a writer to open it (`aigrid up grid.fifo & envsubst < grid.yaml > grid.fifo`):
one no one opens is refused then, not at PIPE_DEADLINE_S. A pipe (`<(...)`) has its writer from the start."""


def read_bounded(p: Path, limit: int) -> bytes:
    """At most `limit` + 1 bytes of the file at `p` (more than `limit` read: the file is too big). A regular
    file is read as it is; a pipe or FIFO until its writer closes it, within PIPE_DEADLINE_S (a FIFO no one
    opens to write is a TimeoutError after FIFO_WRITER_S); anything else (a folder, a device such as /dev/zero or a terminal, a
    socket) is refused. OSError (with its strerror) on each, never a wait without end: opening a FIFO that no
    one writes to blocks in open() itself, and /dev/zero never ends."""
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory")
        if stat.S_ISREG(mode):
            os.set_blocking(fd, True)
            with os.fdopen(fd, "rb", closefd=False) as f:
                return f.read(limit + 1)
        if not stat.S_ISFIFO(mode):
            raise OSError(errno.EINVAL, "not a regular file (a device, a socket: name the file itself)")
        return _read_pipe(fd, limit)
    finally:
        os.close(fd)


def _read_pipe(fd: int, limit: int) -> bytes:
    """Polled, never `select.select`, which cannot watch a descriptor numbered 1024 or more (ValueError: a process
    holding many files, a server's). Read before waiting: a FIFO whose writer has not opened it reads as its end
    (0 bytes) at once, and no poll ever wakes for it (Linux reports a hang-up only after a writer has come and
    gone, as a pipe's writer has when it reads as its end), so it is tried again until FIFO_WRITER_S; a writer
    seen, or a byte read, waits for the end within PIPE_DEADLINE_S."""
    chunks: list[bytes] = []
    got = 0
    began = time.monotonic()
    end, writer_by = began + PIPE_DEADLINE_S, began + FIFO_WRITER_S
    writer = False  # a writer has had the FIFO open (a read that would block, or a byte read)
    with selectors.DefaultSelector() as poll:
        poll.register(fd, selectors.EVENT_READ)
        while got <= limit:
            now = time.monotonic()
            if now >= end:
                raise TimeoutError(errno.ETIMEDOUT, f"a pipe not written to its end within {PIPE_DEADLINE_S:g} s")
            try:
                chunk = os.read(fd, min(1 << 16, limit + 1 - got))
            except BlockingIOError:
                writer = True
                poll.select(end - now)
                continue
            if chunk:
                writer = True
                chunks.append(chunk)
                got += len(chunk)
                continue
            if writer or poll.select(0):  # a hang-up: a writer came and went (a pipe's, `<(true)`: empty)
                break
            if now >= writer_by:  # no writer yet: its end, for a FIFO, says only that no one has opened it
                raise TimeoutError(errno.ETIMEDOUT, f"no one opened the FIFO to write within {FIFO_WRITER_S:g} s")
            time.sleep(min(0.05, writer_by - now))
    return b"".join(chunks)


def load_spec(path: str | Path) -> GridSpec:
    p = Path(path)
    return relative_to(parse_spec(read_yaml(p), str(p)), p.parent)


def read_yaml(p: Path, error: type[SpecError] = SpecError, what: str = "grid spec") -> object:
    """The YAML document of a spec file (a grid spec; the simulator's scenarios and the planner's demand files
    read the same way, `error` and `what` naming which): UTF-8, at most MAX_SPEC_BYTES, read by read_bounded
    (a FIFO, a device: no wait without end), no key given twice in one mapping. Every problem is an `error` naming the file (and the line), never a traceback."""
    try:
        data = read_bounded(p, MAX_SPEC_BYTES)
    except OSError as e:
        raise error(str(p), [f"cannot read file: {e.strerror or e}"]) from e
    if len(data) > MAX_SPEC_BYTES:
        raise error(str(p), [f"the file is larger than {MAX_SPEC_BYTES // (1024 * 1024)} MiB; a {what} is a few "
                             "kilobytes (is this the right file?)"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise error(str(p), [f"line {line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the {what} as "
                             "UTF-8"]) from None
    try:
        doc = yaml.load(text, Loader=_SpecLoader)  # noqa: S506 (a safe loader: _SpecLoader is SafeLoader's)
    except yaml.YAMLError as e:
        raise error(str(p), [_yaml_problem(e, text)]) from None
    except RecursionError:
        raise error(str(p), [f"not a {what}: nested too deeply to read"]) from None
    if doc is None:  # it said "the top level must be a mapping" / "expected a mapping at the top level" of it
        said = "the file is empty" if not text.strip() else "the file holds nothing (only comments, or null)"
        example = EXAMPLES.get(what)
        raise error(str(p), [f"{said}: a {what} is a YAML mapping" + (f", e.g. {example}" if example else "")])
    return doc


EXAMPLES = {"grid spec": "examples/demo.yaml", "scenario": "examples/sim/small.yaml",
            "demand file": "examples/plan/small.yaml"}
"""read_yaml's `what` -> a shipped example of that input, named when a file holds nothing."""


def _yaml_problem(e: yaml.YAMLError, text: str) -> str:
    """A YAML error in one line: where, and what (libyaml's wording), with a hint for a tab."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None)
    if mark is None or problem is None:
        return f"not valid YAML: {e}"
    context = getattr(e, "context", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}"
    lines = text.splitlines()
    tab = mark.line < len(lines) and "\t" in lines[mark.line]
    return (f"not valid YAML at {where}: {f'{context}: ' if context else ''}{problem}"
            f"{' (a tab: YAML indents with spaces only)' if tab else ''}")


class _SpecLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """yaml.safe_load's loader (libyaml's parser where present), except that a key given twice in one mapping
    is an error: YAML itself keeps the last one, so a second site or tenant of the same name would silently
    replace the first. Keys a merge (`<<: *defaults`) brings in may still be overridden.

    The check runs on a mapping's own keys, once, before its merges are flattened into it: a mapping merged into
    another before its own turn (`top: {<<: *m}` read before `m: {<<: *b, x: 2}`) already holds b's keys beside
    its own, and those are overrides, not repeats."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._checked: set[yaml.MappingNode] = set()

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        if node not in self._checked:
            self._checked.add(node)
            seen: dict[tuple[str, object], yaml.Mark] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node)
                first = seen.setdefault((type(key).__name__, key), key_node.start_mark)
                if first is not key_node.start_mark:
                    again = key_node.start_mark
                    raise yaml.constructor.ConstructorError(
                        None, None, f"{key!r} is given twice in one mapping (first at line {first.line + 1}, "
                        f"column {first.column + 1}; again at line {again.line + 1}, column {again.column + 1}); "
                        "YAML would keep only the last", again)
        super().flatten_mapping(node)


def relative_to(spec: GridSpec, base: Path) -> GridSpec:
    """Files a spec names (documents, SQL databases, an endpoint's tls_ca_file) are relative to the spec file's
    folder."""
    def resolve(path: str) -> str:
        return path if Path(path).is_absolute() else str(base / path)

    sites = {sid: s.model_copy(update={"documents": [d.model_copy(update={"path": resolve(d.path)})
                                                     for d in s.documents]})
             for sid, s in spec.sites.items()}
    agents = spec.agents.model_copy(update={"sql": {k: v.model_copy(update={"path": resolve(v.path)})
                                                    for k, v in spec.agents.sql.items()}})
    endpoints = [e.model_copy(update={"tls_ca_file": resolve(e.tls_ca_file)}) if e.tls_ca_file else e
                 for e in spec.endpoints]
    return spec.model_copy(update={"sites": sites, "agents": agents, "endpoints": endpoints})


def parse_spec(raw: object, source: str = "<spec>") -> GridSpec:
    if not isinstance(raw, dict):
        raise SpecError(source, ["the top level must be a mapping with models, sites and endpoints"])
    try:
        spec = GridSpec.model_validate(raw)
    except ValidationError as e:
        commas = decimal_commas(raw)
        # the nearest field named for the errors listed only: 200,000 unknown keys took ~20 s of difflib
        lines = [line for k, err in enumerate(without_typos_missing(e.errors(), GridSpec))
                 if tuple(err["loc"]) not in commas for line in _lines(err, GridSpec if k < MAX_LISTED else None)]
        raise SpecError(source, list(dict.fromkeys(commas.values())) + lines) from e
    problems = _unknown_policies(spec)
    if spec.gateway.location is not None and parse_point(spec.gateway.location, cities(spec)) is None:
        problems.append(f"gateway.location: {spec.gateway.location!r} is neither 'lat,lon' nor a known city "
                        f"(known: {', '.join(sorted(c.title() for c in cities(spec)))})")
    if spec.gateway.network == "netns" and spec.gateway.location is None:
        problems.append("gateway.location: network: netns needs the gateway's location (the origin of the delays)")
    if spec.gateway.network == "netns" and not any(e.engine == "embedded" for e in spec.endpoints):
        problems.append("gateway.network: netns puts each embedded endpoint's site in a network namespace, and no "
                        "endpoint is embedded (emulate delays external engines; none: real distance)")
    if problems:
        raise SpecError(source, problems)
    return spec


def parse_point(text: str, known: Mapping[str, GeoPoint]) -> GeoPoint | None:
    """'lat,lon' (within range) or the name of a known city (any case); None when it is neither."""
    lat_s, sep, lon_s = text.strip().partition(",")
    if sep:
        try:
            lat, lon = float(lat_s), float(lon_s)
        except ValueError:
            return None
        return GeoPoint(lat, lon) if -90 <= lat <= 90 and -180 <= lon <= 180 else None
    return known.get(text.strip().lower())


def gateway_location(spec: GridSpec) -> GeoPoint | None:
    """Where the gateway is (validated by parse_spec)."""
    return None if spec.gateway.location is None else parse_point(spec.gateway.location, cities(spec))


def field_path(loc: tuple[object, ...]) -> str:
    """A field's path as every file's errors write it, a list's item by its index in brackets
    (`endpoints[0].model`, `sites.fra.documents[1].path`: a grid spec's, its cross-checks' and the gateway's start
    checks'; `tenants[0].share`: a scenario's and a demand file's, which wrote `tenants.0.share` until Z item 5)."""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool) and out:
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def describe(err: object, model: type[BaseModel] | None = None) -> str:
    """One pydantic error as "field.path: message" (the spec's, the scenario's and the demand's wording, the path
    by field_path); `model`, the file's top-level model: a key it does not know names the nearest field (a typo)."""
    d = dict(err)  # type: ignore[call-overload]
    path = tuple(d.get("loc", ()))
    loc = field_path(path)
    if d.get("type") == "invalid_key" and path:  # a mapping's key YAML read as a number: no list's index
        loc = f"{field_path(path[:-1])}.{path[-1]}" if path[:-1] else str(path[-1])
    msg = str(d.get("msg", "invalid")).removeprefix("Value error, ")
    given = d.get("input")
    if d.get("type") == "extra_forbidden" and model is not None:
        msg += unknown_key_hint(model, path)
    if isinstance(given, str) and d.get("type") in ("float_parsing", "int_parsing", "float_type", "int_type") \
            and DECIMAL_COMMA.fullmatch(given.strip()):  # `lat: 50,11` in a block mapping: the string "50,11"
        if d["type"].startswith("int"):  # `slots: 1,000`: `write 1.000` read as 1 slot; a comma there groups digits
            whole = given.strip()
            grouped = THOUSANDS.fullmatch(whole)
            return f"{loc}: a whole number is expected (got {whole}" + (
                f"; a thousands separator? write {whole.replace(',', '')})" if grouped else ")")
        return comma_hint(loc, given.strip())
    if d.get("type") in ("literal_error", "enum"):  # `engine: vlm`: one of a closed set of values, mistyped
        near = did_you_mean(given, re.findall(r"'([^']*)'", str(d.get("ctx", {}).get("expected", ""))))
        msg += near or got(given)
    elif d.get("type") in PARSING and not (isinstance(given, str) and "${" in given):
        msg += got(given)  # `lat: north`: "Input should be a valid number" said not what was there
    elif d.get("type") in TYPES:  # `slots: [8]`; a text is not quoted: `otel.headers: "Authorization=Bearer ..."`
        msg += got(given, quote=False)
    elif d.get("type") == "model_type":  # `h100: 2.50` where a mapping goes said `Input should be a valid dictionary
        # or instance of HardwareOption`: a class name the file never shows
        # a key with no value (`fra:` above mis-indented fields) said nothing of what was there; YAML's `yes` was `True`
        msg = "Input should be a mapping" + (got(given, quote=False) or (
            " (got nothing: the key has no value)" if given is None else
            f" (got the boolean {str(given).lower()})" if isinstance(given, bool) else
            f" (got {given!r})" if isinstance(given, int | float) else ""))
    if isinstance(given, bool) and path[-1:] == ("[key]",):  # a mapping's key: `sites: {no: ...}` said "sites.0.[key]"
        where = field_path(path[:-2])
        return (f"{where}: a key YAML read as the boolean {str(given).lower()} (a bare yes, no, on, off, true or false "
                "is a boolean in YAML): quote it, e.g. 'no': for Norway")
    if isinstance(given, bool) and d.get("type") == "string_type":
        msg += (f" (YAML reads a bare yes, no, on, off, true or false as the boolean {str(given).lower()}: quote "
                "it, e.g. jurisdiction: 'NO')")
    elif isinstance(given, str) and "${" in given and "not expanded" not in msg:  # a url's check says it itself
        msg += " (environment variables are not expanded in a grid spec; write the value)"
    return f"{loc}: {msg}"


PARSING = ("int_parsing", "float_parsing", "bool_parsing")
"""Pydantic's errors for a text where a number or a boolean goes: the text is quoted back (`got()`)."""
TYPES = ("int_type", "float_type", "bool_type", "string_type", "dict_type", "list_type")
"""Pydantic's errors for a value of the wrong kind: a list or a mapping is named as such (`got()`)."""
GOT_CHARS = 40
"""The most characters of a value an error quotes back."""


def got(given: object, *, quote: bool = True) -> str:
    """` (got 'north')` for a text (` (got a text)` unless `quote`: a text where a mapping goes may be a secret,
    `otel.headers` written as one header line), ` (got a list)` / ` (got a mapping)` for those; "" for anything
    else (a number or a boolean given where another kind goes: pydantic's words say enough, and a bare yes/no has
    its own hint)."""
    if isinstance(given, str):
        return f" (got {given[:GOT_CHARS]!r}{'...' if len(given) > GOT_CHARS else ''})" if quote else " (got a text)"
    if isinstance(given, list | tuple):
        return " (got a list)"
    if isinstance(given, dict):
        return " (got a mapping)"
    return ""


DECIMAL_COMMA = re.compile(r"[+-]?\d+,\d+")
"""`50,11`: a number written with a decimal comma (a European locale's), which YAML reads as a string."""
THOUSANDS = re.compile(r"[+-]?\d{1,3}(?:,\d{3})+")
"""`1,000`: a whole number with its thousands grouped by commas."""


def comma_hint(path: str, written: str) -> str:
    """The line for a number written with a decimal comma: `sites.fra.lat: a number is expected (got 50,11; a
    decimal comma? write 50.11)`."""
    return f"{path}: a number is expected (got {written}; a decimal comma? write {written.replace(',', '.')})"


def decimal_commas(raw: object, loc: tuple[object, ...] = ()) -> dict[tuple[object, ...], str]:
    """Numbers written with a decimal comma in a flow mapping (`{lat: 50,11, lon: 8,68}`), which YAML reads as
    `lat: 50` and a key `11` with no value ("sites.fra.11: Keys should be strings"): each stray key's path, with
    the line that names the field it belongs to. YAML has already read `05` as 5 (an octal): said as read."""
    found: dict[tuple[object, ...], str] = {}
    if isinstance(raw, dict):
        before: tuple[object, object] | None = None
        for key, value in raw.items():
            stray = isinstance(key, int) and not isinstance(key, bool) and key >= 0 and value is None
            if stray and before is not None and isinstance(before[1], int) and not isinstance(before[1], bool):
                found[(*loc, key)] = comma_hint(field_path((*loc, before[0])), f"{before[1]},{key}")
            else:
                found.update(decimal_commas(value, (*loc, key)))
            before = (key, value)
    elif isinstance(raw, list):
        for i, item in enumerate(raw):
            found.update(decimal_commas(item, (*loc, i)))
    return found


def _lines(err: object, model: type[BaseModel] | None) -> list[str]:
    """The lines of one pydantic error: the spec's cross-checks each name their own field."""
    found = dict(err).get("ctx", {}).get("error")  # type: ignore[call-overload]
    return list(found.problems) if isinstance(found, SpecProblems) else [describe(err, model)]


def without_typos_missing(errors: list[typing.Any], model: type[BaseModel] | None) -> list[typing.Any]:
    """Pydantic's errors less each `Field required` of a field that an unknown key beside it is nearly spelt as: a
    required key mistyped (`peak_rp: 6`) was two lines, `traffic.peak_rps: Field required` and `traffic.peak_rp:
    Extra inputs are not permitted (did you mean peak_rps?)`; the second says it all. Only the first MAX_LISTED
    errors are looked at (a difflib pass each), as describe's hints are."""
    missing = {tuple(e.get("loc", ())) for e in errors if e.get("type") == "missing"}
    parents = {loc[:-1] for loc in missing if loc}
    if model is None or not parents:  # no difflib pass where nothing is missing (2,000 unknown keys: none)
        return errors
    meant: set[tuple[object, ...]] = set()
    for err in errors[:MAX_LISTED]:
        loc = tuple(err.get("loc", ()))
        typo = err.get("type") == "extra_forbidden" and loc and loc[:-1] in parents
        holder = _model_at(model, loc[:-1]) if typo else None
        near = nearest(loc[-1], holder.model_fields) if holder is not None else None
        if near is not None:
            meant.add((*loc[:-1], near))
    return [e for e in errors if not (e.get("type") == "missing" and tuple(e.get("loc", ())) in meant & missing)]


def unknown_key_hint(model: type[BaseModel], loc: tuple[object, ...]) -> str:
    """` (did you mean jurisdiction?)` for a key at `loc` that the model holding it does not have, when one of
    its fields is spelt nearly so; else ` (known: ...)` when it has a few; "" when the model is not found (a
    typo such as `jurisdicton` said only "Extra inputs are not permitted", and `jurisdiction: Field required`)."""
    holder = _model_at(model, loc[:-1])
    if holder is None or not loc:
        return ""
    fields = list(holder.model_fields)
    near = did_you_mean(loc[-1], fields)
    if near:
        return near
    return f" (known: {', '.join(fields)})" if len(fields) <= 12 else ""


def _model_at(tp: object, loc: tuple[object, ...]) -> type[BaseModel] | None:
    """The pydantic model a validation error's `loc` leads to from `tp`: a model's field, a mapping's value, a
    list's item (an optional's or a union's member: the one the path goes on through); None where it is lost."""
    for part in loc:
        found = None
        for member in _members(tp):
            if isinstance(member, type) and issubclass(member, BaseModel):
                field = member.model_fields.get(str(part))
                if field is not None:
                    found = field.annotation
                elif part == member.__name__:  # a union's branch, named by pydantic
                    found = member
            else:
                args = typing.get_args(member)
                origin = typing.get_origin(member)
                if origin in (dict, Mapping) and len(args) == 2:
                    found = args[1]
                elif origin in (list, tuple, set, frozenset) and args and isinstance(part, int):
                    found = args[min(part, len(args) - 1)] if origin is tuple and args[-1] is not Ellipsis \
                        else args[0]
            if found is not None:
                break
        if found is None:
            return None
        tp = found
    models = [m for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)]
    return models[0] if len(models) == 1 else None


def _members(tp: object) -> list[object]:
    """A type's alternatives: an optional's or a union's members, an Annotated's type; else the type itself."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin is typing.Union or origin is types.UnionType:
        return [m for a in typing.get_args(tp) for m in _members(a) if m is not type(None)]
    return [tp]


def _unknown_policies(spec: GridSpec) -> list[str]:
    known = set(policies(spec))
    problems = []
    if spec.gateway.default_policy not in known:
        problems.append(f"gateway.default_policy: unknown policy {spec.gateway.default_policy!r}"
                        f"{did_you_mean(spec.gateway.default_policy, known)} (known: {', '.join(sorted(known))})")
    for name, t in spec.tenants.items():
        if t.policy is not None and t.policy not in known:
            problems.append(f"tenants.{name}.policy: unknown policy {t.policy!r}{did_you_mean(t.policy, known)} "
                            f"(known: {', '.join(sorted(known))})")
    return problems


def policies(spec: GridSpec) -> dict[str, Policy]:
    """The built-in policies and the spec's. With the grid's `slo`, every built-in gates on it, and so does
    each spec policy for what it does not set itself (`ttft_slo_ms`, `tpot_slo_ms`)."""
    slo = spec.slo
    out = dict(BUILTIN_POLICIES) if slo is None else {
        name: with_slo(p, slo.ttft_ms, slo.tpot_ms) for name, p in BUILTIN_POLICIES.items()}
    for name, p in spec.policies.items():
        own = p.model_fields_set
        ttft = p.ttft_slo_ms if slo is None or "ttft_slo_ms" in own else slo.ttft_ms
        tpot = p.tpot_slo_ms if slo is None or "tpot_slo_ms" in own else slo.tpot_ms
        out[name] = Policy(name, dict(p.weights), p.tie_tolerance, ttft, p.allow_family_fallback,
                           tpot_slo_ms=tpot, cost_reference_usd_per_mtok=p.cost_reference_usd_per_mtok)
    return out


def sites(spec: GridSpec) -> dict[str, Site]:
    return {
        sid: Site(sid, s.name, GeoPoint(s.lat, s.lon), s.jurisdiction, s.hardware,
                  s.power_budget_w, s.idle_power_w, s.peak_power_w)
        for sid, s in spec.sites.items()
    }


def models(spec: GridSpec) -> dict[str, ModelInfo]:
    return {name: ModelInfo(name, m.family, m.params_b, m.context) for name, m in spec.models.items()}


def endpoints(spec: GridSpec) -> tuple[Endpoint, ...]:
    out = []
    for e in spec.endpoints:
        m = spec.models[e.model]
        out.append(Endpoint(
            id=e.id, site_id=e.site, model=e.model, family=m.family, params_b=m.params_b,
            price_in_per_mtok=e.price_in_per_mtok, price_out_per_mtok=e.price_out_per_mtok,
            max_concurrency=e.slots, prefill_tps=e.prefill_tps, decode_tps=e.decode_tps, engine=e.engine,
        ))
    return tuple(out)


def cities(spec: GridSpec) -> dict[str, GeoPoint]:
    """Named client locations: every site's city plus the spec's extra cities, matched case-insensitively."""
    out = {s.name.lower(): GeoPoint(s.lat, s.lon) for s in spec.sites.values()}
    out.update({name.lower(): GeoPoint(lat, lon) for name, (lat, lon) in spec.cities.items()})
    return out
