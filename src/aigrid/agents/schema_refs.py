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
written. `const`, `enum`, `default`, `examples` hold data, not schemas: a `{"$ref": ...}` there is a value the model
must write as it is, never renamed (a property NAMED `default` is a schema, and is). A ref that is not a pointer from
this schema's root (`https://...`, `other.json#/x`, an anchor `#name`) is left as written here, and a client's tool
holding one is its 400 before routing (`outside_ref`, loop.check_tool_definition; an MCP server's such tool is not
offered): the grid fetches nothing,
and no engine does (the bundled llama-server 0.3.36 answers 400 "unsupported $ref https://..."; xgrammar treats it
as any value or fails; llguidance refuses it). Measured on that llama-server (SmolLM2-135M, a schema sent as
`response_format`, 7 Dec 2026): `#/$defs/a~1b` to a definition named `a/b` is its 400 "cannot resolve $ref", a
`{"$ref": ...}` inside `const` or `enum` is served (it reads no ref there). Cycles (a definition referring to itself, two to each other, `#`) are
renamed, never followed, so they cost nothing here."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

DEF_KEYS = ("$defs", "definitions")
DATA_KEYS = frozenset({"const", "enum", "default", "examples"})
"""The keywords whose value is data (JSON the instance may hold), not a schema: nothing in them is a reference."""
NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions", "dependentSchemas",
                           "dependencies"})
"""The keywords whose value maps names to schemas: each value is a schema whatever its name (`default`, `$ref`)."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _decoded(token: str) -> str:
    """A JSON pointer token as RFC 6901 reads it in a URI fragment: percent-decoded, then `~1` -> `/`, `~0` -> `~`."""
    return unquote(token).replace("~1", "/").replace("~0", "~")


def outside_ref(schema: Any) -> tuple[tuple[str | int, ...], str] | None:
    """The path and value of a `$ref` of `schema` that is no pointer from its own root (`#`, `#/...`): a URL,
    another document, an anchor, which the grid does not fetch and engines refuse (module doc); None if there is
    none. Data keywords' values are not read (DATA_KEYS); walked with a stack, whatever the depth."""
    stack: list[tuple[tuple[str | int, ...], Any]] = [((), schema)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, Mapping):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref != "#" and not ref.startswith("#/"):
                return (*path, "$ref"), ref
            for key, value in reversed(list(node.items())):
                if key in DATA_KEYS:
                    continue
                if key in NAMED_SCHEMAS and isinstance(value, Mapping):
                    stack.extend(((*path, key, name), sub) for name, sub in reversed(list(value.items())))
                elif isinstance(value, Mapping | list):
                    stack.append(((*path, key), value))
        elif isinstance(node, list):
            stack.extend(((*path, i), v) for i, v in reversed(list(enumerate(node))))
    return None


def embedded(schema: Mapping[str, Any], prefix: str, root_defs: dict[str, Any]) -> dict[str, Any]:
    """`schema` to be placed inside another: its definitions added to `root_defs` (the outer schema's root `$defs`)
    as `prefix` + their name (made safe and unique: module doc), every `$ref` to one of them (or into one,
    `#/$defs/Name/...`) renamed to match. With a ref to its own root or into it (`#`, `#/properties/...`), the
    schema itself is added as `prefix` less its dash (`t0`, `answer`: no moved definition has that name) and comes
    back as `{"$ref": "#/$defs/t0"}`. A schema with neither comes back as it was (copied at its top level)."""
    body = dict(schema)
    home = prefix.removesuffix("-")
    renamed: dict[tuple[str, str], str] = {}  # (defs keyword, name as the schema has it) -> its name at the root
    moved: dict[str, Any] = {}
    for key in DEF_KEYS:
        defs = body.get(key)
        if not isinstance(defs, Mapping):
            continue
        del body[key]
        for name, sub in defs.items():
            new = base = prefix + _UNSAFE.sub("_", str(name))
            n = 1
            while new in moved or new in root_defs or new == home:  # `$defs` and `definitions` may share a name
                n += 1
                new = f"{base}-{n}"
            renamed[(key, str(name))] = new
            moved[new] = sub
    rooted = [False]  # whether a ref leads to the schema's own root or into it (not to a moved definition)

    def ref_of(ref: str) -> str:
        if ref != "#" and not ref.startswith("#/"):
            return ref  # not a pointer from this schema's root: left as written (module doc)
        tokens = ref[2:].split("/") if ref != "#" else []
        if len(tokens) >= 2 and tokens[0] in DEF_KEYS:
            new = renamed.get((tokens[0], _decoded(tokens[1]))) or renamed.get((tokens[0], tokens[1]))
            if new is not None:
                return "/".join(["#", "$defs", new, *tokens[2:]])
        rooted[0] = True
        return f"#/$defs/{home}{ref[1:]}"

    def rename(node: Any) -> Any:
        if isinstance(node, Mapping):
            out = {k: v if k in DATA_KEYS else
                   {name: rename(sub) for name, sub in v.items()} if k in NAMED_SCHEMAS and isinstance(v, Mapping)
                   else rename(v) for k, v in node.items()}
            if isinstance(out.get("$ref"), str):
                out["$ref"] = ref_of(str(out["$ref"]))
            return out
        if isinstance(node, list):
            return [rename(v) for v in node]
        return node

    renamed_body: dict[str, Any] = rename(body)
    if not renamed and not rooted[0]:
        return body
    root_defs.update({name: rename(sub) for name, sub in moved.items()})
    if rooted[0]:
        root_defs[home] = renamed_body
        return {"$ref": f"#/$defs/{home}"}
    return renamed_body
