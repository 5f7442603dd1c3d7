"""A JSON schema placed inside another keeps its `$ref`s resolvable.

A constrained turn's step schema (steps.step_schema) puts each tool's parameters and the client's answer format
inside one schema. A pydantic model with a nested model (the SDKs' `pydantic_function_tool(M)`,
`chat.completions.parse(response_format=M)`, an Agents SDK `output_type`) has its `$defs` at its own root and
refers to them as `#/$defs/Name`: a pointer from the ROOT of the schema the engine gets, where, once embedded, there
is no `$defs` (llama.cpp's converter fails the request, "Unresolved $ref"; xgrammar alike). `embedded` moves the
embedded schema's `$defs` (and `definitions`) to the root's, each under a prefix of its own, and renames the refs
to them. A ref to the embedded schema's own root or into it (`#`, the root recursion OpenAI's structured outputs
document, or `#/properties/...`) would lead to the step schema's root instead: such a schema moves to the root's
`$defs` whole, under its prefix without the dash, and is embedded as a ref to it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DEF_KEYS = ("$defs", "definitions")


def embedded(schema: Mapping[str, Any], prefix: str, root_defs: dict[str, Any]) -> dict[str, Any]:
    """`schema` to be placed inside another: its definitions added to `root_defs` (the outer schema's root `$defs`)
    as `prefix` + their name, every `$ref` to one of them (or into one, `#/$defs/Name/...`) renamed to match. With a
    ref to its own root or into it (`#`, `#/properties/...`), the schema itself is added as `prefix` less its dash
    (`t0`, `answer`: no moved definition has that name) and comes back as `{"$ref": "#/$defs/t0"}`. A schema with
    neither comes back as it was (copied at its top level)."""
    body = dict(schema)
    renamed: dict[str, str] = {}
    moved: dict[str, Any] = {}
    for key in DEF_KEYS:
        defs = body.get(key)
        if not isinstance(defs, Mapping):
            continue
        del body[key]
        for name, sub in defs.items():
            renamed[f"#/{key}/{name}"] = f"#/$defs/{prefix}{name}"
            moved[f"{prefix}{name}"] = sub
    home = prefix.removesuffix("-")
    rooted = [False]  # whether a ref leads to the schema's own root or into it (not to a moved definition)

    def ref_of(ref: str) -> str:
        if ref != "#" and not ref.startswith("#/"):
            return ref  # not a pointer from this schema's root
        head, sep, rest = ref.partition("/")  # "#", "/", "$defs/Name/..."
        kind, _, tail = rest.partition("/")
        name, slash, deeper = tail.partition("/")
        new = renamed.get(f"{head}{sep}{kind}/{name}")
        if new is not None:
            return new + slash + deeper
        rooted[0] = True
        return f"#/$defs/{home}{ref[1:]}"

    def rename(node: Any) -> Any:
        if isinstance(node, Mapping):
            out = {k: rename(v) for k, v in node.items()}
            if isinstance(out.get("$ref"), str):
                out["$ref"] = ref_of(out["$ref"])
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
