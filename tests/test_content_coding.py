from collections.abc import AsyncIterator

import httpx
import pytest

from aigrid.content_coding import Encoded, coded, read_identity


def test_coded_names_a_compressed_answer_only() -> None:
    assert coded({}) is None
    assert coded({"content-encoding": ""}) is None
    assert coded({"content-encoding": " Identity "}) is None
    assert coded({"content-encoding": "GZip"}) == "gzip"
    assert coded({"content-encoding": "gzip, br"}) == "gzip, br"


class Pieces(httpx.AsyncByteStream):
    """A body sent in pieces of 1 KiB, `count` of them, recording how many were read."""

    def __init__(self, count: int) -> None:
        self.count, self.read = count, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.count):
            self.read += 1
            yield b"x" * 1024


async def test_read_identity_is_the_probes_and_the_key_set_s_one_bounded_read() -> None:
    """engines/openai_compat._get and security/jwks._fetch read through it (each had its own copy): the body whole
    within the bound, None one piece past it (the rest never read), a compressed answer refused unread."""
    whole = Pieces(4)
    assert await read_identity(httpx.Response(200, stream=whole), 4096) == b"x" * 4096 and whole.read == 4
    endless = Pieces(1_000_000)
    assert await read_identity(httpx.Response(200, stream=endless), 4096) is None and endless.read == 5
    zipped = Pieces(3)
    with pytest.raises(Encoded, match="content-encoding 'gzip' \\(identity asked\\): not read"):
        await read_identity(httpx.Response(200, headers={"content-encoding": "gzip"}, stream=zipped), 4096)
    assert zipped.read == 0 and issubclass(Encoded, ValueError)
