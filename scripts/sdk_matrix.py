"""The SDK parity tests (tests/parity) against older majors of the official SDKs: `make sdk-matrix`.

The project's own tests run the pinned SDKs (.venv's openai and anthropic, tests/parity/js/package-lock.json's
openai and @anthropic-ai/sdk); users keep older majors for years. This installs each version of PYTHON and JS below
into a cache folder (never into .venv or tests/parity/js) and runs the surface tests with it:

- Python: `pip install --target CACHE/py/NAME-VERSION --no-deps` (the dependencies are .venv's; the few an older
  major needs that .venv lacks, PY_EXTRA, go to CACHE/py/deps), then the Python surface tests with that folder
  first on PYTHONPATH (the other SDK stays .venv's).
- JavaScript: `npm install` of that version, the pinned other SDK and ws into CACHE/js/NAME-VERSION, then
  tests/parity/test_js_sdk_surface.py with AIGRID_JS_SDKS pointing there.

It prints one row per version: tests passed, skipped (a feature that version lacks, or a known bug of that SDK
version; the reasons follow the table) and failed. Exit status 1 when a test failed. Not part of `make test`
(13 minutes at a load average of 10 on two cores). Installs are kept in the cache; a second run only runs the tests.

    python scripts/sdk_matrix.py [--only NAME-VERSION ...] [--cache DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PYTHON = [("openai", "1.109.1"), ("openai", "2.54.0"), ("anthropic", "0.60.0"), ("anthropic", "0.125.0"),
          ("anthropic", "1.17.0")]
"""Older Python majors: the last of each (openai 1 and 2, anthropic 0 and 1) and one from the middle of 0.x."""
PY_EXTRA = ["distro==1.9.0"]
"""What these older majors import that .venv (the pinned SDKs) does not install."""
JS = [("openai", "4.104.0"), ("openai", "5.23.2"), ("openai", "6.49.0"), ("@anthropic-ai/sdk", "0.137.0")]
"""Older JavaScript majors: the last of openai 4, 5 and 6 and of @anthropic-ai/sdk 0.x."""
PY_TESTS = ["tests/parity/test_openai_sdk_surface.py", "tests/parity/test_anthropic_sdk_surface.py",
            "tests/parity/test_sdk_helpers.py", "tests/parity/test_sdk_unserved_fields.py",
            "tests/parity/test_chat_fields.py", "tests/parity/test_sdk_structured_helpers.py",
            "tests/parity/test_sdk_tool_runners.py", "tests/parity/test_sdk_streaming_responses.py"]
"""Every tests/parity module that imports a Python SDK (tests/scripts/test_sdk_matrix.py checks it)."""
JS_TESTS = ["tests/parity/test_js_sdk_surface.py"]
RUN_S = 900
"""How long one version's tests may run."""


def slug(name: str, version: str) -> str:
    """A row's name for --only and its cache folder: openai-1.109.1, anthropic-ai-sdk-0.137.0, pinned-python."""
    if name == "pinned":
        return "pinned-python" if version == "(.venv)" else "pinned-js"
    return f"{name.replace('@', '').replace('/', '-')}-{version}"


def install_python(cache: Path, name: str, version: str) -> tuple[Path, Path]:
    target, deps = cache / "py" / slug(name, version), cache / "py" / "deps"
    for folder, wanted in ((target, [f"{name}=={version}"]), (deps, PY_EXTRA)):
        if not (folder / ".installed").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            subprocess.run([PY, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                            "--target", str(folder), *wanted], check=True)
            (folder / ".installed").touch()
    return target, deps


def install_js(cache: Path, name: str, version: str) -> Path:
    target = cache / "js" / slug(name, version)
    if not (target / ".installed").is_file():
        pinned = json.loads((ROOT / "tests/parity/js/package.json").read_text(encoding="utf-8"))["dependencies"]
        wanted = {**pinned, name: version}
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        (target / "package.json").write_text(json.dumps({"private": True, "type": "module"}), encoding="utf-8")
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--loglevel=error",
                        *[f"{n}@{v}" for n, v in wanted.items()]], cwd=target, check=True)
        (target / ".installed").touch()
    return target


def run_tests(tests: list[str], env: dict[str, str]) -> tuple[int, int, int, list[str]]:
    """pytest on `tests` with `env` added: passed, skipped, failed, and each skip's and failure's line."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "junit.xml"
        try:
            subprocess.run([PY, "-m", "pytest", *tests, "-q", "-p", "no:cacheprovider", f"--junitxml={report}"],
                           cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL, timeout=RUN_S)
        except subprocess.TimeoutExpired:
            return 0, 0, 1, [f"timed out after {RUN_S} s"]
        if not report.is_file():
            return 0, 0, 1, ["pytest wrote no report"]
        passed = skipped = failed = 0
        notes = []
        for case in ET.parse(report).iter("testcase"):
            name = f"{Path(case.get('file') or case.get('classname', '').replace('.', '/')).stem}::{case.get('name')}"
            outcome = next((c for c in case if c.tag in ("skipped", "failure", "error")), None)
            if outcome is None:
                passed += 1
            elif outcome.tag == "skipped":
                skipped += 1
                notes.append(f"skip {name}: {(outcome.get('message') or '').removeprefix('Skipped: ')}")
            else:
                failed += 1
                notes.append(f"FAIL {name}: {(outcome.get('message') or '').splitlines()[0][:300]}")
        return passed, skipped, failed, notes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", default=None, help="these rows only: NAME-VERSION (openai-1.109.1, anthropic-ai-sdk-0.137.0), pinned-python, pinned-js")
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                    / "aigrid" / "sdk-matrix", help="where the versions are installed (kept between runs)")
    args = ap.parse_args()
    rows = ([("python", "pinned", "(.venv)")] + [("python", n, v) for n, v in PYTHON]
            + [("js", "pinned", "(tests/parity/js)")] + [("js", n, v) for n, v in JS])
    if args.only is not None:
        rows = [r for r in rows if slug(r[1], r[2]) in args.only]
    if any(kind == "js" for kind, _, _ in rows) and not (shutil.which("node") and shutil.which("npm")):
        print("no node/npm: the JavaScript rows are left out")
        rows = [r for r in rows if r[0] == "python"]
    table, notes = [], []
    for kind, name, version in rows:
        print(f"{kind} {name} {version} ...", flush=True)
        if name == "pinned":  # the versions `make test` runs, as the baseline
            result = run_tests(PY_TESTS if kind == "python" else JS_TESTS, {})
        elif kind == "python":
            target, deps = install_python(args.cache, name, version)
            env = {"PYTHONPATH": os.pathsep.join([str(target), str(deps)])}
            result = run_tests(PY_TESTS, env)
        else:
            result = run_tests(JS_TESTS, {"AIGRID_JS_SDKS": str(install_js(args.cache, name, version))})
        table.append((kind, name, version, *result[:3]))
        notes += [f"{kind} {name} {version}: {n}" for n in result[3]]
    print("\n| SDK | version | passed | skipped | failed |\n|---|---|---|---|---|")
    for kind, name, version, passed, skipped, failed in table:
        print(f"| {name} ({'Python' if kind == 'python' else 'JS'}) | {version} | {passed} | {skipped} | {failed} |")
    print("\n" + "\n".join(notes) if notes else "")
    return 1 if any(row[5] for row in table) else 0


if __name__ == "__main__":
    sys.exit(main())
