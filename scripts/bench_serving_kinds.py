"""What the legacy-functions check's engine kinds cost a request (aigrid/gateway/engine_body.py, serving_kinds: the
kinds of every endpoint that may serve the request's model), on the demo grid with its endpoints copied to
`--endpoints` (default 1,200: a grid of a thousand sites and more), spread over the demo's models, for a model, a
family and `auto`; and what building the table costs once a spec.

    .venv/bin/python scripts/bench_serving_kinds.py [--endpoints N]

Prints the best of 7 runs (scripts/_bestof.py) in microseconds a call; no pass/fail. Until the thirty-second session
every request went over every endpoint of the spec (per-request work proportional to the grid); now the kinds of
every model, family and `auto` are built once with the gateway (engine_body.kinds_of_spec, the Gateway's
`serving_kinds`, app.build_gateway) and each request reads one entry.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _bestof import best_us

from aigrid.gateway import engine_body
from aigrid.gateway.engine_body import serving_kinds
from aigrid.spec.load import load_spec

DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.yaml"
KINDS = ("llamacpp", "vllm", "sglang", "openai")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--endpoints", type=int, default=1200)
    args = ap.parse_args()
    demo = load_spec(DEMO)
    models = sorted(demo.models)
    endpoints = [demo.endpoints[i % len(demo.endpoints)].model_copy(update={
        "id": f"ep-{i}", "model": models[i % len(models)], "engine": KINDS[i % len(KINDS)]})
        for i in range(args.endpoints)]
    spec = demo.model_copy(update={"endpoints": endpoints})
    model = models[0]
    family = spec.models[model].family
    print(f"{len(spec.endpoints)} endpoints, {len(spec.models)} models; best of 7 runs, us a call")
    build = getattr(engine_body, "kinds_of_spec", None)  # absent before the thirty-second session: nothing built
    kinds = spec if build is None else build(spec)  # before: serving_kinds read the spec itself
    for name in (model, family, "auto"):
        print(f"  serving_kinds({name!r}): {best_us(lambda n=name: serving_kinds(n, kinds), 2000, 7):.2f} us")
    if build is not None:
        print(f"  the table, built once with the gateway: {best_us(lambda: build(spec), 20, 7):.1f} us")


if __name__ == "__main__":
    main()
