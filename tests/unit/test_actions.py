"""Which tunnel an action without a target is about."""

from __future__ import annotations

import pytest

from tunnel_broker.webhooks import events
from tunnel_broker.webhooks.actions import ActionError, default_tunnel


def test_default_action_tunnel() -> None:
    f = b'"app_id":"a"'
    one = [events.message(f, "t1", "x"), events.message(f, "t1", "y")]
    assert default_tunnel(one, None) == "t1"
    mixed = [events.message(f, "t1", "x"), events.message(f, "t2", "y")]
    assert default_tunnel(mixed, mixed[1].id) == "t2"
    with pytest.raises(ActionError):
        default_tunnel(mixed, None)
    with pytest.raises(ActionError):
        default_tunnel(mixed, "evt_unknown")
