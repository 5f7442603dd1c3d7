"""schema_refs.embedded and the constrained step schema: a tool's parameters or the client's answer format with
`$defs` (a pydantic model with a nested model) keep every `$ref` resolvable from the root of the schema the engine
gets. Before, the refs pointed at a root `$defs` that was not there: llama.cpp's grammar converter fails such a
request ("Unresolved $ref"), so a constrained tool loop with a nested pydantic tool never ran."""

from __future__ import annotations

from typing import Any

from aigrid.agents.schema_refs import embedded
from aigrid.agents.steps import ToolSpec, step_schema
from tests.agents.json_refs import resolved, unresolved

PET = {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]}}, "required": ["kind"]}
OWNER = {"$defs": {"Pet": PET}, "type": "object", "required": ["pets"],
         "properties": {"pets": {"type": "array", "items": {"$ref": "#/$defs/Pet"}}}}


def test_definitions_move_to_the_root_under_a_prefix_and_their_refs_follow() -> None:
    defs: dict[str, Any] = {}
    legacy = {"definitions": {"Pet": PET}, "type": "object", "properties": {
        "best": {"$ref": "#/definitions/Pet"}, "kind": {"$ref": "#/definitions/Pet/properties/kind"},
        "$ref": {"type": "string"}}}  # a property named $ref is a property, not a ref
    assert embedded(OWNER, "t0-", defs) == {"type": "object", "required": ["pets"], "properties": {
        "pets": {"type": "array", "items": {"$ref": "#/$defs/t0-Pet"}}}}
    assert embedded(legacy, "answer-", defs)["properties"] == {
        "best": {"$ref": "#/$defs/answer-Pet"}, "kind": {"$ref": "#/$defs/answer-Pet/properties/kind"},
        "$ref": {"type": "string"}}
    assert defs == {"t0-Pet": PET, "answer-Pet": PET}
    assert embedded(PET, "t1-", defs) == PET and len(defs) == 2  # nothing to move: as it was


def test_every_ref_of_a_step_schema_resolves_from_its_root() -> None:
    owner = ToolSpec("owner", "", OWNER, server=False)
    pet = ToolSpec("pet", "", {**OWNER, "$defs": {"Pet": {**PET, "title": "another Pet"}}}, server=False)
    answer = {"type": "json_schema", "json_schema": {"name": "o", "schema": OWNER}}
    for schema in (step_schema([owner]), step_schema([owner], allow_answer=False),
                   step_schema([owner, pet], client_format=answer), step_schema([], client_format=answer)):
        assert unresolved(schema) == [], schema
    both = step_schema([owner, pet], client_format=answer)
    assert both["$defs"]["t0-Pet"] != both["$defs"]["t1-Pet"]  # two tools' same-named models kept apart
    assert "$defs" not in step_schema([ToolSpec("pet", "", PET, server=False)])  # none to move: no root $defs


# OpenAI's structured outputs document root recursion with `"$ref": "#"` (a UI tree whose children are the tree)
TREE = {"type": "object", "additionalProperties": False, "required": ["tag", "children"], "properties": {
    "tag": {"enum": ["div", "p"]}, "children": {"type": "array", "items": {"$ref": "#"}},
    "first": {"$ref": "#/properties/tag"}}}


def test_a_ref_from_the_embedded_schemas_own_root_still_leads_into_it() -> None:
    """`#` (root recursion) and `#/properties/...` point from the root of the schema as the client wrote it.
    Embedded, they pointed at the step schema's root instead: the tree's children were held to a whole step
    ({"tool": ..., "arguments": ...} or {"answer": ...}), resolvable but another schema, and a pointer into the
    step's own properties led nowhere."""
    tree = ToolSpec("tree", "", TREE, server=False)
    answer = {"type": "json_schema", "json_schema": {"name": "t", "schema": TREE}}
    for schema, where in ((step_schema([tree], allow_answer=False), ("properties", "arguments")),
                          (step_schema([tree], client_format=answer), ("anyOf", 1, "properties", "answer"))):
        assert unresolved(schema) == [], schema
        node: Any = schema
        for key in where:
            node = node[key]
        embedded_tree = resolved(schema, node["$ref"]) if "$ref" in node else node
        assert embedded_tree["required"] == ["tag", "children"], schema
        assert resolved(schema, embedded_tree["properties"]["children"]["items"]["$ref"]) == embedded_tree, schema
        assert resolved(schema, embedded_tree["properties"]["first"]["$ref"]) == {"enum": ["div", "p"]}, schema
