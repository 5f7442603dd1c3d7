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


def _literally(schema: dict[str, Any], ref: str) -> Any:
    """What `ref` leads to as llama.cpp's converter resolves it: tokens split on `/` and looked up as written (no
    `~0`/`~1` unescaping, no percent-decoding: common/json-schema-to-grammar.cpp, resolve_refs)."""
    target: Any = schema
    for part in ref.removeprefix("#/").split("/") if ref != "#" else []:
        if not isinstance(target, dict) or part not in target:
            return None
        target = target[part]
    return target


def test_defs_and_definitions_holding_one_name_both_move() -> None:
    """(7 Dec 2026, thirty-fourth session) A schema whose `$defs` and `definitions` both hold `Pet` had both moved
    to `t0-Pet`, the second over the first: `#/$defs/Pet` then led to the `definitions` one."""
    other = {"type": "string", "title": "the legacy Pet"}
    both = {"$defs": {"Pet": PET}, "definitions": {"Pet": other}, "type": "object", "properties": {
        "new": {"$ref": "#/$defs/Pet"}, "old": {"$ref": "#/definitions/Pet"}}}
    schema = step_schema([ToolSpec("both", "", both, server=False)], allow_answer=False)
    assert unresolved(schema) == [], schema
    props = schema["properties"]["arguments"]["properties"]
    assert resolved(schema, props["new"]["$ref"]) == PET
    assert resolved(schema, props["old"]["$ref"]) == other


def test_a_definitions_name_that_needs_escaping_is_moved_under_one_that_does_not() -> None:
    """(7 Dec 2026, thirty-fourth session) A ref's name token is a JSON pointer token in a URI fragment: `a/b` is
    written `a~1b`, `c~d` `c~0d`, `e%f` `e%25f`. They were matched as written against the names, found nothing, and
    were taken for refs into the schema's own root (`#/$defs/t0/$defs/a~1b`), where the moved `$defs` no longer
    were: unresolved. Now matched decoded (or as written, as engines read them), and the moved definition gets a name
    no engine must unescape (llama.cpp's converter looks tokens up as written)."""
    names = {"a/b": {"type": "integer"}, "c~d": {"type": "boolean"}, "e%f": {"type": "null"},
             "g h": {"type": "number"}, "a~1b": {"type": "string"}}
    refs = {"slash": "#/$defs/a~1b", "tilde": "#/$defs/c~0d", "percent": "#/$defs/e%25f", "space": "#/$defs/g%20h",
            "slash_deeper": "#/$defs/a~1b/type"}
    tool = {"$defs": names, "type": "object", "properties": {k: {"$ref": v} for k, v in refs.items()}}
    schema = step_schema([ToolSpec("odd", "", tool, server=False)], allow_answer=False)
    props = schema["properties"]["arguments"]["properties"]
    assert unresolved(schema) == [], schema
    for key, want in (("slash", names["a/b"]), ("tilde", names["c~d"]), ("percent", names["e%f"]),
                      ("space", names["g h"]), ("slash_deeper", "integer")):
        ref = props[key]["$ref"]
        assert "~" not in ref and "%" not in ref and " " not in ref, ref
        assert resolved(schema, ref) == want == _literally(schema, ref), (key, ref)
    # a name that is literally `a~1b` (no `a/b` beside it) is found as written, as the engines look it up
    literal = {"$defs": {"a~1b": PET}, "type": "object", "properties": {"p": {"$ref": "#/$defs/a~1b"}}}
    schema = step_schema([ToolSpec("lit", "", literal, server=False)], allow_answer=False)
    ref = schema["properties"]["arguments"]["properties"]["p"]["$ref"]
    assert _literally(schema, ref) == PET == resolved(schema, ref), ref


def test_a_ref_inside_const_enum_default_or_examples_is_data_and_kept() -> None:
    """(7 Dec 2026, thirty-fourth session) `const`, `enum`, `default` and `examples` hold values, not schemas: a
    tool whose argument must be the JSON `{"$ref": "#/$defs/Pet"}` (a schema-editing tool) had that value renamed to
    `#/$defs/t0-Pet`, so the model was held to write another value; an `enum` holding `{"$ref": "#"}` made the whole
    schema move as if it referred to its own root. Values are now kept as written; a property NAMED `default` or
    `const` is still a schema, its ref renamed."""
    value = {"$ref": "#/$defs/Pet"}
    tool = {"$defs": {"Pet": PET}, "type": "object", "properties": {
        "doc": {"const": value, "default": value, "examples": [value, {"$ref": "#"}]},
        "pick": {"enum": [{"$ref": "#"}, value]},
        "default": {"$ref": "#/$defs/Pet"}, "const": {"items": {"$ref": "#/$defs/Pet"}}}}
    defs: dict[str, Any] = {}
    out = embedded(tool, "t0-", defs)
    assert "$ref" not in out, out  # nothing referred to the schema's own root: not moved whole
    props = out["properties"]
    assert props["doc"] == {"const": value, "default": value, "examples": [value, {"$ref": "#"}]}
    assert props["pick"] == {"enum": [{"$ref": "#"}, value]}
    assert props["default"] == {"$ref": "#/$defs/t0-Pet"} and props["const"] == {"items": {"$ref": "#/$defs/t0-Pet"}}
    assert defs == {"t0-Pet": PET}


