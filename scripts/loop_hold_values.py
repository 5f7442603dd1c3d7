"""How long one request of many tiny JSON values holds the gateway's event loop: the worst `/livez` answer time (another
client polling it every 20 ms) while each body below is posted once, on a gateway on FAKE engines served by uvicorn
(tests/gateway/socket_grid), one process. Each body is `--values` empty arrays in one field (default: as many as
body_values allows there: MAX_OPTION_VALUES in tools, schemas and options, MAX_ARGUMENT_VALUES in tool calls'
arguments, MAX_VALUES in the rest of the conversation), so it is served.

    .venv/bin/python scripts/loop_hold_values.py [--values N] [--rounds R]

Once the gateway serves, its heap is settled as `aigrid gateway`'s is (gateway/heap.settle: what start-up built is
frozen out of the garbage collector's scans), so that the collections a body's many values set off scan what a
gateway's would, not the test harness's and the firewall's models' objects as well. Each body is posted `--rounds`
times (default 1), each figure printed.

Review RV1 (thirty-sixth session): at MAX_VALUES (199,800 in one tool's schema) such a body held the loop 1.2-1.7 s;
the fields outside the conversation now hold MAX_OPTION_VALUES together (docs/security.md's row). LOOP2 (thirty-sixth session): the firewall's texts of a body longer than
model_texts.OFF_LOOP_BYTES are collected on a thread."""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from aigrid.gateway.body_values import MAX_ARGUMENT_VALUES, MAX_OPTION_VALUES, MAX_VALUES  # noqa: E402
from aigrid.gateway.heap import settle  # noqa: E402
from tests.gateway.socket_grid import MODEL, TENANT, served, watching  # noqa: E402

CHAT = {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}


def bodies(options: int, arguments: int, whole: int) -> dict[str, tuple[str, dict[str, Any]]]:
    """Each body's path and JSON: `options` empty arrays in a field outside the conversation, `arguments` in a tool
    call's arguments, `whole` in a message's own key."""
    few: list[list[object]] = [[]] * (options - 30)  # the rest of the field's values: its objects, keys, names
    argued: list[list[object]] = [[]] * (arguments - 30)
    return {
        "chat tool schema": ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function", "function": {
            "name": "f", "parameters": {"type": "object", "properties": {"a": {"enum": few}}}}}]}),
        "chat_template_kwargs": ("/v1/chat/completions", {**CHAT, "chat_template_kwargs": {"k": few}}),
        "response_format schema": ("/v1/chat/completions", {**CHAT, "response_format": {
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
                "a": {"enum": few}}}}}}),
        "anthropic tool schema": ("/v1/messages", {**CHAT, "tools": [{"name": "f", "input_schema": {
            "type": "object", "properties": {"a": {"enum": few}}}}]}),
        "chat tool call arguments (a string)": ("/v1/chat/completions", {**CHAT, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "f", "arguments": orjson.dumps({"k": argued}).decode()}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "ok"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}),
        "anthropic tool_use input (messages)": ("/v1/messages", {**CHAT, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "f",
                                               "input": {"k": argued}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}}]}),
        "chat message's own key (messages)": ("/v1/chat/completions", {**CHAT, "messages": [
            {"role": "user", "content": "hi", "note": [[]] * (whole - 60)}]}),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--values", type=int, default=0, help="values in each body's field (default: the bounds)")
    parser.add_argument("--rounds", type=int, default=1, help="times each body is posted")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        grid = stack.enter_context(served(Path(tempfile.mkdtemp())))
        settle()  # as a served gateway's heap (gateway/heap.settle_when_started)
        watch = stack.enter_context(watching(grid.port, every_s=0.02))
        print(f"/livez worst idle {watch.worst * 1000:.0f} ms")
        sent = bodies(args.values or MAX_OPTION_VALUES, args.values or MAX_ARGUMENT_VALUES, args.values or MAX_VALUES)
        with httpx.Client(base_url=f"http://127.0.0.1:{grid.port}", headers=TENANT, timeout=60) as c:
            for name, (path, body) in sent.items():
                raw = orjson.dumps(body)
                figures, answers = [], set()
                for _ in range(args.rounds):
                    time.sleep(0.3)
                    watch.reset()
                    r = c.post(path, content=raw, headers={"content-type": "application/json"})
                    time.sleep(0.1)
                    figures.append(f"{watch.worst * 1000:.0f}")
                    answers.add(r.status_code if r.status_code == 200 else f"{r.status_code} ({r.text[:160]})")
                print(f"{name}: {len(raw) / 1e6:.2f} MB, answered {', '.join(map(str, sorted(answers, key=str)))}; "
                      f"/livez worst {' '.join(figures)} ms during it")


if __name__ == "__main__":
    main()
