"""The shared drawing board: stroke validation and the SQLite store that keeps each user's
strokes, so a user who comes back (reload, new device) sees their drawing again.

Coordinates are fractions of the board (0..1), so pages of any size draw the same picture.
SQLite calls are synchronous: each is a single indexed statement on a local file, far
cheaper than the HTTP round trip around it, so a thread hop would cost more than it saves.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo_business_app.protocol import ProtocolError

MAX_POINTS = 1000
MAX_STROKES_PER_USER = 2000
COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS strokes (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    openid TEXT NOT NULL,
    nick TEXT NOT NULL,
    stroke TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS strokes_by_user ON strokes (openid, id);
"""


def check_stroke(value: Any) -> dict[str, Any]:
    """A client's stroke, normalised: ``{"color": "#rrggbb", "width": 1-40, "points":
    [[x, y], ...]}`` with 1 to ``MAX_POINTS`` points inside the unit square."""
    if not isinstance(value, Mapping):
        raise ProtocolError("stroke must be an object")
    color = value.get("color")
    if not isinstance(color, str) or not COLOR.match(color):
        raise ProtocolError("stroke.color must be #rrggbb")
    width = value.get("width")
    if not isinstance(width, int | float) or isinstance(width, bool) or not 1 <= width <= 40:
        raise ProtocolError("stroke.width must be a number from 1 to 40")
    points = value.get("points")
    if not isinstance(points, list) or not 1 <= len(points) <= MAX_POINTS:
        raise ProtocolError(f"stroke.points must hold 1 to {MAX_POINTS} points")
    clean: list[list[float]] = []
    for point in points:
        if (
            not isinstance(point, list)
            or len(point) != 2
            or not all(
                isinstance(c, int | float) and not isinstance(c, bool) and 0 <= c <= 1
                for c in point
            )
        ):
            raise ProtocolError("each point must be [x, y] with 0 <= x, y <= 1")
        clean.append([round(float(point[0]), 4), round(float(point[1]), 4)])
    return {"color": color.lower(), "width": float(width), "points": clean}


@dataclass(frozen=True, slots=True)
class SavedStroke:
    id: int
    openid: str
    nick: str
    stroke: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "openid": self.openid, "nick": self.nick, **self.stroke}


class StrokeStore:
    """Strokes in SQLite (``":memory:"`` for tests), one row per stroke."""

    def __init__(self, path: str | Path = ":memory:") -> None:
        self._db = sqlite3.connect(str(path), check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock, self._db:
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def add(self, openid: str, nick: str, stroke: Mapping[str, Any]) -> SavedStroke:
        """Save a validated stroke; the user's oldest strokes go beyond the per-user cap."""
        with self._lock, self._db:
            cursor = self._db.execute(
                "INSERT INTO strokes (openid, nick, stroke, created_at) VALUES (?, ?, ?, ?)",
                (openid, nick, json.dumps(stroke), time.time()),
            )
            self._db.execute(
                "DELETE FROM strokes WHERE openid = ? AND id NOT IN "
                "(SELECT id FROM strokes WHERE openid = ? ORDER BY id DESC LIMIT ?)",
                (openid, openid, MAX_STROKES_PER_USER),
            )
        return SavedStroke(int(cursor.lastrowid or 0), openid, nick, dict(stroke))

    def all(self, limit: int = 5000) -> list[SavedStroke]:
        """The latest ``limit`` strokes of everyone, oldest first (drawing order)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, openid, nick, stroke FROM "
                "(SELECT * FROM strokes ORDER BY id DESC LIMIT ?) ORDER BY id",
                (limit,),
            ).fetchall()
        return [SavedStroke(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def of_user(self, openid: str) -> list[SavedStroke]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, openid, nick, stroke FROM strokes WHERE openid = ? ORDER BY id",
                (openid,),
            ).fetchall()
        return [SavedStroke(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    def clear_user(self, openid: str) -> int:
        """Erase one user's strokes (only their own: the board is shared)."""
        with self._lock, self._db:
            return self._db.execute("DELETE FROM strokes WHERE openid = ?", (openid,)).rowcount
