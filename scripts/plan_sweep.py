"""Sweep edited placements of a plan through its checks: one scripts/plan_without.py run per variant, one table.

    python scripts/plan_sweep.py DEMAND.yaml PLAN_DIR VARIANTS [--max-usd X] [--logs DIR] [--workers N]

VARIANTS is a file with one variant a line: the arguments scripts/plan_without.py takes after PLAN_DIR
(e.g. `--hardware eu-north-1=rtx-pro-6000`); blank lines and lines starting with # are skipped, and a line
`-` is the plan unedited. Each variant runs the plan's checks in the simulator (plan/verify.py, as the
planner does); a progress line is printed after each run, then a table: placement, $/h, checks passed,
the worst tenant over all checks with its share within the SLO and the check where it was lowest.
Variants dearer than --max-usd are listed and not run. With --logs, each run's whole output (with
--detail: where the misses were) is kept as DIR/NN.txt. For issue #16's question, is there a placement
near the plan at or below a price that passes every check (docs/planning.md, "Against the issue's target").
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

WITHOUT = Path(__file__).with_name("plan_without.py")
HEAD = re.compile(r"^(?P<sites>\d+) sites, (?P<devices>\d+) devices, \$(?P<usd>[\d.]+)/h: (?P<what>.*)$")
CHECK = re.compile(r"^(?P<label>.+?): (?P<verdict>meets|FAILS); worst tenant (?P<tenant>\S+) (?P<share>[\d.]+)% "
                   r"within the SLO; TTFT p99 (?P<ttft>\d+) ms; (?P<rejected>\d+) not served"
                   r"(?:; TPOT p99 (?P<tpot>\d+) ms, max (?P<tpot_max>\d+) ms)?$")
DONE = re.compile(r"^(?P<n>\d+) checks in \d+ s$")


def read_variants(path: Path) -> list[list[str]]:
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        out.append([] if line == "-" else shlex.split(line))
    return out


def summary(what: str) -> str:
    """'eu-north-1 rtx-pro-6000 x 1 (chunk 1024), ...' -> 'eu-north-1 rtx-pro-6000 x1, ...' (hardware short)."""
    short = {"h100": "H100", "rtx-pro-6000": "RTX", "l40s": "L40S"}
    parts = []
    for m in re.finditer(r"(\S+) (\S+) x (\d+) \(chunk \d+\)", what):
        parts.append(f"{m[1]} {m[3]}x{short.get(m[2], m[2])}")
    return ", ".join(parts)


def parse(text: str) -> dict:
    head = None
    checks = []
    ran = None
    for line in text.splitlines():
        if head is None and (m := HEAD.match(line)):
            head = m
        elif m := CHECK.match(line):
            checks.append(m)
        elif m := DONE.match(line):
            ran = int(m["n"])
    if head is None:
        raise ValueError("no placement line in plan_without.py's output")
    if ran != len(checks):
        raise ValueError(f"plan_without.py ran {ran} checks and {len(checks)} of their lines could be read")
    worst = min(checks, key=lambda c: float(c["share"])) if checks else None
    return {
        "usd": float(head["usd"]), "devices": int(head["devices"]), "placement": summary(head["what"]),
        "passed": sum(c["verdict"] == "meets" for c in checks), "checks": len(checks),
        "worst": f"{worst['tenant']} {worst['share']}% ({worst['label']})" if worst else "-",
    }


def price_only(demand: str, plan_dir: Path, args: list[str]) -> float:
    """The variant's $/h before running it (for --max-usd): the placement plan_without.py's own edit makes of
    plan.json (SystemExit, as plan_without.py's, for a site or hardware that is not there); the run's own
    first line is the one the table shows."""
    import json

    from aigrid.plan.demand import load_demand

    a = _without().parse_args([demand, str(plan_dir), *args])
    doc = json.loads((plan_dir / "plan.json").read_text())
    return round(_without().edited(a, load_demand(demand), doc).usd_per_hour, 2)


def _without() -> ModuleType:
    """scripts/plan_without.py as a module (a script, not a package: loaded by path, once)."""
    if "plan_without" not in sys.modules:
        import importlib.util

        spec = importlib.util.spec_from_file_location("plan_without", WITHOUT)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["plan_without"] = module
    return sys.modules["plan_without"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("demand")
    ap.add_argument("plan_dir", type=Path)
    ap.add_argument("variants", type=Path)
    ap.add_argument("--max-usd", type=float, default=None, help="skip variants dearer than this ($/h)")
    ap.add_argument("--logs", type=Path, default=None, help="keep each run's output as DIR/NN.txt")
    ap.add_argument("--workers", type=int, default=None)
    a = ap.parse_args()
    variants = read_variants(a.variants)
    if a.logs:
        a.logs.mkdir(parents=True, exist_ok=True)
    rows = []
    t_all = time.perf_counter()
    for k, args in enumerate(variants, 1):
        label = " ".join(args) or "(the plan)"
        try:
            usd = price_only(a.demand, a.plan_dir, args)
        except SystemExit as e:  # plan_without.py's refusal of the variant: listed, the sweep goes on
            print(f"[{k}/{len(variants)}] {label}: {e}", flush=True)
            rows.append((label, {"usd": 0.0, "placement": "-", "passed": 0, "checks": 0, "worst": f"refused: {e}"}))
            continue
        if a.max_usd is not None and usd > a.max_usd + 1e-9:
            print(f"[{k}/{len(variants)}] {label}: ${usd:.2f}/h > ${a.max_usd:.2f}/h, not run", flush=True)
            rows.append((label, {"usd": usd, "placement": "-", "passed": 0, "checks": 0, "worst": "not run"}))
            continue
        cmd = [sys.executable, str(WITHOUT), a.demand, str(a.plan_dir), *args, "--detail"]
        if a.workers:
            cmd += ["--workers", str(a.workers)]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True)
        text = done.stdout + done.stderr
        if a.logs:
            (a.logs / f"{k:02d}.txt").write_text(f"$ {shlex.join(cmd)}\n{text}")
        if done.returncode != 0:
            print(f"[{k}/{len(variants)}] {label}: plan_without.py failed ({done.returncode}): "
                  f"{text.strip().splitlines()[-1] if text.strip() else ''}", flush=True)
            rows.append((label, {"usd": usd, "placement": "-", "passed": 0, "checks": 0, "worst": "failed to run"}))
            continue
        r = parse(text)
        rows.append((label, r))
        print(f"[{k}/{len(variants)}] {label}: ${r['usd']:.2f}/h, {r['passed']} of {r['checks']} checks, worst "
              f"{r['worst']}; {time.perf_counter() - t0:.0f} s", flush=True)
    print(f"\n{len(variants)} variants in {time.perf_counter() - t_all:.0f} s\n")
    print("| variant (plan_without.py arguments) | placement | $/h | checks passed | worst tenant, share within SLO (check) |")
    print("|---|---|---|---|---|")
    for label, r in rows:
        mark = "**" if r["checks"] and r["passed"] == r["checks"] else ""
        print(f"| `{label}` | {r['placement']} | {r['usd']:.2f} | {mark}{r['passed']} of {r['checks']}{mark} "
              f"| {r['worst']} |")


if __name__ == "__main__":
    main()
