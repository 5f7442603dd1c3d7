"""A request body that says it is compressed (`Content-Encoding: gzip`) is refused on every door that reads a body,
in the door's own envelope, before a byte of it is read: the gateway inflates no request, and until the
thirty-sixth session it read such a body as if it were plain (a JSON body labelled gzip was served, a gzip body was
`invalid_json`), so a proxy or a web application firewall in front that inflates by the label read another body
than the gateway served (ATK4)."""

from __future__ import annotations

import gzip

import anthropic
import httpx
import orjson
import pytest

from aigrid.gateway.app import Gateway, build_app
from tests.gateway.fake_engine import FakeEngine
from tests.gateway.sdk_clients import anthropic_client

CHAT = {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
BODIES = {
    "/v1/chat/completions": CHAT,
    "/v1/completions": {"model": "smollm2-135m", "prompt": "hi", "max_tokens": 4},
    "/v1/embeddings": {"model": "all-MiniLM-L6-v2", "input": "hi"},
    "/v1/messages": {"model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages/count_tokens": {"model": "smollm2-135m", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/messages/batches": {"requests": [{"custom_id": "a", "params": {
        "model": "smollm2-135m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}}]},
    "/v1/responses": {"model": "smollm2-135m", "input": "hi", "max_output_tokens": 16},
    "/v1/responses/input_tokens": {"model": "smollm2-135m", "input": "hi"},
    "/v1/conversations": {"items": [{"type": "message", "role": "user", "content": "hi"}]},
    "/v1/batches": {"input_file_id": "file-x", "endpoint": "/v1/chat/completions", "completion_window": "24h"},
}


def _refused(r: httpx.Response, anthropic: bool, coding: str) -> None:
    assert r.status_code == 400, r.text
    body = r.json()
    if anthropic:
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error", body
        message = body["error"]["message"]
    else:
        err = body["error"]
        assert err["code"] == "unsupported_content_encoding" and err["param"] == "content-encoding", err
        message = err["message"]
    assert "content-encoding" in message and repr(coding) in message, message


@pytest.mark.parametrize("path", sorted(BODIES))
async def test_a_body_labelled_compressed_is_refused_before_it_is_read(
        client: httpx.AsyncClient, fakes: dict[str, FakeEngine], path: str) -> None:
    plain = orjson.dumps(BODIES[path])
    for coding, content in (("gzip", plain), ("gzip", gzip.compress(plain)), ("br", plain)):
        r = await client.post(path, content=content, headers={"content-type": "application/json",
                                                             "content-encoding": coding})
        _refused(r, path.startswith("/v1/messages"), coding)
    assert not any(f.received for f in fakes.values())  # no engine was asked


async def test_a_file_upload_labelled_compressed_is_refused(client: httpx.AsyncClient) -> None:
    files = {"file": ("in.jsonl", b'{"custom_id": "a"}\n', "application/jsonl")}
    r = await client.post("/v1/files", files=files, data={"purpose": "batch"}, headers={"content-encoding": "gzip"})
    _refused(r, False, "gzip")
    assert (await client.get("/v1/files")).json()["data"] == []  # nothing kept


async def test_identity_is_read_as_plain_and_a_second_coding_header_is_not_missed(
        client: httpx.AsyncClient, gateway: Gateway) -> None:
    r = await client.post("/v1/chat/completions", json=CHAT, headers={"content-encoding": "Identity"})
    assert r.status_code == 200, r.text
    # the first header says identity, the second gzip: a proxy that reads the last inflates
    r = await client.post("/v1/chat/completions", content=orjson.dumps(CHAT),
                          headers=[("content-type", "application/json"), ("content-encoding", "identity"),
                                   ("content-encoding", "gzip")])
    _refused(r, False, "identity, gzip")


async def test_the_anthropic_sdk_reads_the_refusal_as_its_own_encoding_error(gateway: Gateway) -> None:
    """Anthropic's API says a `Content-Encoding` it does not read with `details.error_code`
    `request_body_encoding_unsupported`, by which the SDK raises its RequestBodyEncodingUnsupportedError; the
    Messages door said a bare invalid_request_error (the SDK's BadRequestError) until review RV1."""
    sdk = anthropic_client(build_app(gateway))
    with pytest.raises(anthropic.RequestBodyEncodingUnsupportedError) as raised:
        await sdk.messages.create(model="smollm2-135m", max_tokens=4, messages=[{"role": "user", "content": "hi"}],
                                  extra_headers={"content-encoding": "br"})
    assert raised.value.status_code == 400 and "content-encoding 'br'" in raised.value.message
