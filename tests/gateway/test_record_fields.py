"""record_fields.read_record: a record of shared state written by a newer aigrid (a field this one does not know) is
read, the field ignored and logged once; one of an older aigrid (a field missing) takes the default; one truly
unreadable is logged as an error and read as absent."""

from __future__ import annotations

import logging

import orjson
import pytest

from aigrid.gateway.conversation_store import StoredConversation
from aigrid.gateway.record_fields import read_json_record, read_record
from aigrid.gateway.response_store import Pending, StoredResponse

RECORD = {"id": "resp_1", "tenant": "t", "jurisdiction": "EU", "site": "fra", "response": {"id": "resp_1"},
          "turn": [{"role": "user", "content": "hi"}], "previous": None, "inputs": [], "models": ["m"]}


def test_a_field_a_newer_aigrid_added_is_ignored_and_logged_once_per_type_and_field(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "aigrid.gateway")
    for _ in range(3):
        got = read_record(StoredResponse, {**RECORD, "pinned_by_a_newer_one": {"x": 1}}, "a stored response")
        assert got == StoredResponse(**RECORD)
    # the same field on another type is that type's own news
    assert read_record(Pending, {"id": "r", "tenant": "t", "model": "m", "created_at": 1,
                                 "pinned_by_a_newer_one": 1}, "a placeholder") == Pending("r", "t", "m", 1)
    told = [r for r in caplog.records if "pinned_by_a_newer_one" in r.getMessage()]
    assert [(r.levelno, "StoredResponse" in r.getMessage()) for r in told] == [(logging.INFO, True),
                                                                              (logging.INFO, False)]


def test_a_field_an_older_aigrid_did_not_write_takes_its_default() -> None:
    older = {k: v for k, v in RECORD.items() if k not in ("models", "inputs")}  # before the thirty-fifth session
    got = read_record(StoredResponse, older, "a stored response")
    assert got is not None and got.models == [] and got.listed == [] and got.inputs == []
    conv = read_record(StoredConversation, {"id": "conv_1", "tenant": "t", "created_at": 0}, "a conversation")
    assert conv == StoredConversation("conv_1", "t", 0)


@pytest.mark.parametrize(("data", "reason"), [
    ({**RECORD, "response": "an answer"}, "field 'response': expected dict[str, Any], got str"),
    ({**RECORD, "models": ["m", 5]}, "field 'models': expected list[str], got list"),
    ({**RECORD, "previous": 7}, "field 'previous': expected str | None, got int"),
    ({**RECORD, "size": True}, "field 'size': expected int, got bool"),
    ({k: v for k, v in RECORD.items() if k != "site"}, "missing 1 required positional argument: 'site'"),
    (["resp_1"], "not an object but list"),
])
def test_a_record_no_aigrid_wrote_is_logged_and_read_as_absent(
        data: object, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    assert read_record(StoredResponse, data, "a stored response in Redis") is None
    [said] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert reason in said.getMessage() and "a stored response in Redis" in said.getMessage()


def test_json_that_is_not_a_record_is_read_as_absent(caplog: pytest.LogCaptureFixture) -> None:
    assert read_json_record(StoredConversation, b"{not json", "a conversation in Redis") is None
    assert read_json_record(StoredConversation, b"[1]", "a conversation in Redis") is None
    raw = orjson.dumps({"id": "conv_1", "tenant": "t", "created_at": 0, "metadata": {"a": "b"}})
    assert read_json_record(StoredConversation, raw, "a conversation") == StoredConversation("conv_1", "t", 0,
                                                                                             {"a": "b"})
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2
