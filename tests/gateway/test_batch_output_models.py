"""A batch's output file (and a message batch's results) hold the answers of the models that may serve its
creator: a key of the tenant narrowed to other models may not download them (403 model_not_allowed,
authorize.check_produced_by, as for a stored response), though it sees the file and the batch as before (its
jurisdictions allow it). Until the thirty-fifth session any key of the tenant downloaded every batch's answers
whatever models it was narrowed to (issue 12, ATK3 item 4)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anthropic
import openai
import orjson
import pytest

from aigrid.gateway.app import Gateway, build_app
from aigrid.security.keys import KeyRing
from aigrid.security.principal import Scopes
from tests.gateway.batch_helpers import CHAT, MODEL, jsonl, keyed_batches, line, until
from tests.gateway.message_batch_helpers import req, results, until_ended
from tests.gateway.sdk_clients import anthropic_client, openai_client

SECRET = "batch-models-secret-0123456789ab"
TOKYO = {"x-aigrid-client-location": "Tokyo"}


def _keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Tenant default's keys, saved where the enforced grid reads them: an unrestricted key, one narrowed to the
    grid's model and one to another."""
    monkeypatch.setenv("AIGRID_KEY_SECRET", SECRET)
    ring = KeyRing(SECRET.encode())
    keys = {"full": ring.issue("default").api_key,
            "same": ring.issue("default", Scopes(models=frozenset({MODEL}))).api_key,
            "other": ring.issue("default", Scopes(models=frozenset({"other-model"}))).api_key}
    ring.save(tmp_path / "keys.json")
    return keys


@pytest.fixture
async def keyed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[Gateway, dict[str, str]]]:
    """Keys enforced (_keys)."""
    keys = _keys(tmp_path, monkeypatch)
    async with keyed_batches(tmp_path) as (gw, _engines):
        yield gw, keys


def oai(gw: Gateway, key: str) -> openai.AsyncOpenAI:
    return openai_client(build_app(gw)).with_options(api_key=key, default_headers=TOKYO)


async def test_a_key_narrowed_to_other_models_cannot_download_a_batchs_answers(keyed: Any) -> None:
    gw, keys = keyed
    full = oai(gw, keys["full"])
    f = await full.files.create(file=("in.jsonl", jsonl(line("a", "secret question"))), purpose="batch")
    done = await until(full, (await full.batches.create(input_file_id=f.id, endpoint=CHAT,
                                                        completion_window="24h")).id, "completed")
    out = done.output_file_id
    assert out is not None
    other = oai(gw, keys["other"])
    assert (await other.files.retrieve(out)).id == out  # the File object: no answer in it
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await other.files.content(out)
    body = caught.value.body
    assert isinstance(body, dict) and (body["code"], body["param"]) == ("model_not_allowed", "file_id"), body
    with pytest.raises(openai.PermissionDeniedError):  # nor deletes them (since review RV2)
        await other.files.delete(out)
    for key in ("full", "same"):  # a key its model may serve reads them
        assert orjson.loads((await oai(gw, keys[key]).files.content(out)).content)["custom_id"] == "a"
    assert (await other.files.content(f.id)).content  # an upload holds no model's answer


