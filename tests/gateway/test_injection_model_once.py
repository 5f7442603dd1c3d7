"""The injection model read once per session (tests/injection_model_once.py, installed by conftest.py for every
test here): each load is a model of its own, and nothing one test could write to reaches the next one's."""

from __future__ import annotations

import pytest

from aigrid.security.firewall.injection import InjectionModel


def test_each_load_is_a_model_of_its_own_over_weights_no_test_can_write() -> None:
    a, b = InjectionModel.load(), InjectionModel.load()
    assert a is not b and a.meta == b.meta
    for key, value in a.meta.items():  # its header's nested tables (trained_on, validation) are its own too
        assert not isinstance(value, dict | list) or value is not b.meta[key], key
    for head in (a.prompt, a.document):
        with pytest.raises(ValueError, match="read-only"):
            head.weights[0] = 1.0
        if head.weights.base is not None:  # the array the head is a view of: written, it was every test's model
            with pytest.raises(ValueError, match="read-only"):
                head.weights.base[0] = 1.0