def test_a_remote_ref_is_left_as_written_and_nothing_is_fetched() -> None:
    """A ref that is no pointer from the schema's own root (a URL, another document, an anchor) is not this
    schema's to rename: left as written, the schema not moved for it. The grid fetches nothing; nor does any
    engine (schema_refs' module doc). A pin of the behaviour, which was already so."""
    remote = {"$defs": {"Pet": PET}, "type": "object", "properties": {
        "url": {"$ref": "https://169.254.169.254/latest/meta-data#/x"}, "doc": {"$ref": "other.json#/$defs/Pet"},
        "anchor": {"$ref": "#pet"}, "local": {"$ref": "#/$defs/Pet"}}}
    defs: dict[str, Any] = {}
    out = embedded(remote, "t0-", defs)
    assert out["properties"] == {"url": {"$ref": "https://169.254.169.254/latest/meta-data#/x"},
                                 "doc": {"$ref": "other.json#/$defs/Pet"}, "anchor": {"$ref": "#pet"},
                                 "local": {"$ref": "#/$defs/t0-Pet"}}
    assert defs == {"t0-Pet": PET}


def test_cyclic_definitions_are_renamed_not_followed() -> None:
    """A definition that refers to itself, two that refer to each other, and root recursion beside them: every
    ref renamed once (never followed, so a cycle costs nothing), each resolvable from the step schema's root. A pin
    of the behaviour, which was already so."""
    node = {"type": "object", "properties": {"next": {"anyOf": [{"$ref": "#/$defs/Node"}, {"type": "null"}]}}}
    ping = {"type": "object", "properties": {"pong": {"$ref": "#/$defs/Pong"}}}
    pong = {"type": "object", "properties": {"ping": {"$ref": "#/$defs/Ping"}, "top": {"$ref": "#"}}}
    tool = {"$defs": {"Node": node, "Ping": ping, "Pong": pong}, "type": "object",
            "properties": {"head": {"$ref": "#/$defs/Node"}, "ping": {"$ref": "#/$defs/Ping"}}}
    schema = step_schema([ToolSpec("cyc", "", tool, server=False)], allow_answer=False)
    assert unresolved(schema) == [], schema
    defs = schema["$defs"]
    assert defs["t0-Node"]["properties"]["next"]["anyOf"][0] == {"$ref": "#/$defs/t0-Node"}
    assert resolved(schema, defs["t0-Ping"]["properties"]["pong"]["$ref"]) == defs["t0-Pong"]
    assert resolved(schema, defs["t0-Pong"]["properties"]["top"]["$ref"]) == defs["t0"]  # the tool's own root


def test_a_tool_whose_schema_refers_outside_itself_is_the_clients_400_naming_the_ref() -> None:
    """(7 Dec 2026, thirty-fourth session) A tool's `$ref` that is no pointer from its own root (a URL, another
    document, an anchor) went into the step schema as written, and the engine refused the whole turn: the bundled
    llama-server's 400 "JSON schema error at #/properties/arguments/properties/a: unsupported $ref https://...",
    a path of the step schema the client never wrote (measured 7 Dec 2026). Now the client's 400 before routing,
    naming the ref in its own tool; a ref inside data (`const`) is a value, and passes."""
    from aigrid.agents.loop import validate_tool_request
    from aigrid.agents.tool import ToolRegistry
    from aigrid.errors import InvalidRequest

    def body(parameters: dict[str, Any]) -> dict[str, Any]:
        return {"model": "m", "messages": [{"role": "user", "content": "q"}],
                "tools": [{"type": "function", "function": {"name": "t", "parameters": parameters}}]}

    for ref, where in (("https://example.com/s.json", "properties.a.$ref"), ("other.json#/x", "properties.a.$ref"),
                       ("#pet", "properties.a.$ref")):
        params = {"type": "object", "properties": {"a": {"$ref": ref}}}
        try:
            validate_tool_request(body(params), ToolRegistry())
        except InvalidRequest as e:
            assert e.param == f"tools[0].function.parameters.{where}", e.param
            assert "not served" in e.message and ref in e.message, e.message
        else:
            raise AssertionError(f"{ref} passed")
    nested = {"type": "object", "$defs": {"P": {"anyOf": [{"$ref": "https://x/y"}]}}, "properties": {}}
    try:
        validate_tool_request(body(nested), ToolRegistry())
    except InvalidRequest as e:
        assert e.param == "tools[0].function.parameters.$defs.P.anyOf.0.$ref", e.param
    else:
        raise AssertionError("a remote ref in $defs passed")
    fine = {"type": "object", "$defs": {"P": PET}, "properties": {
        "a": {"$ref": "#/$defs/P"}, "b": {"$ref": "#"}, "c": {"const": {"$ref": "https://x/y"}}}}
    validate_tool_request(body(fine), ToolRegistry())
