"""scripts/sdk_matrix.py (`make sdk-matrix`) runs tests/parity against older SDK majors: a parity test module that
walks an official SDK's calls and is not in its lists is never run against them. The SDK helper tests added in the
thirty-third session (test_sdk_structured_helpers: parse; test_sdk_tool_runners: tool_runner;
test_sdk_streaming_responses: with_streaming_response) were left out so."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("sdk_matrix", ROOT / "scripts" / "sdk_matrix.py")
assert spec is not None and spec.loader is not None
sdk_matrix = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sdk_matrix)

SDK_IMPORT = re.compile(r"^(?:import|from) (?:openai|anthropic)\b", re.MULTILINE)
"""A Python official SDK imported at a module's top (the JS SDKs' module drives node: test_js_sdk_surface)."""


def test_every_parity_module_that_walks_an_sdk_is_in_the_matrix() -> None:
    walks = {str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "parity").glob("test_*.py")
             if SDK_IMPORT.search(p.read_text(encoding="utf-8"))}
    assert "tests/parity/test_sdk_tool_runners.py" in walks  # the pattern finds what it is meant to
    assert walks - set(sdk_matrix.PY_TESTS) == set()
    assert "tests/parity/test_js_sdk_surface.py" in sdk_matrix.JS_TESTS


def test_every_module_the_matrix_names_exists() -> None:
    missing = [t for t in sdk_matrix.PY_TESTS + sdk_matrix.JS_TESTS if not (ROOT / t).is_file()]
    assert missing == []
