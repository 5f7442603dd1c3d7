"""schema_refs.embedded and the constrained step schema: a tool's parameters or the client's answer format with
`$defs` (a pydantic model with a nested model) keep every `$ref` resolvable from the root of the schema the engine
gets. Before, the refs pointed at a root `$defs` that was not there: llama.cpp's grammar converter fails such a
request ("Unresolved $ref"), so a constrained tool loop with a nested pydantic tool never ran."""

from __future__ import annotations

from typing import Any

import pytest

from aigrid.agents import run_tool_loop
from aigrid.agents.loop import Finished, validate_tool_request
from aigrid.agents.schema_refs import embedded
from aigrid.agents.steps import ToolSpec, step_schema
from aigrid.agents.tool import ToolRegistry
from aigrid.errors import InvalidRequest
from tests.agents.json_refs import resolved, unresolved
from tests.agents.scripted_engine import ScriptedEngine, answer

PET: dict[str, Any] = {"type": "object", "properties": {"kind": {"enum": ["cat", "dog"]}}, "required": ["kind"]}
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


async def _loop(tools: list[dict[str, Any]], **extra: Any) -> tuple[list[Any], ScriptedEngine]:
    """A chat request offering `tools` (client tools) run by the tool loop on a scripted engine answering in prose."""
    engine = ScriptedEngine([answer("fine"), {"content": "fine"}])
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "tools": tools, **extra}
    return [ev async for ev in run_tool_loop(engine, body, ToolRegistry())], engine


