"""What the firewall's vetting of an MCP server's tools costs (agent_runtime._vet_all at start and at each change).

    .venv/bin/python scripts/bench_mcp_vetting.py 200x4000 40x32000 [1000x32000]

Each COUNTxSIZE builds COUNT tools whose text as a model reads it (McpTool.model_text: name, description, input
schema of nine parameters) is about SIZE characters of tool-like prose (words drawn from a fixed list, seeded), and
times Firewall.tool_description on each (the shipped injection model, injection blocked): wall and CPU seconds,
CPU seconds per million characters, and how many were flagged or blocked. One thread, as the gateway's worker.
Note the machine's load (`cat /proc/loadavg`): wall time on a shared machine is CPU time stretched by it.
"""

from __future__ import annotations

import argparse
import random
import time

from aigrid.agents.mcp_tools import McpServer, McpTool
from aigrid.security.firewall.injection import InjectionModel
from aigrid.security.firewall.pipeline import Action, Firewall, FirewallPolicy

WORDS = ("the a file path returns list of repository issue pull request branch commit user name query string number "
         "optional required when if this tool reads writes searches given its and or to from by with for each page "
         "limit offset sort order ascending descending created updated label state open closed title body comment"
         ).split()


def prose(rng: random.Random, size: int) -> str:
    sentences: list[str] = []
    length = 0
    while length < size:
        sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 18))).capitalize() + "."
        sentences.append(sentence)
        length += len(sentence) + 1
    return " ".join(sentences)[:size]


def tools(rng: random.Random, count: int, size: int) -> list[McpTool]:
    server = McpServer("bench", ["x"])
    out = []
    for i in range(count):
        schema = {"type": "object", "properties": {f"p{j}": {"type": "string", "description": prose(rng, size // 20)}
                                                   for j in range(9)}}
        out.append(McpTool(server, f"t{i}", prose(rng, size // 2), schema, f"t{i}"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("shapes", nargs="+", help="COUNTxSIZE: COUNT tools of about SIZE characters each")
    args = parser.parse_args()
    firewall = Firewall(InjectionModel.load(), default=FirewallPolicy(injection=Action.BLOCK))
    rng = random.Random(7)
    for shape in args.shapes:
        count, size = map(int, shape.split("x"))
        texts = [(t.name, t.model_text()) for t in tools(rng, count, size)]
        chars = sum(len(text) for _, text in texts)
        wall, cpu = time.monotonic(), time.process_time()
        verdicts = [firewall.tool_description(name, text) for name, text in texts]
        wall, cpu = time.monotonic() - wall, time.process_time() - cpu
        print(f"{count} tools x ~{chars // count:,} chars = {chars / 1e6:.2f} M chars: wall {wall:.1f} s, cpu "
              f"{cpu:.1f} s, {cpu / (chars / 1e6):.1f} cpu s per M chars, flagged or blocked "
              f"{sum(v is not None for v in verdicts)}", flush=True)


if __name__ == "__main__":
    main()
