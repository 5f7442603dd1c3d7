"""The Batch API and the Files API of one gateway process, wired once by build_app (`Gateway.batches`): the
SQLite index and the files under `gateway.batch.dir`, the runner of this process's batches, their routes.
The lifespan starts the runner (it resumes what nobody runs) and stops it before the audit log stops, so
that every line it stops still writes its record. docs/batches.md.

Anthropic's Message Batches API (message_batches_api.py) runs on the same runner, store and claims: a batch
whose endpoint is /v1/messages has its requests run by the Messages API's pipeline path (message_batch_line.py)
instead of the chat one."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.routing import Route

from aigrid.errors import ConfigError
from aigrid.gateway.batch_db import BatchDb
from aigrid.gateway.batch_input import Line
from aigrid.gateway.batch_line import BatchLine, LineResult, line_bound
from aigrid.gateway.batch_runner import BatchRunner
from aigrid.gateway.batch_store import BatchStore, StoredBatch
from aigrid.gateway.batches_api import BatchesApi
from aigrid.gateway.file_store import FileStore, StorageLimit
from aigrid.gateway.files_api import FilesApi
from aigrid.gateway.message_batch_line import MessageBatchLine
from aigrid.gateway.message_batches_api import MessageBatchesApi
from aigrid.gateway.messages_api import MESSAGES_PATH, MessagesApi
from aigrid.gateway.routes import Routes
from aigrid.spec.models import GridSpec


@dataclass
class Batches:
    files: FileStore
    store: BatchStore
    runner: BatchRunner
    files_api: FilesApi
    batches_api: BatchesApi
    message_batches_api: MessageBatchesApi

    def routes(self) -> list[Route]:
        return [*self.files_api.routes(), *self.batches_api.routes(), *self.message_batches_api.routes()]

    async def start(self) -> None:
        db = self.files.db
        try:  # the folder and its index now, not at the first request: a dir that cannot be one fails the start
            await db.read(lambda _: None)
        except (OSError, sqlite3.Error) as e:  # was a gateway that started and answered every Files and Batch
            raise ConfigError(f"gateway.batch.dir: cannot keep batches in {db.root}: {e}") from e  # call 500
        await self.runner.start()

    async def stop(self) -> None:
        await self.runner.stop()


def storage_limits(spec: GridSpec) -> Callable[[str], StorageLimit]:
    """Each tenant's storage quota: its own `quotas` (a tenant that has them), else `security.default_quotas`,
    as the rate quotas are chosen (guard.Guard._quota_rules)."""
    default = spec.security.default_quotas
    limits = {name: StorageLimit(q.storage_bytes, q.storage_files)
              for name, t in spec.tenants.items() if (q := t.quotas) is not None}
    fallback = StorageLimit(default.storage_bytes, default.storage_files)
    return lambda tenant: limits.get(tenant, fallback)


def build_batches(routes: Routes) -> Batches:
    gw = routes.gw
    spec = gw.spec.gateway.batch
    db = BatchDb(Path(spec.dir).resolve())
    files, store = FileStore(db, storage_limits(gw.spec), spec.min_free_bytes), BatchStore(db)
    chat, messages = BatchLine(routes).run, MessageBatchLine(routes, MessagesApi(routes)).run

    async def run_line(batch: StoredBatch, line: Line) -> LineResult:
        return await (messages if batch.obj["endpoint"] == MESSAGES_PATH else chat)(batch, line)

    runner = BatchRunner(spec, store, files, run_line, max_line_bytes=line_bound(gw))
    return Batches(files, store, runner, FilesApi(routes, files, store, spec.max_file_bytes),
                   BatchesApi(routes, files, store, runner), MessageBatchesApi(routes, files, store, runner))
