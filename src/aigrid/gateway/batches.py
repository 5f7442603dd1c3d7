"""The Batch API and the Files API of one gateway process, wired once by build_app (`Gateway.batches`): the
SQLite index and the files under `gateway.batch.dir`, the runner of this process's batches, their routes.
The lifespan starts the runner (it resumes what nobody runs) and stops it before the audit log stops, so
that every line it stops still writes its record. docs/batches.md."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from starlette.routing import Route

from aigrid.gateway.batch_db import BatchDb
from aigrid.gateway.batch_line import BatchLine
from aigrid.gateway.batch_runner import BatchRunner
from aigrid.gateway.batch_store import BatchStore
from aigrid.gateway.batches_api import BatchesApi
from aigrid.gateway.file_store import FileStore
from aigrid.gateway.files_api import FilesApi
from aigrid.gateway.routes import Routes


@dataclass
class Batches:
    files: FileStore
    store: BatchStore
    runner: BatchRunner
    files_api: FilesApi
    batches_api: BatchesApi

    def routes(self) -> list[Route]:
        return [*self.files_api.routes(), *self.batches_api.routes()]

    async def start(self) -> None:
        await self.runner.start()

    async def stop(self) -> None:
        await self.runner.stop()


def build_batches(routes: Routes) -> Batches:
    gw = routes.gw
    spec = gw.spec.gateway.batch
    db = BatchDb(Path(spec.dir).resolve())
    files, store = FileStore(db), BatchStore(db)
    runner = BatchRunner(spec, store, files, BatchLine(routes).run)
    return Batches(files, store, runner, FilesApi(routes, files, store, spec.max_file_bytes),
                   BatchesApi(routes, files, store, runner))
