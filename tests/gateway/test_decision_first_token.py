"""A decision says whether its `ttft_ms` is a first token's time (a stream relayed from the engine) or a whole
answer's first byte (not streamed): `aigrid explain` sets only the first beside the predicted TTFT. The gateway's
TTFT metrics and calibration already left the second out (proxy: `measured`); explain compared it all the same."""

from __future__ import annotations

import httpx
import pytest


@pytest.mark.parametrize("stream", [False, True])
async def test_a_decision_says_whether_its_first_byte_was_a_first_token(client: httpx.AsyncClient, stream: bool) -> None:
    r = await client.post("/v1/chat/completions", headers={"x-aigrid-client-location": "Tokyo"},
                          json={"model": "smollm2-135m", "max_tokens": 4, "stream": stream,
                                "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    d = (await client.get(f"/v1/decisions/{r.headers['x-aigrid-decision']}")).json()
    assert d["ttft_ms"] is not None and d["ttft_is_first_token"] is stream, d
