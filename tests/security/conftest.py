from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.security.redis_server import redis_server


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    workdir: Path = tmp_path_factory.mktemp("redis")
    with redis_server(workdir) as port:
        yield port