def _tool(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": parameters}}


async def test_an_outside_ref_is_the_clients_400_only_where_the_tool_goes_into_a_grammar() -> None:
    """(7 Dec 2026, thirty-fourth session) A tool's `$ref` that is no pointer from its own root (a URL, another
    document, an anchor) went into a constrained turn's step schema as written, and the engine refused the whole
    turn with a path of the step schema the client never wrote (the bundled llama-server's 400 "unsupported $ref",
    measured 7 Dec 2026): the client's 400 naming the ref in its own tool. 2f761f98 refused it for every model,
    before routing; a native model's engine, asked freely (`tool_choice: auto`: vLLM compiles no grammar), got the
    schema as written before, and does again. A forced call on a native model is compiled to a grammar (vLLM): the
    400 there too, for the tools it forces."""
    for ref in ("https://example.com/s.json", "other.json#/x", "#pet"):
        remote = _tool("t", {"type": "object", "properties": {"a": {"$ref": ref}}})
        validate_tool_request({"model": "m", "messages": [], "tools": [remote]}, ToolRegistry())  # before routing
        for extra in ({}, {"aigrid_tool_mode": "native", "tool_choice": "required"},
                      {"aigrid_tool_mode": "native", "tool_choice": {"type": "function", "function": {"name": "t"}}}):
            with pytest.raises(InvalidRequest) as refused:
                await _loop([remote], **extra)
            assert refused.value.param == "tools[0].function.parameters.properties.a.$ref", (ref, extra)
            assert "not served" in refused.value.message and ref in refused.value.message
        evs, engine = await _loop([remote], aigrid_tool_mode="native")  # the engine answers as it will
        assert isinstance(evs[-1], Finished) and engine.received[0]["tools"][0]["function"]["parameters"] == \
            remote["function"]["parameters"], evs
        clean = _tool("c", {"type": "object"})  # a forced call of another tool: the remote one is not in its grammar
        evs, _ = await _loop([remote, clean], aigrid_tool_mode="native",
                             tool_choice={"type": "function", "function": {"name": "c"}})
        assert isinstance(evs[-1], Finished), evs
        evs, _ = await _loop([remote], tool_choice="none")  # no turn offers it
        assert isinstance(evs[-1], Finished), evs
    nested = _tool("t", {"type": "object", "$defs": {"P": {"anyOf": [{"$ref": "https://x/y"}]}}, "properties": {}})
    with pytest.raises(InvalidRequest) as refused:
        await _loop([_tool("ok", {"type": "object"}), nested])
    # the schema's list index in OpenAI's form, as the chat schema names a pattern there (`anyOf.0` until dfd6a898)
    assert refused.value.param == "tools[1].function.parameters.$defs.P.anyOf[0].$ref", refused.value.param


async def test_a_ref_through_the_schemas_own_id_is_a_pointer_into_it() -> None:
    """(7 Dec 2026, thirty-fourth session) A schema with a root `$id` may refer to itself through it, as JSON Schema
    resolves refs against that base (`https://ex.com/s.json#/$defs/A`, or `s.json#/$defs/A`, relative): 2f761f98
    refused such a tool as referring outside itself. Now rewritten as the pointer it is (`#/$defs/A`, then moved
    with the tool's definitions), resolvable in the step schema; a forced native call is sent it rewritten too. A ref
    to another document under the same base, or an anchor, is still outside."""
    tool = {"$id": "https://ex.com/s.json", "$defs": {"A": PET}, "type": "object", "properties": {
        "full": {"$ref": "https://ex.com/s.json#/$defs/A"}, "relative": {"$ref": "s.json#/$defs/A"},
        "kind": {"$ref": "https://ex.com/s.json#/$defs/A/properties/kind"}}}
    schema = step_schema([ToolSpec("t", "", tool, server=False)], allow_answer=False)
    assert unresolved(schema) == [], schema
    args = schema["properties"]["arguments"]
    assert "$id" not in args, args  # the refs are the step schema's pointers now: no base of its own inside it
    for key, want in (("full", PET), ("relative", PET), ("kind", PET["properties"]["kind"])):
        assert resolved(schema, args["properties"][key]["$ref"]) == want, (key, args)
    evs, engine = await _loop([_tool("t", tool)])
    assert isinstance(evs[-1], Finished), evs
    evs, engine = await _loop([_tool("t", tool)], aigrid_tool_mode="native", tool_choice="required")
    sent = engine.received[0]["tools"][0]["function"]["parameters"]
    assert sent["properties"]["full"] == sent["properties"]["relative"] == {"$ref": "#/$defs/A"}, sent
    for ref in ("https://ex.com/other.json#/$defs/A", "https://ex.com/s.json#pet", "https://elsewhere.org/s.json"):
        with pytest.raises(InvalidRequest) as refused:
            await _loop([_tool("t", {**tool, "properties": {"a": {"$ref": ref}}})])
        assert refused.value.param == "tools[0].function.parameters.properties.a.$ref", ref


async def test_only_schema_keywords_are_read_for_refs() -> None:
    """(7 Dec 2026, thirty-fourth session) The walk read every keyword but `const`, `enum`, `default` and
    `examples`: a `{"$ref": ...}` inside an `x-` extension (data the schema carries, no engine reads it as a schema)
    was refused as referring outside the tool, or renamed as a pointer. Now only schema keywords are read (properties,
    items, allOf/anyOf/oneOf, not, if/then/else, $defs, ...): an extension is kept as written."""
    tool: dict[str, Any] = {"$defs": {"P": PET}, "type": "object", "properties": {
        "a": {"type": "object", "x-source": {"$ref": "https://example.com/s.json"}, "x-local": {"$ref": "#/$defs/P"}},
        "b": {"if": {"$ref": "#/$defs/P"}, "then": {"not": {"$ref": "#/$defs/P"}}, "prefixItems": [{"$ref": "#/$defs/P"}]}}}
    evs, _ = await _loop([_tool("t", tool)])
    assert isinstance(evs[-1], Finished), evs
    defs: dict[str, Any] = {}
    props = embedded(tool, "t0-", defs)["properties"]
    assert props["a"] == tool["properties"]["a"], props  # extensions as written
    assert props["b"] == {"if": {"$ref": "#/$defs/t0-P"}, "then": {"not": {"$ref": "#/$defs/t0-P"}},
                          "prefixItems": [{"$ref": "#/$defs/t0-P"}]}, props


class _CountedNames(dict[str, Any]):
    """A root `$defs` that counts how often a name is looked up in it."""

    looked_up = 0

    def __contains__(self, name: object) -> bool:
        self.looked_up += 1
        return super().__contains__(name)


def test_names_made_alike_get_their_suffixes_in_a_number_of_steps_that_grows_with_them_not_their_square() -> None:
    """(7 Dec 2026, thirty-sixth session, ATK5) Definitions whose names are made alike (`xĀ`, `xā`, ... are all
    `x_`) got their `-2`, `-3`, ... suffix by trying every suffix from `-2` again for each: quadratic. 8,000 of them,
    120 KB of a chat request's `response_format` beside one tool, held a live gateway's event loop 5.6 s (its
    `/healthz` waited as long); 60,000 (about 540 KB, within the body and value bounds) would hold it minutes. Each
    name already taken is now looked at once for its base: the suffix is tried on from the last one given."""
    n = 1_000
    alike = {"x" + chr(0x100 + i): {"const": i} for i in range(n)}
    root = _CountedNames()
    first = embedded({"type": "object", "$defs": alike}, "t0-", root)
    assert first == {"type": "object"}
    assert list(root) == ["t0-x_"] + [f"t0-x_-{k}" for k in range(2, n + 1)]
    assert [root[name]["const"] for name in root] == list(range(n))
    # the same names again under the same root: each of the n taken there is looked up once, not once per name
    root.looked_up = 0
    refs = {"p": {"$ref": "#/$defs/x%C4%80"}, "q": {"$ref": f"#/$defs/x{chr(0x100 + n - 1)}"}}
    second = embedded({"type": "object", "$defs": alike, "properties": refs}, "t0-", root)
    assert second["properties"] == {"p": {"$ref": f"#/$defs/t0-x_-{n + 1}"}, "q": {"$ref": f"#/$defs/t0-x_-{2 * n}"}}
    assert len(root) == 2 * n and root[f"t0-x_-{2 * n}"] == {"const": n - 1}
    assert root.looked_up <= 3 * n, root.looked_up  # the quadratic way: about n * n (1,000,000)


def test_a_name_that_already_looks_like_a_suffixed_one_is_skipped_not_overwritten() -> None:
    """The suffix tried on from the last one given (above) still skips a name that is taken: a definition literally
    named `x_-2` beside two that are made `x_`."""
    defs: dict[str, Any] = {}
    tool = {"$defs": {"x!": {"const": 1}, "x_-2": {"const": 2}, "x?": {"const": 3}, "x#": {"const": 4}},
            "type": "object", "properties": {k: {"$ref": f"#/$defs/{k}"} for k in ("x!", "x_-2", "x?", "x#")}}
    out = embedded(tool, "t0-", defs)
    assert [ref["$ref"] for ref in out["properties"].values()] == [
        "#/$defs/t0-x_", "#/$defs/t0-x_-2", "#/$defs/t0-x_-3", "#/$defs/t0-x_-4"]
    assert [defs[name]["const"] for name in ("t0-x_", "t0-x_-2", "t0-x_-3", "t0-x_-4")] == [1, 2, 3, 4]
