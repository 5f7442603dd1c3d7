"""A JSON schema placed inside another keeps its `$ref`s resolvable.

A constrained turn's step schema (steps.step_schema) puts each tool's parameters and the client's answer format
inside one schema. A pydantic model with a nested model (the SDKs' `pydantic_function_tool(M)`,
`chat.completions.parse(response_format=M)`, an Agents SDK `output_type`) has its `$defs` at its own root and
refers to them as `#/$defs/Name`: a pointer from the ROOT of the schema the engine gets, where, once embedded, there
is no `$defs` (llama.cpp's converter fails the request, "Unresolved $ref"; xgrammar alike). `embedded` moves the
embedded schema's `$defs` (and `definitions`) to the root's, each under a prefix of its own, and renames the refs
to them. A ref to the embedded schema's own root or into it (`#`, the root recursion OpenAI's structured outputs
document, or `#/properties/...`) would lead to the step schema's root instead: such a schema moves to the root's
`$defs` whole, under its prefix without the dash, and is embedded as a ref to it.

What the engines' converters read (checked in their sources, thirty-fourth session): llama.cpp's
json-schema-to-grammar splits a pointer on `/` and looks each token up as written (no `~0`/`~1` unescaping, no
percent-decoding); xgrammar's older converter alike, its newer one unescapes `~0`/`~1`; none percent-decodes. So a
moved definition gets a name that needs no escaping (letters, digits, `_`, `.`, `-`: others become `_`, a taken name
a `-2`, `-3` suffix), and a ref's name token is matched both decoded (RFC 6901: `%25`, then `~1`, `~0`) and as
written. Only schema keywords are walked (SUBSCHEMA_KEYS, NAMED_SCHEMAS: `properties`, `items`, `allOf`, `if` ...):
`const`, `enum`, `default`, `examples`, an `x-` extension and any other keyword hold data, not schemas, and a
`{"$ref": ...}` there is a value kept as written, never renamed (a property NAMED `default` is a schema, and is). A
ref to the schema's own root `$id` (`"$id": "https://ex.com/s.json"` with `https://ex.com/s.json#/$defs/A`, or
`s.json#/$defs/A` resolved against it) is this schema's own pointer, rewritten `#/$defs/A` (`localized`). A ref that
is still not a pointer from this schema's root (`https://...`, `other.json#/x`, an anchor `#name`) is left as
written here; where a turn's tool calls are decoded under a grammar (the `constrained` mode, or a forced tool
choice) a client's tool holding one is its 400 (`outside_ref`, loop.check_grammar_refs; an MCP server's such tool is
not offered): the grid fetches nothing,
and no engine does (the bundled llama-server 0.3.36 answers 400 "unsupported $ref https://..."; xgrammar treats it
as any value or fails; llguidance refuses it). Measured on that llama-server (SmolLM2-135M, a schema sent as
`response_format`, 7 Dec 2026): `#/$defs/a~1b` to a definition named `a/b` is its 400 "cannot resolve $ref", a
`{"$ref": ...}` inside `const` or `enum` is served (it reads no ref there). Cycles (a definition referring to itself, two to each other, `#`) are
renamed, never followed, so they cost nothing here."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin

DEF_KEYS = ("$defs", "definitions")
NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
                           "dependencies"})
"""The keywords whose value maps names to schemas: each value is a schema whatever its name (`default`, `$ref`)."""
SUBSCHEMA_KEYS = frozenset({"items", "additionalItems", "prefixItems", "contains", "additionalProperties",
                            "propertyNames", "unevaluatedItems", "unevaluatedProperties", "allOf", "anyOf", "oneOf",
                            "not", "if", "then", "else", "contentSchema"})
"""The keywords whose value is a schema or a list of schemas. Every other keyword's value (`const`, `enum`,
`default`, `examples`, `x-...`, annotations) is data: nothing in it is a reference."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _decoded(token: str) -> str:
    """A JSON pointer token as RFC 6901 reads it in a URI fragment: percent-decoded, then `~1` -> `/`, `~0` -> `~`."""
    return unquote(token).replace("~1", "/").replace("~0", "~")


def _subschemas(node: Mapping[str, Any]) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """(path from `node`, value) of each of `node`'s subschemas, read through schema keywords only."""
    for key, value in node.items():
        if key in NAMED_SCHEMAS and isinstance(value, Mapping):
            yield from (((key, name), sub) for name, sub in value.items())
        elif key in SUBSCHEMA_KEYS:
            if isinstance(value, list):
                yield from (((key, i), sub) for i, sub in enumerate(value))
            else:
                yield (key,), value


def _rebuilt(node: Mapping[str, Any], each: Callable[[Any], Any]) -> dict[str, Any]:
    """`node` copied with `each` applied to every subschema (`_subschemas`); its other keywords as they were."""
    out = dict(node)
    for key, value in node.items():
        if key in NAMED_SCHEMAS and isinstance(value, Mapping):
            out[key] = {name: each(sub) for name, sub in value.items()}
        elif key in SUBSCHEMA_KEYS:
            out[key] = [each(v) for v in value] if isinstance(value, list) else each(value)
    return out


def _home(schema: Any) -> str | None:
    """The root `$id` of `schema` without its fragment (the base its refs are resolved against); None if none."""
    sid = schema.get("$id") if isinstance(schema, Mapping) else None
    return (urldefrag(sid).url or None) if isinstance(sid, str) else None


