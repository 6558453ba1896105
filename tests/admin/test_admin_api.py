"""The admin API on one broker (memory backend): operator keys apart from app keys, apps
created, changed, rotated and deleted while serving, the audit log, and no secret ever
shown twice."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.support.broker import BrokerHandle, app_config, open_tunnel, run_broker
from tests.support.receiver import WebhookReceiver
from tests.support.waiting import check_for
from tunnel_broker.config import Secret

OPERATOR_KEY = "op-key-" + "a" * 40
OTHER_OPERATOR_KEY = "op-key-" + "b" * 40
ADMIN_KEYS = f"alice:{OPERATOR_KEY},bob:{OTHER_OPERATOR_KEY}"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def broker(receiver: WebhookReceiver) -> AsyncIterator[BrokerHandle]:
    configs = [app_config("filed", receiver.url, receiver.secret)]
    async with run_broker(configs, admin_keys=Secret(ADMIN_KEYS)) as handle:
        yield handle


def client(broker: BrokerHandle, key: str | None) -> httpx.AsyncClient:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.AsyncClient(base_url=broker.url, headers=headers, timeout=10)


async def create(admin: httpx.AsyncClient, app_id: str, url: str, **body: object) -> dict:
    response = await admin.post("/admin/v1/apps", json={"id": app_id, "webhook_url": url, **body})
    assert response.status_code == 201, response.text
    created: dict = response.json()
    return created


async def test_operator_keys_and_app_keys_open_different_doors(broker: BrokerHandle) -> None:
    app_key = broker.client("filed").app.api_keys[0]
    async with client(broker, None) as anonymous:
        missing = await anonymous.get("/admin/v1/apps")
        assert missing.status_code == 401
        assert missing.json()["code"] == "missing_admin_key"
        assert missing.headers["www-authenticate"].startswith("Bearer")
    async with client(broker, OPERATOR_KEY[:-1] + "x") as wrong:
        refused = await wrong.get("/admin/v1/apps")
        assert (refused.status_code, refused.json()["code"]) == (401, "invalid_admin_key")
        assert OPERATOR_KEY not in refused.text
    async with client(broker, app_key) as app:
        assert (await app.get("/admin/v1/apps")).status_code == 401
        assert (await app.get("/admin/v1/whoami")).status_code == 401
    async with client(broker, OPERATOR_KEY) as admin:
        assert (await admin.get("/admin/v1/whoami")).json() == {"operator": "alice"}
        # An operator key is not an app key.
        refused = await admin.post("/v1/tunnels", json={"user_id": "u"})
        assert refused.json()["code"] == "invalid_api_key"
        assert (await admin.get("/v1/app")).status_code == 401
    async with client(broker, OTHER_OPERATOR_KEY) as admin:
        assert (await admin.get("/admin/v1/whoami")).json() == {"operator": "bob"}


async def test_without_operator_keys_the_admin_api_is_off(receiver: WebhookReceiver) -> None:
    configs = [app_config("filed", receiver.url, receiver.secret)]
    async with run_broker(configs) as broker, client(broker, OPERATOR_KEY) as admin:
        response = await admin.get("/admin/v1/apps")
        assert (response.status_code, response.json()["code"]) == (404, "admin_api_disabled")


async def test_an_app_created_changed_and_deleted_while_serving(
    broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    async with client(broker, OPERATOR_KEY) as admin:
        created = await create(admin, "shop", receiver.url, limits={"max_message_bytes": 1024})
        key, secret = created["api_key"], created["webhook_secret"]
        assert created["app"]["limits"]["max_message_bytes"] == 1024
        listed = (await admin.get("/admin/v1/apps")).json()["apps"]
        assert [a["id"] for a in listed] == ["filed", "shop"]
        assert [a["from_file"] for a in listed] == [True, False]
        # Keys and secrets are shown once, at creation: fingerprints afterwards.
        shown = (await admin.get("/admin/v1/apps/shop")).text
        assert key not in shown and secret not in shown
        assert json.loads(shown)["api_keys"][0]["prefix"] == key[:8]

        receiver.secret = secret
        async with client(broker, key) as shop:
            issued = await shop.post("/v1/tunnels", json={"user_id": "ann"})
            assert issued.status_code == 201, issued.text
            async with open_tunnel(issued.json()["connect_url"]) as ws:
                await ws.send("x" * 1000)
                await check_for(
                    5, lambda: receiver.events_of(issued.json()["tunnel_id"], "tunnel.message")
                )
            changed = await admin.patch(
                "/admin/v1/apps/shop", json={"limits": {"max_message_bytes": 100}}
            )
            assert changed.status_code == 200, changed.text
            assert changed.json()["limits"]["max_message_bytes"] == 100
            too_big = await shop.post(
                "/v1/messages", json={"messages": [{"to": {"all": True}, "data": "y" * 101}]}
            )
            assert too_big.status_code == 422
            deleted = await admin.delete("/admin/v1/apps/shop")
            assert deleted.status_code == 204
            gone = await shop.post("/v1/tunnels", json={"user_id": "ann"})
            assert gone.json()["code"] == "invalid_api_key"
        assert (await admin.get("/admin/v1/apps/shop")).json()["code"] == "app_not_found"
        assert (await admin.delete("/admin/v1/apps/shop")).status_code == 404


async def test_bad_changes_are_refused_with_the_field_named(
    broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    async with client(broker, OPERATOR_KEY) as admin:
        await create(admin, "shop", receiver.url)
        again = await admin.post("/admin/v1/apps", json={"id": "shop", "webhook_url": receiver.url})
        assert (again.status_code, again.json()["code"]) == (409, "app_exists")
        bad = await admin.patch("/admin/v1/apps/shop", json={"limits": {"max_message_bytes": 0}})
        assert bad.status_code == 422
        assert [e["field"] for e in bad.json()["errors"]] == ["limits.max_message_bytes"]
        unknown = await admin.patch("/admin/v1/apps/shop", json={"limits": {"nope": 1}})
        assert unknown.status_code == 422
        extra = await admin.patch("/admin/v1/apps/shop", json={"api_keys": ["x" * 20]})
        assert extra.status_code == 422  # keys change only by rotation
        scheme = await admin.patch("/admin/v1/apps/shop", json={"webhook_url": "ftp://x"})
        assert scheme.status_code == 422
        bad_id = await admin.post("/admin/v1/apps", json={"id": "a b", "webhook_url": receiver.url})
        assert bad_id.status_code == 422
        # The apps file's apps are the file's.
        filed = await admin.patch("/admin/v1/apps/filed", json={"trace_payloads": True})
        assert (filed.status_code, filed.json()["code"]) == (409, "app_in_apps_file")
        assert (await admin.delete("/admin/v1/apps/filed")).status_code == 409


async def test_api_key_rotation_keeps_the_old_key_for_the_overlap(
    broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    async with client(broker, OPERATOR_KEY) as admin:
        old = (await create(admin, "shop", receiver.url))["api_key"]
        rotated = await admin.post("/admin/v1/apps/shop/api-keys", json={"overlap_seconds": 1})
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["api_key"]
        keys = rotated.json()["app"]["api_keys"]
        assert [k["prefix"] for k in keys] == [new[:8], old[:8]]
        assert keys[0]["expires_at"] is None and keys[1]["expires_at"] is not None
        for key in (old, new):
            async with client(broker, key) as shop:
                assert (await shop.get("/v1/app")).status_code == 200
        await asyncio.sleep(1.2)
        async with client(broker, old) as shop:
            assert (await shop.get("/v1/app")).json()["code"] == "invalid_api_key"
        async with client(broker, new) as shop:
            assert (await shop.get("/v1/app")).status_code == 200
        # Without an overlap the previous key stops at once.
        newest = (
            await admin.post("/admin/v1/apps/shop/api-keys", json={"overlap_seconds": 0})
        ).json()
        assert [k["prefix"] for k in newest["app"]["api_keys"]] == [newest["api_key"][:8]]
        async with client(broker, new) as shop:
            assert (await shop.get("/v1/app")).status_code == 401
        bad = await admin.post("/admin/v1/apps/shop/api-keys", json={"overlap_seconds": -1})
        assert bad.status_code == 422


async def test_an_app_rotates_its_own_key(broker: BrokerHandle, receiver: WebhookReceiver) -> None:
    async with client(broker, OPERATOR_KEY) as admin:
        old = (await create(admin, "shop", receiver.url))["api_key"]
        async with client(broker, old) as shop:
            rotated = await shop.post("/v1/app/api-keys", json={"overlap_seconds": 60})
            assert rotated.status_code == 200, rotated.text
            new = rotated.json()["api_key"]
            assert (await shop.get("/v1/app")).status_code == 200  # still, for a minute
        async with client(broker, new) as shop:
            own = (await shop.get("/v1/app")).json()
            assert own["id"] == "shop" and new not in json.dumps(own)
        entries = (await admin.get("/admin/v1/audit")).json()["entries"]
        assert entries[0]["operator"] == "app:shop"
        assert entries[0]["action"] == "app.rotate_api_key"


async def test_webhook_secret_rotation_signs_with_both_during_the_overlap(
    broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    async with client(broker, OPERATOR_KEY) as admin:
        created = await create(admin, "shop", receiver.url)
        receiver.secret = created["webhook_secret"]  # the business server's old secret
        rotated = await admin.post(
            "/admin/v1/apps/shop/webhook-secrets", json={"overlap_seconds": 1}
        )
        new_secret_value = rotated.json()["webhook_secret"]
        async with client(broker, created["api_key"]) as shop:
            for expected_secret in (created["webhook_secret"], new_secret_value):
                receiver.secret = expected_secret
                issued = (await shop.post("/v1/tunnels", json={"user_id": "u"})).json()
                async with open_tunnel(issued["connect_url"]) as ws:
                    await ws.send("hello")
                    tunnel_id = issued["tunnel_id"]
                    await check_for(
                        5,
                        lambda tunnel_id=tunnel_id: receiver.events_of(tunnel_id, "tunnel.message"),
                    )
            assert receiver.rejected_signatures == 0
            await asyncio.sleep(1.2)
            # Past the overlap only the new secret signs.
            receiver.secret = created["webhook_secret"]
            issued = (await shop.post("/v1/tunnels", json={"user_id": "u"})).json()
            async with open_tunnel(issued["connect_url"]):
                await check_for(5, lambda: receiver.rejected_signatures > 0)


async def test_the_audit_log_names_who_what_and_when_and_no_secret(
    broker: BrokerHandle, receiver: WebhookReceiver
) -> None:
    async with client(broker, OPERATOR_KEY) as alice, client(broker, OTHER_OPERATOR_KEY) as bob:
        created = await create(alice, "shop", receiver.url)
        await bob.patch(
            "/admin/v1/apps/shop",
            json={"webhook_url": receiver.url + "?token=t0p", "limits": {"max_tunnels": 5}},
        )
        rotated = (await alice.post("/admin/v1/apps/shop/webhook-secrets", json={})).json()
        await bob.delete("/admin/v1/apps/shop")
        response = await alice.get("/admin/v1/audit", params={"limit": 10})
        entries = response.json()["entries"]
        assert [(e["operator"], e["action"]) for e in entries] == [
            ("bob", "app.delete"),
            ("alice", "app.rotate_webhook_secret"),
            ("bob", "app.update"),
            ("alice", "app.create"),
        ]
        assert entries[2]["changes"] == ["limits.max_tunnels", "webhook_url"]
        assert entries[1]["changes"] == ["retiring", "webhook_secrets"]
        assert all(e["app_id"] == "shop" and e["at"].endswith("Z") for e in entries)
        for secret in (created["api_key"], created["webhook_secret"], rotated["webhook_secret"]):
            assert secret not in response.text
        assert "t0p" not in response.text
        assert (await alice.get("/admin/v1/audit", params={"limit": 0})).status_code == 422


async def test_pods_shows_this_node(broker: BrokerHandle) -> None:
    async with client(broker, OPERATOR_KEY) as admin:
        body = (await admin.get("/admin/v1/pods")).json()
        assert body["redis"] is None
        (pod,) = body["pods"]
        assert pod["node_id"] == broker.node.settings.node_id
        assert pod["ready"] is True and pod["tunnels"] == 0
