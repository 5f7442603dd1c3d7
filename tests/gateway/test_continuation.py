"""gateway/continuation.why_not_continuable: a broken stream whose output a grammar constrains is not continued from
its text on another engine (the grammar would start again at its root on the delivered text)."""

from __future__ import annotations

import pytest

from aigrid.gateway.continuation import Delivered, why_not_continuable

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.mark.parametrize("field,value", [("structured_outputs", {"grammar": 'root ::= "a"'}),
                                         ("structured_outputs", {"regex": "[a-z]+"}),
                                         ("structural_tag", '{"type": "structural_tag"}'),
                                         ("ebnf", 'root ::= "a"'), ("regex", "[a-z]+"),
                                         ("grammar", 'root ::= "a"'), ("guided_grammar", 'root ::= "a"')])
def test_a_grammar_constrained_answer_is_not_continued(field: str, value: object) -> None:
    """(Review RV1 of fe0745b7) vLLM's `structured_outputs` (its only grammar field since v0.12) and `structural_tag`,
    SGLang's `ebnf` and `regex` were continued as free text; `grammar` and `guided_grammar` were not."""
    delivered = Delivered(text=["ab"], chunks=1, chars=2)
    assert why_not_continuable(CHAT, delivered) is None
    assert why_not_continuable({**CHAT, field: value}, delivered) == \
        f"the request uses '{field}', which cannot be resumed exactly"
