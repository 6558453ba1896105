"""Undelivered events kept in a file across a restart (the memory backend's hand-over).

A broker stopped while the business server is down still holds events, ``tunnel.closed``
among them; dropping them would show the business server a tunnel that never closed.
With the memory backend there is no other pod to take them, so the process writes them
to a file as it exits and the next process on the same file delivers them before
anything newer (``EventDelivery.queue(app).emit_older``). The Redis backend hands them
to the other pods instead (``backend/redis/handover.py``).

The file holds message contents and user identities: it is created 0600 in a directory
only the broker's user can enter, written to a temporary name and renamed into place
(never half-written, never through a planted link), and read once, then removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from tunnel_broker.webhooks.events import EncodedEvent, from_record, to_record

logger = logging.getLogger("tunnel_broker.webhooks.handover")


class FileHandover:
    def __init__(self, path: Path) -> None:
        self.path = path

    def save(self, undelivered: dict[str, list[EncodedEvent]]) -> int:
        """Write ``undelivered`` (app id -> events, each app's in order); how many."""
        count = sum(len(events) for events in undelivered.values())
        if not count:
            return 0
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(temporary, flags, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                for app_id, events in undelivered.items():
                    for event in events:
                        out.write(json.dumps([app_id, to_record(event)], ensure_ascii=False))
                        out.write("\n")
                out.flush()
                os.fsync(out.fileno())
            # An earlier file not yet taken (the next process never started) comes first.
            if self.path.exists():
                with self.path.open("a", encoding="utf-8") as earlier:
                    earlier.write(temporary.read_text(encoding="utf-8"))
                temporary.unlink()
            else:
                temporary.replace(self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                temporary.unlink()
            raise
        return count

    def take(self) -> dict[str, list[EncodedEvent]]:
        """The events a previous process left (removing the file); lines that are not
        records are logged and skipped."""
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except FileNotFoundError:
            return {}
        with os.fdopen(fd, encoding="utf-8") as source:
            if os.fstat(source.fileno()).st_uid != os.getuid():
                raise PermissionError(f"{self.path} is not owned by this user; not read")
            lines = source.read().splitlines()
        taken: dict[str, list[EncodedEvent]] = {}
        skipped = 0
        for line in lines:
            try:
                app_id, record = json.loads(line)
                taken.setdefault(str(app_id), []).append(from_record(str(record)))
            except (ValueError, TypeError):
                skipped += 1
        if skipped:
            logger.error("%s: %d lines were not event records; skipped", self.path, skipped)
        self.path.unlink()
        return taken
