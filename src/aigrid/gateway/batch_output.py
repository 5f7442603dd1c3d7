"""The output and error files of a running batch, written a line at a time as its lines end.

They are the batch's progress: a line is done once its line is in one of them. A batch resumed after a
restart (or taken over from a process that died) reads both (`recover`) and runs only the custom_ids found
in neither (read a line at a time, never whole); a last line cut short by a crash is dropped first, so that line
runs again. When the batch ends
they become its `output_file_id` and `error_file_id` (batch_runner.py: FileStore.register). A line is written
whole or not at all: a write the disk refuses leaves the file as it was.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from aigrid.errors import InsufficientStorage

log = logging.getLogger("aigrid.gateway")


@dataclass(slots=True)
class Progress:
    done: set[str] = field(default_factory=set)
    completed: int = 0
    failed: int = 0
    expired: int = 0
    """Of the failed: the lines not run before the batch expired (Anthropic's `expired` results)."""
    input_tokens: int = 0
    cached_tokens: int = 0
    output_tokens: int = 0

    def add(self, ok: bool, record: dict[str, Any], usage: dict[str, Any] | None) -> None:
        self.done.add(record["custom_id"])
        if ok:
            self.completed += 1
        else:
            self.failed += 1
            if (record.get("error") or {}).get("code") == "batch_expired":
                self.expired += 1
        if usage:
            self.input_tokens += int(usage.get("prompt_tokens") or 0)
            self.output_tokens += int(usage.get("completion_tokens") or 0)
            details = usage.get("prompt_tokens_details")
            self.cached_tokens += int((details or {}).get("cached_tokens") or 0) if isinstance(details, dict) else 0

    def usage(self) -> dict[str, Any]:
        """OpenAI's Batch `usage`."""
        return {"input_tokens": self.input_tokens, "input_tokens_details": {"cached_tokens": self.cached_tokens},
                "output_tokens": self.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens}


class BatchOutput:
    def __init__(self, folder: Path, bid: str) -> None:
        self.output = folder / f"{bid}_output.jsonl"
        self.errors = folder / f"{bid}_error.jsonl"
        self._lock = asyncio.Lock()

    def recover(self) -> Progress:
        """What the files already hold (blocking: call it in a thread), read a line at a time: what is held is the
        custom_ids done, never the files (a line is one answer, as this process wrote it)."""
        progress = Progress()
        self.output.parent.mkdir(parents=True, exist_ok=True)
        for path, ok in ((self.output, True), (self.errors, False)):
            if not path.exists():
                continue
            with path.open("r+b") as f:
                whole = 0
                for text in f:
                    if not text.endswith(b"\n"):
                        break
                    whole += len(text)
                    _recovered(progress, ok, text)
                if whole < f.seek(0, os.SEEK_END):  # a line cut short: dropped, it runs again
                    f.truncate(whole)
        return progress

    async def append(self, ok: bool, record: dict[str, Any],
                     check: Callable[[int, int, int], Awaitable[None]] | None = None) -> None:
        """The record written as a line of the output (`ok`) or the error file; `check(written, size, files)` (`files`:
        how many of the two files there are with this line), awaited first (in turn with the other lines), may refuse
        it (the disk's floor, the tenant's quota of bytes and of files: FileStore.check_output).
        A write that fails (the disk full) leaves the file as it was, whole lines only, and raises
        InsufficientStorage."""
        line = orjson.dumps(record) + b"\n"
        async with self._lock:
            if check is not None:
                written, files = await asyncio.to_thread(self._held, self.output if ok else self.errors)
                await check(written, len(line), files)
            try:
                await asyncio.to_thread(_append, self.output if ok else self.errors, line)
            except OSError as e:
                raise InsufficientStorage(f"this batch's results could not all be written: {e.strerror or e}; the lines "
                                          "already answered are in its output and error files") from e

    def held(self) -> tuple[int, int]:
        """(bytes, files) of the output and error files (blocking)."""
        return self._held(None)

    def _held(self, to: Path | None) -> tuple[int, int]:
        """(bytes, files) of the output and error files, `to` counted as a file even before its first line (blocking)."""
        there = [p for p in (self.output, self.errors) if p.exists()]
        return sum(p.stat().st_size for p in there), len(there) + (to is not None and to not in there)


def _recovered(progress: Progress, ok: bool, text: bytes) -> None:
    """A whole line of the output (`ok`) or the error file counted in `progress` (one not JSON: skipped)."""
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError:
        return
    body = (record.get("response") or {}).get("body")
    usage = body.get("usage") if ok and isinstance(body, dict) else None
    progress.add(ok, record, usage if isinstance(usage, dict) else None)


def _append(path: Path, line: bytes) -> None:
    """`line` appended whole, or the file cut back to where it was (a write the disk refused half way)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(line)
            while view:
                view = view[os.write(fd, view):]
        except OSError:
            try:
                os.ftruncate(fd, start)
            except OSError as e:  # the half line stays: said, as the batch's own failure is
                log.warning("%s: a result line written in part could not be cut back to %d bytes: %s; the file "
                            "ends with a broken line", path, start, e)
            raise
    finally:
        os.close(fd)