async def test_the_output_of_a_batch_no_longer_kept_is_no_narrowed_keys(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant keeps gateway.batch.max_batches batches: past it a create drops its oldest ended one, whose files stay
    the tenant's. Its output file then names no creator, so its answers may be any grid model's: a key that not every
    grid model may serve may not download them (until review RV2 of the thirty-fifth session, any key of the tenant
    could once its batch was dropped); one every grid model may serve still does."""
    keys = _keys(tmp_path, monkeypatch)
    async with keyed_batches(tmp_path, max_batches=1) as (gw, _engines):
        full = oai(gw, keys["full"])
        outs = []
        for _ in range(2):  # the second create drops the first batch (ended)
            f = await full.files.create(file=("in.jsonl", jsonl(line("a", "secret question"))), purpose="batch")
            done = await until(full, (await full.batches.create(input_file_id=f.id, endpoint=CHAT,
                                                                completion_window="24h")).id, "completed")
            assert done.output_file_id is not None
            outs.append((done.id, done.output_file_id))
        dropped, out = outs[0]
        with pytest.raises(openai.NotFoundError):
            await full.batches.retrieve(dropped)
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await oai(gw, keys["other"]).files.content(out)
        body = caught.value.body
        assert isinstance(body, dict) and (body["code"], body["param"]) == ("model_not_allowed", "file_id"), body
        for key in ("full", "same"):  # every grid model (this grid's one) may serve them
            assert orjson.loads((await oai(gw, keys[key]).files.content(out)).content)["custom_id"] == "a"


async def test_an_error_file_is_read_by_a_narrowed_key_whether_its_batch_is_kept_or_dropped(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error file holds refusals and failures, no model's answer: a key narrowed to other models reads it, its
    batch kept or dropped past gateway.batch.max_batches (until review F1 of the thirty-fifth session a dropped
    batch's error file was judged as any grid model's answers: 403 to that key, where the kept batch's was read)."""
    keys = _keys(tmp_path, monkeypatch)
    async with keyed_batches(tmp_path, max_batches=1) as (gw, _engines):
        full, other = oai(gw, keys["full"]), oai(gw, keys["other"])
        errors = []
        for _ in range(2):  # the second create drops the first batch (ended)
            f = await full.files.create(file=("in.jsonl", jsonl(line("a", "FAIL question"))), purpose="batch")
            done = await until(full, (await full.batches.create(input_file_id=f.id, endpoint=CHAT,  # type: ignore[arg-type]
                                                                completion_window="24h")).id, "completed")
            assert done.error_file_id is not None and done.output_file_id is None
            errors.append((done.id, done.error_file_id))
        (dropped, dropped_errors), (_kept, kept_errors) = errors
        with pytest.raises(openai.NotFoundError):
            await full.batches.retrieve(dropped)
        for fid in (kept_errors, dropped_errors):
            assert orjson.loads((await other.files.content(fid)).content)["custom_id"] == "a", fid


async def test_a_key_narrowed_to_other_models_cannot_read_a_message_batchs_results(keyed: Any) -> None:
    gw, keys = keyed
    app = build_app(gw)
    full, same, other = (anthropic_client(app).with_options(api_key=keys[k], default_headers=TOKYO)
                         for k in ("full", "same", "other"))
    try:
        created = await full.messages.batches.create(requests=[req("a", "secret question")])
        await until_ended(full, created.id)
        assert (await other.messages.batches.retrieve(created.id)).id == created.id  # no answer in it
        with pytest.raises(anthropic.PermissionDeniedError) as caught:
            await other.messages.batches.results(created.id)
        body = caught.value.body
        assert isinstance(body, dict) and body["error"]["type"] == "permission_error", body
        assert "model" in body["error"]["message"] and "secret" not in str(body)
        with pytest.raises(anthropic.PermissionDeniedError):  # nor deletes them (since review RV2)
            await other.messages.batches.delete(created.id)
        for client in (full, same):
            assert (await results(client, created.id))["a"].result.type == "succeeded"
    finally:
        for client in (full, same, other):
            await client.close()


async def test_a_key_narrowed_to_other_models_cannot_cancel_a_batch(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Nor cancel one in progress, in either door (a stored response's cancel is refused it as well); its creator
    does (until review RV2 of the thirty-fifth session any key of the tenant did)."""
    keys = _keys(tmp_path, monkeypatch)
    async with keyed_batches(tmp_path) as (gw, engines):
        for engine in engines.values():  # each line waits at its engine: the batches stay in progress
            engine.gate.clear()
        full, other = oai(gw, keys["full"]), oai(gw, keys["other"])
        f = await full.files.create(file=("in.jsonl", jsonl(line("a", "SLOW secret question"))), purpose="batch")
        batch = await full.batches.create(input_file_id=f.id, endpoint=CHAT, completion_window="24h")  # type: ignore[arg-type]
        with pytest.raises(openai.PermissionDeniedError) as caught:
            await other.batches.cancel(batch.id)
        body = caught.value.body
        assert isinstance(body, dict) and (body["code"], body["param"]) == ("model_not_allowed", "batch_id"), body
        assert (await full.batches.cancel(batch.id)).status in ("cancelling", "cancelled")
        app = build_app(gw)
        owner, stranger = (anthropic_client(app).with_options(api_key=keys[k], default_headers=TOKYO)
                           for k in ("full", "other"))
        try:
            created = await owner.messages.batches.create(requests=[req("a", "SLOW secret question")])
            with pytest.raises(anthropic.PermissionDeniedError):
                await stranger.messages.batches.cancel(created.id)
            assert (await owner.messages.batches.cancel(created.id)).processing_status in ("canceling", "ended")
        finally:
            for client in (owner, stranger):
                await client.close()


async def test_a_message_batch_that_wrote_no_answer_is_read_by_its_owner_whose_tenant_was_narrowed(
        keyed: Any) -> None:
    """Its tenant narrowed to other models after it was created, a message batch's requests are refused (403 in its
    results) and it writes no answer (no output file): its owner reads those refusals, as an OpenAI batch's error
    file (test_batches::test_lines_run_as_their_creator_checked_again_for_each_line). Until review F1 of the
    thirty-fifth session the results were the 403 "holds answers of" the grid's model, which they did not hold."""
    gw, keys = keyed
    owner = anthropic_client(build_app(gw)).with_options(api_key=keys["full"], default_headers=TOKYO)
    try:
        assert gw.batches is not None
        await gw.batches.stop()  # created while the tenant may use the model; narrowed before its request runs
        created = await owner.messages.batches.create(requests=[req("a", "hi")])  # type: ignore[list-item]
        tenant = gw.guard.tenants["default"]
        gw.guard.tenants["default"] = replace(tenant, scopes=Scopes(models=frozenset({"other-model"})))
        await gw.batches.start()
        done = await until_ended(owner, created.id)
        assert (done.request_counts.succeeded, done.request_counts.errored) == (0, 1)
        refused = (await results(owner, created.id))["a"].result
        assert refused.type == "errored" and refused.error.error.type == "permission_error", refused
    finally:
        await owner.close()
