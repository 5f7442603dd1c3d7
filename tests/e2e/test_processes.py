"""tests/e2e/processes.with_context: the copy of a spec that the demo grid tests run at a smaller context is the
same grid but for each model's `context`, or none at all (review RV2: a spec naming relative paths read other files
from the copy's folder, unsaid; a copy into the spec's own folder overwrote it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aigrid.spec.load import load_spec
from tests.e2e.processes import NODE_CONTEXT, with_context

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["demo.yaml", "demo-netns.yaml"])
def test_the_copy_is_the_same_grid_but_for_the_context(tmp_path: Path, name: str) -> None:
    original = load_spec(ROOT / "examples" / name)
    copy = load_spec(with_context(ROOT / "examples" / name, tmp_path, NODE_CONTEXT))
    assert {m.context for m in copy.models.values()} == {NODE_CONTEXT} != {m.context for m in original.models.values()}
    expected = original.model_copy(update={"models": {k: m.model_copy(update={"context": NODE_CONTEXT})
                                                      for k, m in original.models.items()}})
    assert copy == expected


def test_a_spec_naming_a_relative_path_or_copied_onto_itself_is_refused(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text(encoding="utf-8"))
    raw["sites"]["fra"]["documents"] = [{"path": "docs/*.md"}]  # relative to the spec's folder
    (tmp_path / "grid").mkdir()
    spec = tmp_path / "grid" / "grid.yaml"
    spec.write_text(yaml.safe_dump(raw), encoding="utf-8")
    (tmp_path / "run").mkdir()
    with pytest.raises(ValueError, match="names relative paths"):
        with_context(spec, tmp_path / "run", NODE_CONTEXT)
    assert not (tmp_path / "run" / "grid.yaml").exists()
    before = spec.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="is there already"):
        with_context(spec, tmp_path / "grid", NODE_CONTEXT)
    assert spec.read_text(encoding="utf-8") == before
