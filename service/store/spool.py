"""The audit's local spool: card records the database could not take in time, kept on disk
until it can.

One file per process (``audit-<pid>-<hex>.spool``), append-only, one JSON record per line;
an append is fsynced before its records count as safe. The process holds an exclusive
``flock`` on its file, so workers of one pod (or pods on one shared volume) never mix lines;
a file whose lock is free belongs to a process that died, and the next process to start
adopts it (copies its records into its own spool, fsynced, then deletes it). The file is
bounded: an append that would take it past ``max_bytes`` is refused (:class:`SpoolFull`).

Records the database refuses on their own (a data error, not an outage) go to
``quarantine.jsonl`` beside the spools: kept for people to look at, never retried.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from service.errors import SpoolFull
from service.store.database import CardRecord

log = logging.getLogger("osteoguard.audit")
QUARANTINE = "quarantine.jsonl"
READ_CHUNK = 1024 * 1024


def encode(record: CardRecord) -> bytes:
    """One record as one line of JSON (NUL and other control characters are escaped by JSON)."""
    fields = asdict(record)
    fields["issued_at"] = record.issued_at.isoformat()
    fields["suggestion_uuids"] = list(record.suggestion_uuids)
    return json.dumps(fields, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> CardRecord:
    fields: dict[str, Any] = json.loads(line)
    fields["issued_at"] = datetime.fromisoformat(fields["issued_at"])
    fields["suggestion_uuids"] = tuple(fields["suggestion_uuids"])
    return CardRecord(**fields)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _lines(fd: int, start: int, end: int) -> Iterator[tuple[int, bytes]]:
    """Complete lines between ``start`` and ``end``, each with the offset just after it. A torn
    last line (a crash during an append that was never acknowledged) is left out."""
    rest = b""
    after = start  # the offset just after the last complete line
    position = start
    while position < end:
        chunk = os.pread(fd, min(READ_CHUNK, end - position), position)
        if not chunk:
            break
        position += len(chunk)
        *complete, rest = (rest + chunk).split(b"\n")
        for line in complete:
            after += len(line) + 1
            yield after, line


def _records(fd: int, start: int, end: int, name: str) -> Iterator[tuple[int, CardRecord]]:
    for after, line in _lines(fd, start, end):
        try:
            yield after, decode(line)
        except (ValueError, TypeError, KeyError):
            log.error("unreadable line in an audit spool skipped", extra={"file": name})


class Spool:
    """This process's spool file and the index of the records in it not yet in the database.

    Not thread-safe: the audit writer calls one method at a time (under its lock), each in a
    worker thread."""

    def __init__(self, folder: Path, max_bytes: int) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"audit-{os.getpid()}-{secrets.token_hex(4)}.spool"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _fsync_dir(folder)
        self.size = 0  # bytes in the file
        self.offset = 0  # bytes of it already in the database
        self.records: dict[str, CardRecord] = {}  # in the file, not yet in the database
        self.quarantined: set[str] = set()

    def append(self, records: list[CardRecord], bounded: bool = True) -> None:
        """Write records and fsync; raises SpoolFull when over the bound or the disk refuses."""
        data = b"".join(encode(r) for r in records)
        if bounded and self.size + len(data) > self.max_bytes:
            raise SpoolFull(f"the audit spool is full ({self.size} of {self.max_bytes} bytes)")
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
            os.fsync(self._fd)
        except OSError as exc:
            try:  # no torn line stays behind a refused append
                os.ftruncate(self._fd, self.size)
            except OSError:
                pass
            name = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
            raise SpoolFull(f"the audit spool cannot be written ({name})") from exc
        self.size += len(data)
        for r in records:
            self.records[r.uuid] = r

    def backlog(self, limit: int) -> tuple[list[CardRecord], int]:
        """Up to ``limit`` records not yet in the database, in order, and the offset after them."""
        out: list[CardRecord] = []
        end = self.offset
        for after, record in _records(self._fd, self.offset, self.size, self.path.name):
            out.append(record)
            end = after
            if len(out) >= limit:
                break
        return out, end

    def written(self, records: list[CardRecord], end: int) -> None:
        """Records up to ``end`` are in the database; an emptied file starts again at zero."""
        self.offset = end
        for r in records:
            self.records.pop(r.uuid, None)
        if self.offset >= self.size:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
            self.size = self.offset = 0
            self.records.clear()

    def adopt_orphans(self) -> int:
        """Take over the records of spools whose process is gone; returns how many."""
        adopted = 0
        for path in sorted(self.folder.glob("audit-*.spool")):
            if path == self.path:
                continue
            try:
                fd = os.open(path, os.O_RDWR)
            except FileNotFoundError:
                continue  # another process adopted it first
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # a live process owns it
                records = [r for _end, r in _records(fd, 0, os.fstat(fd).st_size, path.name)]
                if records:
                    self.append(records, bounded=False)  # never refuse what was already safe
                path.unlink()
                adopted += len(records)
            finally:
                os.close(fd)
        if adopted:
            _fsync_dir(self.folder)
        return adopted

    def quarantine(self, record: CardRecord, reason: str) -> None:
        """Keep a record the database refused, for people (it is never retried)."""
        if record.uuid in self.quarantined:
            return
        line = json.dumps({"reason": reason, "record": json.loads(encode(record))}).encode() + b"\n"
        fd = os.open(self.folder / QUARANTINE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
        self.quarantined.add(record.uuid)

    def free_bytes(self) -> int:
        """Space left on the spool's filesystem for this process."""
        stats = os.statvfs(self.folder)
        return stats.f_bavail * stats.f_frsize

    def close(self) -> None:
        """Release the file: deleted when empty, else left for the next process to adopt."""
        if self.size == 0 or self.offset >= self.size:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
