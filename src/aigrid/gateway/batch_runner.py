"""The batches a gateway process runs: one asyncio task per batch, a few of its lines in flight at once.

Created with the gateway's app (batches.py, `Gateway.batches`), never at module level; the lifespan starts it
and stops it. Every process of `aigrid up --workers N` has one, over the same SQLite index (batch_store.py):

- **Claims.** A batch is run by the one process that claimed it. The process that accepted the batch
  claims it at once; every `poll_s` each process renews its claims, reads the status of its batches (a
  cancel from any worker shows there) and claims unfinished batches that nobody holds (released by a
  process that stopped, or whose claim was not renewed for `stale_s`: its process died), up to
  `max_running`. A process that finds its claim taken over stops starting that batch's lines.
- **Lines.** In input order, read from the input file a chunk at a time as they are reached (a running batch
  never holds its file: batch_input.lines_not_done), at most `concurrency` at a time, each through the one pipeline as its creator
  (batch_line.py); its answer is appended to the output or the error file (batch_output.py), which is the
  progress a resumed batch starts from. A line refused for capacity or rate (429, 503) is tried again
  after `retry_s` x the try, up to `line_attempts` tries; then it goes to the error file.
- **Results.** Each line of the output and error files is checked before it is written (FileStore.check_output):
  one that would leave the disk with less than `min_free_bytes` free, or take the tenant past its storage quota,
  stops the batch: no new line starts, and it ends failed, its `errors` saying why, the files holding what it
  wrote (completed when no line was left: every one answered and kept); logged. The lines that ran are charged, so their answers are kept: the one that found no room and every
  other in flight is still written (the floor and the quota passed by at most `concurrency` answers of the
  batch), as OpenAI keeps a failed batch's finished requests. Only a write the disk itself refuses loses an
  answer (logged with its custom_id); this process holds it (`_unwritten`), and a resume of the batch here writes
  it instead of running (and charging) its line again.
- **Statuses.** validating -> in_progress (claimed) -> finalizing -> completed; cancelling (POST .../cancel:
  no new line starts, running ones finish) -> cancelled (resumed as finalizing, its cancel recorded: no line
  starts); past `expires_at` (24 h after creation): no new line starts, the lines not run go to the error file
  as `batch_expired`, -> expired. The output and error
  files are registered as files (purpose `batch_output`) when the batch ends, with what it did, made under the
  jurisdictions of the batch's creator (StoredBatch.jurisdictions: the keys that see the batch see them).
- **Shutdown** (`stop`): no new line starts, running ones get `drain_s` to finish and are stopped after it
  (their exchanges close: quota settled, audit record `cancelled`; they run again on resume), and every
  claim is released, so the batch resumes at the next start of any worker, from where it stopped.

It runs Anthropic's message batches too (message_batches_api.py): a batch row whose endpoint is /v1/messages,
its requests an input file of Messages lines, each run by the line runner of its endpoint (batches.py); its
files are the Message Batches API's own (file_store.HIDDEN) and its counts tell the expired lines apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aigrid.errors import ApiError, InsufficientStorage
from aigrid.gateway.batch_input import MAX_LINE_BYTES, Line, lines_not_done
from aigrid.gateway.batch_line import LineResult
from aigrid.gateway.batch_output import BatchOutput, Progress
from aigrid.gateway.batch_store import FINAL, BatchStore, StoredBatch, start_cancelling
from aigrid.gateway.file_store import FileStore, StorageFull
from aigrid.gateway.messages_api import MESSAGES_PATH
from aigrid.spec.models import BatchSpec

log = logging.getLogger("aigrid.gateway")
SWEEP_EVERY_S = 60.0
"""How often a process deletes expired files."""
RunLine = Callable[[StoredBatch, Line], Awaitable[LineResult]]
EXPIRED = {"code": "batch_expired",
           "message": "This request could not be executed before the completion window expired."}
RESULT_LOST = "result_lost"
"""The code of a batch's error naming a line that ran whose result no file kept; its custom_id in `aigrid_custom_id`,
its request id in `aigrid_request_id` (the Message Batches API shows the line as an errored result carrying it:
message_batches_api.py)."""


@dataclass
class _Run:
    bid: str
    task: asyncio.Task[None] | None = None
    claimed: bool = False
    halt: asyncio.Event = field(default_factory=asyncio.Event)
    why: str | None = None
    """Why no new line starts: stop (shutdown), cancel, lost (claim taken over), expired, full (its results could
    not be written: `full` says why)."""
    full: ApiError | None = None
    lines: set[asyncio.Task[None]] = field(default_factory=set)

    def stop(self, why: str) -> None:
        # a shutdown or a lost claim wins over a cancel; results that cannot be written, over a cancel or the expiry
        if self.why is None or why in ("stop", "lost") or (why == "full" and self.why in ("cancel", "expired")):
            self.why = why
        self.halt.set()


class BatchRunner:
    def __init__(self, spec: BatchSpec, store: BatchStore, files: FileStore, run_line: RunLine, *,
                 clock: Callable[[], float] = time.time, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.spec = spec
        self.max_line_bytes = max_line_bytes
        """The longest input line read as a request (gateway.max_body_bytes); a longer one is never held whole."""
        self.store, self.files, self.run_line = store, files, run_line
        self.clock = clock
        self.owner = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        """This process's name on its claims."""
        self._runs: dict[str, _Run] = {}
        self._unwritten: dict[str, dict[str, LineResult]] = {}
        """Per batch, the results of lines that ran (charged, audited) but could not be written (the disk refused them,
        the index failed the check): a batch resumed in this process writes them instead of running their lines
        again, and drops them when it ends; the ticker drops those of a batch the index says ended while this process
        did not run it (another process resumed it)."""
        self._ticker: asyncio.Task[None] | None = None
        self._hurried = asyncio.Event()
        """Set by hurry(): the drain of stop() ends at once."""
        self._swept = 0.0
        self.stopping = False

    def __len__(self) -> int:
        return len(self._runs)

    def running(self, bid: str) -> bool:
        return bid in self._runs

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Claim what nobody runs (batches left by a stop or a dead process) and keep the claims renewed."""
        self.stopping = False
        self._hurried.clear()
        self._ensure_ticker()

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.create_task(self._tick_loop(), name="aigrid-batches")

    def hurry(self) -> None:
        """A second Ctrl-C/SIGTERM (stopping.py): the drain of `stop`, begun or to come, ends now; the lines still
        running are stopped as after drain_s (each settles and writes its record)."""
        self._hurried.set()

    async def stop(self) -> None:
        """No new line starts; running lines get drain_s (none once hurried), then are stopped; every claim is
        released."""
        self.stopping = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        runs = list(self._runs.values())
        for run in runs:
            run.stop("stop")
        tasks = {run.task for run in runs if run.task is not None}
        if not tasks:
            return
        drained = asyncio.ensure_future(asyncio.wait(tasks))
        hurried = asyncio.ensure_future(self._hurried.wait())
        try:
            await asyncio.wait({drained, hurried}, timeout=self.spec.drain_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            drained.cancel()
            hurried.cancel()
        pending = {task for task in tasks if not task.done()}
        if pending:
            for run in runs:
                for line in list(run.lines):
                    line.cancel()
            await asyncio.wait(pending)

    # --- what the API asks -----------------------------------------------------------------------------------
    def submit(self, bid: str) -> None:
        """Run the batch `bid` here if this process may take it (a batch just created, or cancelled)."""
        if self.stopping or bid in self._runs or len(self._runs) >= self.spec.max_running:
            return
        self._ensure_ticker()
        run = self._runs[bid] = _Run(bid)
        run.task = asyncio.create_task(self._claim_and_run(run), name=f"aigrid-batch-{bid}")

    async def cancel(self, bid: str, tenant: str, *, prefix: str,
                     allowed: frozenset[str] | None = None) -> dict[str, Any] | None:
        """The client's cancel (both batch APIs): a validating or in-progress batch moves to cancelling
        (start_cancelling, one transaction whichever process runs it); if this process runs it, no new line
        starts from now; if nobody does, this process ends it. The batch after (its status says whether the
        cancel took), None: no such batch of the tenant that a key allowed `allowed` may see."""
        obj = await self.store.update(bid, start_cancelling(int(time.time())), tenant=tenant, prefix=prefix,
                                      allowed=allowed)
        if obj is not None and obj["status"] == "cancelling":
            run = self._runs.get(bid)
            if run is not None:
                run.stop("cancel")
            self.submit(bid)
        return obj

    # --- the ticker -----------------------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        while not self.stopping:
            try:
                await self._tick()
            except Exception:  # the index unreadable for a moment (disk, lock): try again next time
                log.exception("batches: could not renew claims or claim batches")
            await asyncio.sleep(self.spec.poll_s)

    async def _tick(self) -> None:
        if not self._runs and not self.store.db.path.exists():
            return  # no file or batch was ever made here: nothing to claim, and no folder made for nothing
        now = self.clock()
        claimed = [bid for bid, run in self._runs.items() if run.claimed]
        if claimed:
            statuses = await self.store.renew(self.owner, claimed, now)
            for bid in claimed:
                run = self._runs.get(bid)
                status = statuses.get(bid)
                if run is None:
                    continue
                if status is None:
                    run.stop("lost")
                elif status == "cancelling":
                    run.stop("cancel")
        if any(bid not in self._runs for bid in self._unwritten):
            await self._drop_ended_elsewhere()
        room = self.spec.max_running - len(self._runs)
        if room > 0 and not self.stopping:
            for bid in await self.store.claimable(now, self.spec.stale_s, room):
                self.submit(bid)
        if now - self._swept >= SWEEP_EVERY_S:
            self._swept = now
            await self.files.sweep()

    # --- one batch ----------------------------------------------------------------------------------------
    async def _claim_and_run(self, run: _Run) -> None:
        try:
            row = await self.store.claim(run.bid, self.owner, self.clock(), self.spec.stale_s)
            if row is None:
                return
            run.claimed = True
            await self._execute(run, row)
        except Exception:
            log.exception("batch %s: stopped by an internal error (it resumes at the next start)", run.bid)
        else:
            self._drop_unwritten(run.bid)
        finally:
            self._runs.pop(run.bid, None)
            if run.claimed:  # a batch that ended is claimed by nobody; one that stopped resumes anywhere
                try:
                    await self.store.release(run.bid, self.owner)
                except Exception:  # the index unreadable for a moment: the claim lapses after stale_s instead
                    log.warning("batch %s: could not release its claim; another process takes it over after "
                                "%g s (batch.stale_s)", run.bid, self.spec.stale_s, exc_info=True)

    async def _execute(self, run: _Run, row: StoredBatch) -> None:
        obj = row.obj
        if obj["status"] == "cancelling" or (obj["status"] == "finalizing" and obj.get("cancelling_at") is not None):
            run.stop("cancel")  # a cancelled batch resumed after its files' index refused them: it starts no line
        input_file = await self.files.get(row.tenant, obj["input_file_id"], hidden=True, expired=True)
        if input_file is None:
            await self._fail(row, "input_file_missing", f"The input file {obj['input_file_id']} is no longer stored.")
            return
        path = self.files.disk_path(input_file)
        output = BatchOutput(self.files.folder(row.tenant), row.id)
        progress = await asyncio.to_thread(output.recover)
        total = (obj.get("request_counts") or {}).get("total")  # the lines that passed when it was created
        if total is None:  # a row made without its counts: read them from the file
            total = 0
            async with contextlib.aclosing(self._lines(path, obj["endpoint"], set())) as every:
                async for _ in every:
                    total += 1
        now = int(self.clock())

        def started(o: dict[str, Any]) -> bool:
            if o["status"] != "validating":
                return False
            o.update(status="in_progress", in_progress_at=now)
            o["request_counts"] = _request_counts(row, progress, total)
            return True

        await self.store.update(row.id, started)
        await self._write_unwritten(run, row, output, progress, total)
        if run.why is None:
            await self._room_to_start(run, row, output)
        async with contextlib.aclosing(self._lines(path, obj["endpoint"], self._not_to_run(row, progress))) as pending:
            await self._run_lines(run, row, pending, output, progress, total)
        if run.why in ("stop", "lost"):
            return  # resumable: the claim is released (stop) or someone else holds it (lost)
        if run.why == "expired" or (run.why is None and len(progress.done) < total
                                    and self.clock() >= obj["expires_at"]):
            try:
                async with contextlib.aclosing(self._lines(path, obj["endpoint"],
                                                           self._not_to_run(row, progress))) as unfinished:
                    async for line in unfinished:
                        record = {"id": "batch_req_" + os.urandom(12).hex(), "custom_id": line.custom_id,
                                  "response": None, "error": EXPIRED}
                        await output.append(False, record, self._check(row, "error"))
                        progress.add(False, record, None)
            except (InsufficientStorage, StorageFull) as e:
                self._refused(run, row, e)
            else:
                await self._finish(row, output, progress, total, "expired")
                return
        if run.why == "full" and len(progress.done) < total:
            await self._finish(row, output, progress, total, "failed", run.full)
        elif run.why == "cancel":
            await self._finish(row, output, progress, total, "cancelled")
        else:  # stopped for room at its last lines, every one answered and kept: nothing of it failed
            if run.why == "full":
                log.warning("batch %s: completed, its last lines kept past the limit that stopped it", row.id)
            await self._finish(row, output, progress, total, "completed")

    def _not_to_run(self, row: StoredBatch, progress: Progress) -> set[str]:
        """The custom_ids of the batch's lines never to run again (nor mark expired): answered, or ran and held here."""
        return progress.done | set(self._unwritten.get(row.id, ()))

    def _lines(self, path: Path, endpoint: str, done: set[str]) -> AsyncGenerator[Line, None]:
        """The batch's lines not `done` (read when each is reached), in file order, from its input file a chunk at
        a time off the event loop: a running batch holds a chunk and its lines in flight, never its file."""
        return lines_not_done(path, endpoint, self.spec.max_lines, self.max_line_bytes, done)

    async def _run_lines(self, run: _Run, row: StoredBatch, pending: AsyncIterator[Line], output: BatchOutput,
                         progress: Progress, total: int) -> None:
        slots = asyncio.Semaphore(self.spec.concurrency)
        expires_at = row.obj["expires_at"]

        async def one(line: Line) -> None:
            try:
                result = await self._line_with_retries(run, row, line, expires_at)
                if result is not None:
                    await self._record(run, row, result, output, progress, total)
            finally:
                slots.release()

        async for line in pending:
            await slots.acquire()
            if not run.halt.is_set() and self.clock() >= expires_at:
                run.stop("expired")
            if run.halt.is_set():
                slots.release()
                break
            task = asyncio.create_task(one(line), name=f"aigrid-batch-{row.id}-line")
            run.lines.add(task)
            task.add_done_callback(run.lines.discard)
        if run.lines:
            await asyncio.wait(set(run.lines))

    async def _record(self, run: _Run, row: StoredBatch, result: LineResult, output: BatchOutput, progress: Progress,
                      total: int) -> None:
        """A line's result written and counted. One the disk or the index would not take is held (`_unwritten`): the
        line ran and was charged, so a resume of the batch in this process writes it rather than run it again."""
        cid = result.record["custom_id"]
        try:
            await output.append(result.ok, result.record,
                                self._room_for_run_line(run, row, "output" if result.ok else "error"))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self._unwritten.setdefault(row.id, {})[cid] = result
            if isinstance(e, (InsufficientStorage, StorageFull)):  # the disk's floor, its space: the batch stops
                self._refused(run, row, e, cid)
            else:  # the output file or the index failed
                log.exception("batch %s: the result of line %s could not be recorded (held for a resume here)", row.id,
                              cid)
            return
        progress.add(result.ok, result.record, dict(result.usage) if result.usage else None)
        try:
            await self._counts(row, progress, total)
        except asyncio.CancelledError:
            raise
        except Exception:  # the index failed: the counts are written with the next line's, or at the end
            log.exception("batch %s: the counts after line %s could not be recorded", row.id, cid)

    async def _write_unwritten(self, run: _Run, row: StoredBatch, output: BatchOutput, progress: Progress,
                               total: int) -> None:
        """The results held when this batch stopped here (they ran, were charged, and no file took them), written
        now, once each (one found in the files after all is not written again)."""
        held = self._unwritten.pop(row.id, {})
        for cid, result in held.items():
            if cid in progress.done:
                continue
            if run.why == "full":  # no room again: the rest stay held, never run again here
                self._unwritten.setdefault(row.id, {})[cid] = result
                continue
            await self._record(run, row, result, output, progress, total)

    async def _room_to_start(self, run: _Run, row: StoredBatch, output: BatchOutput) -> None:
        """A batch asks for room before it starts a line (a fresh one, one stopped for room whose end the index
        refused, one a restart stopped): with none it starts none (each line that ran would be written past the floor
        or the quota all the same, `concurrency` of them at every resume) and ends as a batch stopped for room. Both
        its result files (output, error) count in the tenant's number of files from here (`batch_result_files`),
        whichever it writes, as its create asked room for both: a line's answer never makes a file past the count
        (before, the line that found no room for its file was written all the same, as were the others in flight: the
        count passed by up to 2). A message batch too (since the twenty-sixth session: before, it counted each file as
        it was made, its create asking room for its requests file only)."""
        written, _ = await asyncio.to_thread(output.held)
        try:
            await self._check(row)(written, 0, 2)
        except (InsufficientStorage, StorageFull) as e:
            self._refused(run, row, e)

    async def _drop_ended_elsewhere(self) -> None:
        """The results held for a batch this process does not run, once the index says it ended (or is gone): another
        process resumed it and ran their lines again, so no resume here will write them; dropped, each said at error
        (held for ever, they were a leak of every such batch's answers)."""
        for bid in [bid for bid in self._unwritten if bid not in self._runs]:
            row = await self.store.row(bid)
            if bid not in self._runs and (row is None or row.obj["status"] in FINAL):  # not resumed here meanwhile
                self._drop_unwritten(bid, " (the batch ended in another process, which ran the line again)")

    def _drop_unwritten(self, bid: str, where: str = "") -> None:
        """The results this batch could not write, dropped as it ends (or leaves this process): each said at error."""
        for cid in self._unwritten.pop(bid, {}):
            log.error("batch %s: the answer of custom_id %r ran and was charged, but no file could keep it%s", bid, cid,
                      where)

    def _check(self, row: StoredBatch, result: str | None = None) -> Callable[[int, int, int], Awaitable[None]]:
        """What a line of the batch's results must pass before it is written: the disk's floor, the tenant's quota
        (a batch made under some jurisdictions is told no totals: keys that may not see every file read its errors).
        `result`: the file the line goes to ("output", "error"; None: no line, a resume asking for room)."""
        return lambda written, size, files: self.files.check_output(row.tenant, row.id, written, size, files,
                                                                    jurisdictions=row.jurisdictions, result=result)

    def _room_for_run_line(self, run: _Run, row: StoredBatch,
                           result: str) -> Callable[[int, int, int], Awaitable[None]]:
        """The check of a line that ran (charged, audited): the first to find no room stops the batch, and is written
        all the same, as is every other line in flight (no check once the batch stopped for room): charged work is
        never dropped, and the floor and the quota are passed by at most the lines in flight."""
        room = self._check(row, result)

        async def check(written: int, size: int, files: int) -> None:
            if run.why == "full":
                return
            try:
                await room(written, size, files)
            except (InsufficientStorage, StorageFull) as e:
                self._refused(run, row, e)

        return check

    @staticmethod
    def _refused(run: _Run, row: StoredBatch, e: ApiError, custom_id: str | None = None) -> None:
        """A result that could not be written: no new line starts, and the batch fails with what it wrote
        (`custom_id`: a line whose write the disk refused, its answer lost though it ran)."""
        if run.full is None:
            run.full = e
            log.warning("batch %s: stopped, no new line starts (it fails unless every line was answered): %s", row.id,
                        e.message)
        if custom_id is not None:
            log.error("batch %s: the answer of custom_id %r ran and was charged, but the disk refused to keep it: "
                      "%s", row.id, custom_id, e.message)
        run.stop("full")

    async def _line_with_retries(self, run: _Run, row: StoredBatch, line: Line,
                                 expires_at: float) -> LineResult | None:
        """The line's result, or None when the batch halted while it waited to be tried again. A wait never
        outlasts the batch's window (a spent day's budget says Retry-After in hours): at its end the batch
        expires, and the line is left for the expired lines' file instead of running after it."""
        attempts = self.spec.line_attempts
        for attempt in range(1, attempts + 1):
            result = await self.run_line(row, line)
            if result.retry_after_s is None or attempt == attempts:
                return result
            wait = min(max(result.retry_after_s, self.spec.retry_s * attempt), max(expires_at - self.clock(), 0.0))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.halt.wait(), wait)
            if not run.halt.is_set() and self.clock() >= expires_at:
                run.stop("expired")
            if run.halt.is_set():
                return None
        return None  # not reached: the last attempt returns

    async def _counts(self, row: StoredBatch, progress: Progress, total: int) -> None:
        counts = _request_counts(row, progress, total)

        def update(o: dict[str, Any]) -> bool:
            if o["status"] in FINAL:
                return False
            o["request_counts"], o["usage"] = counts, progress.usage()
            return True

        await self.store.update(row.id, update)

    async def _finish(self, row: StoredBatch, output: BatchOutput, progress: Progress, total: int,
                      status: str, error: ApiError | None = None) -> None:
        """finalizing: the output and error files registered; then the final status with what was done (`error`:
        why a batch that ran failed, its `errors`)."""
        now = int(self.clock())

        def finalizing(o: dict[str, Any]) -> bool:
            if o["status"] in FINAL or o["status"] == "finalizing":
                return False
            o.update(status="finalizing", finalizing_at=now)
            return True

        await self.store.update(row.id, finalizing)
        output_id, error_id = await self._keep(row, output)
        counts = _request_counts(row, progress, total)
        end = int(self.clock())
        # the lines that ran (charged, audited) whose results no file took: named in its errors, each line's loss
        # visible to the client (until the twenty-ninth session only in the log; the batch said why it stopped)
        data = [] if error is None else [{"code": error.code, "line": None, "message": error.message, "param": None}]
        data += [_lost(cid, result) for cid, result in self._unwritten.get(row.id, {}).items()]

        def final(o: dict[str, Any]) -> bool:
            if o["status"] in FINAL:
                return False
            # a cancel that came while the last lines ended: they all ran, and it says cancelled
            outcome = "cancelled" if o.get("cancelling_at") is not None and status == "completed" else status
            o.update(status=outcome, output_file_id=output_id, error_file_id=error_id, request_counts=counts,
                     usage=progress.usage())
            if data:
                o["errors"] = {"object": "list", "data": data}
            o[f"{outcome}_at"] = end
            return True

        await self.store.update(row.id, final)

    async def _keep(self, row: StoredBatch, output: BatchOutput) -> list[str | None]:
        """The output and error files as files of the batch's tenant (purpose `batch_output`, expiring as
        `output_expires_after` says) and no longer counted as its results written, in one step
        (FileStore.keep_results: a failure of the index changes nothing, raised, and the batch ends again when it
        resumes); each file's id, None where the batch wrote no line."""
        after = row.obj.get("output_expires_after")
        expires = int(self.clock()) + int(after["seconds"]) if after else None
        purpose = "message_batch_output" if row.obj["endpoint"] == MESSAGES_PATH else "batch_output"
        return await self.files.keep_results(row.tenant, row.id, [(output.output, purpose), (output.errors, purpose)],
                                             expires, jurisdictions=row.jurisdictions)

    async def _fail(self, row: StoredBatch, code: str, message: str) -> None:
        """The batch failed before a line ran here; what it wrote before (a run stopped, resumed now) is kept as its
        files and counted so (its `batch_results` row handed over, as every batch that ends)."""
        output = BatchOutput(self.files.folder(row.tenant), row.id)
        await asyncio.to_thread(output.recover)  # a last line cut short by a crash: dropped
        output_id, error_id = await self._keep(row, output)
        now = int(self.clock())

        def failed(o: dict[str, Any]) -> bool:
            if o["status"] in FINAL:
                return False
            o.update(status="failed", failed_at=now, output_file_id=output_id, error_file_id=error_id,
                     errors={"object": "list", "data": [{"code": code, "line": None, "message": message,
                                                         "param": None}]})
            return True

        await self.store.update(row.id, failed)


def _lost(cid: str, result: LineResult) -> dict[str, Any]:
    """A batch's error naming a line whose result no file kept: its custom_id and its request id (the decision's, which
    `aigrid explain` reads, else its own: the audit record's), "ran and was charged" only where it was (a line refused
    before any engine answered was charged nothing). Until the thirtieth session no request id, and always charged."""
    response = result.record.get("response") or {}
    rid = response.get("request_id")
    ran = "ran and was charged" if result.charged else f"ended (status {response.get('status_code')}, nothing charged)"
    return {"code": RESULT_LOST, "line": None, "param": None, "aigrid_custom_id": cid, "aigrid_request_id": rid,
            "message": f"the request of custom_id {cid!r} {ran}, but the disk refused to keep its result"}


def _request_counts(row: StoredBatch, progress: Progress, total: int) -> dict[str, int]:
    """OpenAI's Batch `request_counts`; a message batch's also count its expired lines (Anthropic tells them
    from the errored ones)."""
    counts = {"total": total, "completed": progress.completed, "failed": progress.failed}
    if row.obj["endpoint"] == MESSAGES_PATH:
        counts["expired"] = progress.expired
    return counts
