"""Key and secret rotation with an overlap: the new key works at once, the old ones until
a deadline, so a business server can switch without a moment where neither works.

Pure functions of an app and the clock; the admin API and the app's own self-service
rotation both use them.
"""

from __future__ import annotations

from collections.abc import Callable

from tunnel_broker.apps import App, fingerprint, new_api_key, new_webhook_secret

# (app, overlap seconds, now) -> (the rotated app, the new key or secret)
Rotate = Callable[[App, float, float], tuple[App, str]]

MAX_OVERLAP_SECONDS = 30 * 86400
DEFAULT_OVERLAP_SECONDS = 86400


def _current(keys: list[str], retiring: dict[str, float], now: float) -> list[str]:
    return [k for k in keys if retiring.get(fingerprint(k), now + 1) > now]


def without_retired(app: App, now: float) -> App:
    """The app without the keys and secrets whose overlap has ended (they no longer work
    anyway; dropping them keeps the app small and its listing honest)."""
    if not app.retiring:
        return app
    keys = _current(app.api_keys, app.retiring, now)
    secrets = _current(app.webhook_secrets, app.retiring, now)
    live = {fingerprint(k) for k in (*keys, *secrets)}
    retiring = {fp: at for fp, at in app.retiring.items() if fp in live}
    return app.model_copy(
        update={"api_keys": keys, "webhook_secrets": secrets, "retiring": retiring}
    )


def _rotated(app: App, field: str, fresh: str, overlap_seconds: float, now: float) -> App:
    app = without_retired(app, now)
    old: list[str] = getattr(app, field)
    retiring = dict(app.retiring)
    if overlap_seconds <= 0:
        kept: list[str] = []
        for key in old:
            retiring.pop(fingerprint(key), None)
    else:
        kept = old
        deadline = now + overlap_seconds
        for key in old:
            # A key already retiring keeps its earlier deadline.
            retiring[fingerprint(key)] = min(retiring.get(fingerprint(key), deadline), deadline)
    # The new one leads: the first webhook secret signs, and listings show it first.
    return App.model_validate({**app.model_dump(), field: [fresh, *kept], "retiring": retiring})


def rotate_api_key(app: App, overlap_seconds: float, now: float) -> tuple[App, str]:
    fresh = new_api_key()
    return _rotated(app, "api_keys", fresh, overlap_seconds, now), fresh


def rotate_webhook_secret(app: App, overlap_seconds: float, now: float) -> tuple[App, str]:
    fresh = new_webhook_secret()
    return _rotated(app, "webhook_secrets", fresh, overlap_seconds, now), fresh