def _local(ref: str, home: str | None) -> str:
    """`ref` as a pointer from the schema's root where it leads into the schema itself through its root `$id`
    (`https://ex.com/s.json#/$defs/A`, `s.json#/$defs/A` against `https://ex.com/s.json`: `#/$defs/A`); else as
    written (an anchor `#name` on it too: no pointer)."""
    if home is None or ref.startswith("#"):
        return ref
    url, fragment = urldefrag(urljoin(home, ref))
    if url != home or (fragment and not fragment.startswith("/")):
        return ref
    return f"#{fragment}"


def _is_pointer(ref: str) -> bool:
    return ref == "#" or ref.startswith("#/")


def localized(schema: Mapping[str, Any]) -> dict[str, Any]:
    """`schema` with each ref to its own root `$id` rewritten as a pointer from its root (`_local`); refs under a
    subschema with an `$id` of its own (another base) are left as written."""
    home = _home(schema)

    def walk(node: Any, top: bool = False) -> Any:
        if not isinstance(node, Mapping) or (not top and "$id" in node):
            return node
        out = _rebuilt(node, walk)
        if isinstance(out.get("$ref"), str):
            out["$ref"] = _local(str(out["$ref"]), home)
        return out

    result: dict[str, Any] = walk(schema, top=True)
    return result


def outside_ref(schema: Any) -> tuple[tuple[str | int, ...], str] | None:
    """The path and value of a `$ref` of `schema` that is no pointer from its own root (`#`, `#/...`, or one
    through its root `$id`): a URL, another document, an anchor, which the grid does not fetch and engines refuse
    (module doc); None if there is none. Only schema keywords are read (`_subschemas`); walked with a stack,
    whatever the depth."""
    stack: list[tuple[tuple[str | int, ...], Any, str | None]] = [((), schema, _home(schema))]
    while stack:
        path, node, home = stack.pop()
        if not isinstance(node, Mapping):
            continue
        if path and "$id" in node:
            home = None  # another base beneath: nothing is rewritten there (localized)
        ref = node.get("$ref")
        if isinstance(ref, str) and not _is_pointer(_local(ref, home)):
            return (*path, "$ref"), ref
        stack.extend(((*path, *where), sub, home) for where, sub in reversed(list(_subschemas(node))))
    return None


def embedded(schema: Mapping[str, Any], prefix: str, root_defs: dict[str, Any]) -> dict[str, Any]:
    """`schema` to be placed inside another: its definitions added to `root_defs` (the outer schema's root `$defs`)
    as `prefix` + their name (made safe and unique: module doc), every `$ref` to one of them (or into one,
    `#/$defs/Name/...`) renamed to match. With a ref to its own root or into it (`#`, `#/properties/...`), the
    schema itself is added as `prefix` less its dash (`t0`, `answer`: no moved definition has that name) and comes
    back as `{"$ref": "#/$defs/t0"}`. A schema with neither comes back as it was (copied at its top level), less
    its root `$id`, whose refs are pointers now (`localized`)."""
    body = localized(schema)
    if _home(schema) is not None:  # refs through it are pointers now: its root is no resource of its own inside
        del body["$id"]
    home = prefix.removesuffix("-")
    renamed: dict[tuple[str, str], str] = {}  # (defs keyword, name as the schema has it) -> its name at the root
    moved: dict[str, Any] = {}
    suffixes: dict[str, int] = {}  # a made-safe name -> the suffix its last definition got (1: none)
    for key in DEF_KEYS:
        defs = body.get(key)
        if not isinstance(defs, Mapping):
            continue
        del body[key]
        for name, sub in defs.items():
            base = prefix + _UNSAFE.sub("_", str(name))
            # the next suffix of this name is tried from the last one given (those below it were taken then, and
            # stay taken): trying each from `-2` again was quadratic in names made alike (`xĀ`, `xā`, ... are all
            # `x_`): 8,000 of them, 120 KB of a request's `response_format`, held the event loop 5.6 s
            n = suffixes.get(base, 1)
            new = base if n == 1 else f"{base}-{n}"
            while new in moved or new in root_defs or new == home:  # `$defs` and `definitions` may share a name
                n += 1
                new = f"{base}-{n}"
            suffixes[base] = n
            renamed[(key, str(name))] = new
            moved[new] = sub
    rooted = [False]  # whether a ref leads to the schema's own root or into it (not to a moved definition)

    def ref_of(ref: str) -> str:
        if not _is_pointer(ref):
            return ref  # not a pointer from this schema's root: left as written (module doc)
        tokens = ref[2:].split("/") if ref != "#" else []
        if len(tokens) >= 2 and tokens[0] in DEF_KEYS:
            new = renamed.get((tokens[0], _decoded(tokens[1]))) or renamed.get((tokens[0], tokens[1]))
            if new is not None:
                return "/".join(["#", "$defs", new, *tokens[2:]])
        rooted[0] = True
        return f"#/$defs/{home}{ref[1:]}"

    def rename(node: Any) -> Any:
        if not isinstance(node, Mapping):
            return node
        out = _rebuilt(node, rename)
        if isinstance(out.get("$ref"), str):
            out["$ref"] = ref_of(str(out["$ref"]))
        return out

    renamed_body: dict[str, Any] = rename(body)
    if not renamed and not rooted[0]:
        return body
    root_defs.update({name: rename(sub) for name, sub in moved.items()})
    if rooted[0]:
        root_defs[home] = renamed_body
        return {"$ref": f"#/$defs/{home}"}
    return renamed_body
