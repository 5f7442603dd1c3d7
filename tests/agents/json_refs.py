"""The local `$ref`s of a JSON schema that lead nowhere, as an engine resolves them (JSON pointers from the
schema's root): for tests of the schemas the gateway sends engines; and `Owner`, a pydantic model with a nested one
(its JSON schema has `$defs` and `$ref`s), which the SDK and real-engine tests send as a tool and an answer format."""

from __future__ import annotations

from typing import Any, Literal

import pydantic


class Pet(pydantic.BaseModel):
    kind: Literal["cat", "dog"]
    name: str


class Owner(pydantic.BaseModel):
    name: str
    pets: list[Pet]


def unresolved(schema: dict[str, Any]) -> list[str]:
    """Every local `$ref` of `schema` that does not lead anywhere from its root (a JSON pointer, as engines
    resolve it)."""
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                refs.append(node["$ref"])
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(schema)
    return [ref for ref in refs if resolved(schema, ref) is None]


def resolved(schema: dict[str, Any], ref: str) -> Any:
    """What the local `ref` leads to from the root of `schema` (a JSON pointer); None where it leads nowhere."""
    target: Any = schema
    for part in ref.removeprefix("#/").split("/") if ref != "#" else []:
        key = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, dict) and key in target:
            target = target[key]
        elif isinstance(target, list) and key.isdigit() and int(key) < len(target):
            target = target[int(key)]
        else:
            return None
    return target
