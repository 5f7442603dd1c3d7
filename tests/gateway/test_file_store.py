"""gateway/file_store.FileStore: what its refusals for the storage quota say."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from aigrid.gateway.batch_db import BatchDb
from aigrid.gateway.file_store import FileStore, StorageFull, StorageLimit


async def test_a_batch_refused_for_bytes_is_not_told_its_files_would_pass_the_count(tmp_path: Path) -> None:
    """Review of 55401e7 (area L): check_room(files=2 or 3), a batch's or a message batch's create, added "a batch's
    2 result files would pass it" / "a message batch's 3 files ... would pass it" to every refusal, also one for the
    tenant's bytes while its files left room for them: a tenant at its storage_bytes with 1 file of 10 was told its
    3 files would pass the count. That is said only where they would."""
    store = FileStore(BatchDb(tmp_path), lambda _: StorageLimit(bytes=100, files=10))
    await store.add("t", "full.jsonl", "batch", io.BytesIO(b"x" * 100))
    for files, said in ((2, "result files"), (3, "3 files")):
        with pytest.raises(StorageFull) as bytes_full:
            await store.check_room("t", "requests", files=files)
        assert "100 bytes in 1 files" in bytes_full.value.message and said not in bytes_full.value.message
    counted = FileStore(BatchDb(tmp_path / "few"), lambda _: StorageLimit(bytes=10_000, files=3))
    await counted.add("t", "one.jsonl", "batch", io.BytesIO(b"x"))
    await counted.check_room("t", "input", files=2)  # 1 + 2 within 3
    with pytest.raises(StorageFull) as files_full:
        await counted.check_room("t", "requests", files=3)
    assert "a message batch's 3 files (its requests, results and errors) would pass it" in files_full.value.message
