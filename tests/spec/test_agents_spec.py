"""The spec's `agents` settings: bounds an operator's typo cannot get past, each error naming its field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aigrid.errors import SpecError
from aigrid.spec.load import parse_spec

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.yaml"


def _parse(agents: dict) -> object:
    raw = yaml.safe_load(DEMO.read_text())
    raw["agents"] = agents
    return parse_spec(raw, "grid.yaml")


@pytest.mark.parametrize(("agents", "expected"), [
    ({"tool_timeout_s": 86_400}, "agents.tool_timeout_s: Input should be less than or equal to 300"),
    ({"tool_timeout_s": 0}, "agents.tool_timeout_s: Input should be greater than 0"),
])
def test_bad_agents_settings_name_the_field(agents: dict, expected: str) -> None:
    with pytest.raises(SpecError) as e:
        _parse(agents)
    assert expected in str(e.value), str(e.value)


def test_the_tool_timeout_up_to_its_bound_is_accepted() -> None:
    assert _parse({"tool_timeout_s": 300}).agents.tool_timeout_s == 300  # type: ignore[attr-defined]


def test_the_default_step_is_within_the_limit_a_request_may_ask_for() -> None:
    with pytest.raises(SpecError) as e:
        _parse({"max_steps": 8, "max_steps_limit": 4})
    assert "agents: max_steps: 8 is above max_steps_limit (4)" in str(e.value), str(e.value)
    with pytest.raises(SpecError, match="agents.max_steps_limit: Input should be less than or equal to 16"):
        _parse({"max_steps_limit": 17})
    assert _parse({}).agents.max_steps_limit == 16  # type: ignore[attr-defined]  # as before: 1 to 16
