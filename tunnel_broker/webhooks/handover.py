"""Undelivered events kept in a file across a restart (the memory backend's hand-over).

A broker stopped while the business server is down still holds events, ``tunnel.closed``
among them; dropping them would show the business server a tunnel that never closed.
With the memory backend there is no other pod to take them, so the process writes them
to a file as it exits and the next process on the same file delivers them before
anything newer (``EventDelivery.emit_adopted``). The Redis backend keeps them in
Redis for the other pods instead (``backend/redis/journal.py``).

The file holds message contents and user identities: it is created 0600 in a directory
only the broker's user can enter (an existing one is checked), written to a temporary
name and renamed into place, or appended to (after an earlier file no process took),
never through a link; read once, then removed. A line cut short is skipped on reading.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import stat
from pathlib import Path

from tunnel_broker.webhooks.events import EncodedEvent, from_record, to_record

logger = logging.getLogger("tunnel_broker.webhooks.handover")

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class FileHandover:
    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, undelivered: dict[str, list[EncodedEvent]]) -> int:
        """Write ``undelivered`` (app id -> events, each app's in order); how many."""
        count = sum(len(events) for events in undelivered.values())
        if not count:
            return 0
        # ASCII lines: no character inside a record can be taken for a line break.
        content = "".join(
            json.dumps([app_id, to_record(event)]) + "\n"
            for app_id, events in undelivered.items()
            for event in events
        ).encode("ascii")
        self._private_directory()
        try:
            # An earlier file not yet taken (the next process never started) comes first.
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | _NOFOLLOW)
        except FileNotFoundError:
            self._write_new(content)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            self._write_new(content)  # a link there: replaced, never written through
        else:
            with os.fdopen(fd, "wb") as earlier:
                self._check_owner(earlier.fileno())
                earlier.write(content)
                earlier.flush()
                os.fsync(earlier.fileno())
        return count

    def _private_directory(self) -> None:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise PermissionError(
                f"{directory} must be a directory of this user that nobody else can enter"
            )

    def _write_new(self, content: bytes) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(content)
                out.flush()
                os.fsync(out.fileno())
            temporary.replace(self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise

    def _check_owner(self, fd: int) -> None:
        if os.fstat(fd).st_uid != os.getuid():
            raise PermissionError(f"{self.path} is not owned by this user; not used")

    def take(self) -> dict[str, list[EncodedEvent]]:
        """The events a previous process left (removing the file); lines that are not
        records (a write cut short, say) are logged and skipped."""
        try:
            fd = os.open(self.path, os.O_RDONLY | _NOFOLLOW)
        except FileNotFoundError:
            return {}
        with os.fdopen(fd, "rb") as source:
            self._check_owner(source.fileno())
            lines = source.read().split(b"\n")
        taken: dict[str, list[EncodedEvent]] = {}
        skipped = 0
        for line in lines:
            if not line:
                continue
            try:
                app_id, record = json.loads(line.decode("utf-8"))
                taken.setdefault(str(app_id), []).append(from_record(str(record)))
            except (ValueError, TypeError):  # UnicodeDecodeError is a ValueError
                skipped += 1
        if skipped:
            logger.error("%s: %d lines were not event records; skipped", self.path, skipped)
        self.path.unlink()
        return taken
