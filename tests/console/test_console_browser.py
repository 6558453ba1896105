"""The web console in headless Chromium against a real broker and a real webhook receiver:
the operator signs in and sees the apps, pods, one app's usage, edits a limit, creates and
deletes an app; the app signs in, watches its live trace and usage chart change while a
script sends traffic (WebSocket clients and ``POST /v1/messages``), pages its tunnels,
reads its webhook deliveries and rotates its key (the old key keeps working during the
overlap). Screenshots go to ``test-artifacts/console/``.

Needs Debian's ``chromium`` (Playwright never downloads a browser here) and the
``playwright`` package; outside CI the test is skipped when either is missing.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from tests.support.broker import (
    AppClient,
    BrokerHandle,
    app_config,
    new_secret,
    open_tunnel,
    run_broker,
)
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.support.receiver import WebhookReceiver, echo_messages
from tunnel_broker.config import Secret

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"
TIMEOUT_MS = 10_000
USAGE_TIMEOUT_MS = 20_000  # usage is flushed every 0.2 s; the page refreshes every 5 s
OPERATOR = "ops-alice"
ADMIN_KEY = "tb-operator-" + os.urandom(16).hex()
APP = "shop"

require_browser()
from playwright.async_api import Page, async_playwright, expect  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@dataclass
class Traffic:
    """The script's side: tunnels opened by WebSocket clients, messages sent by them and
    pushes through the HTTP API, counted so the console's totals can be checked."""

    client: AppClient
    sockets: dict[str, ClientConnection] = field(default_factory=dict)
    tunnel_ids: dict[str, str] = field(default_factory=dict)
    messages_in: int = 0
    _stack: list[Any] = field(default_factory=list)

    async def connect(self, user: str) -> str:
        issued = await self.client.issue(user, identity={"nick": user.title()})
        context = open_tunnel(issued["connect_url"])
        self.sockets[user] = await context.__aenter__()
        self._stack.append(context)
        self.tunnel_ids[user] = issued["tunnel_id"]
        return str(issued["tunnel_id"])

    async def say(self, user: str, text: str) -> None:
        """A client message; the receiver echoes it (a webhook reply, traced as a push)."""
        ws = self.sockets[user]
        await ws.send(text)
        self.messages_in += 1
        assert await asyncio.wait_for(ws.recv(), 5) == "echo:" + text

    async def push(self, user: str, text: str) -> None:
        response = await self.client.send({"users": [user]}, text)
        assert response.is_success, response.text
        assert await asyncio.wait_for(self.sockets[user].recv(), 5) == text

    async def close(self) -> None:
        for context in reversed(self._stack):
            await context.__aexit__(None, None, None)


@dataclass
class World:
    """A broker with one app from its apps file (``legacy``); the console's operator
    creates ``shop``, whose webhooks go to ``receiver``."""

    broker: BrokerHandle
    receiver: WebhookReceiver
    shop_key: str = ""
    shop_secret: str = ""


@pytest.fixture
async def world() -> AsyncIterator[World]:
    receiver = WebhookReceiver(secret=new_secret(), on_events=echo_messages)
    legacy = app_config("legacy", receiver.url, new_secret())
    async with (
        receiver.serving(),
        run_broker(
            [legacy], admin_keys=Secret(f"{OPERATOR}:{ADMIN_KEY}"), usage_flush_seconds=0.2
        ) as broker,
    ):
        yield World(broker, receiver)


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def sign_in(page: Page, key: str, who: str) -> None:
    await page.fill("#key-input", key)
    await page.click("#sign-in-btn")
    await expect(page.locator("#whoami")).to_have_text(who)
    assert await page.evaluate("() => localStorage.length") == 0


async def sign_out(page: Page) -> None:
    await page.click("#sign-out")
    await expect(page.locator("#sign-in-form")).to_be_visible()
    assert await page.evaluate("() => sessionStorage.length") == 0


async def test_operator_and_app_use_the_console(world: World) -> None:
    if os.path.isdir(ARTIFACTS):
        shutil.rmtree(ARTIFACTS)
    expect.set_options(timeout=TIMEOUT_MS)
    broker = world.broker
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            errors: list[str] = []
            elsewhere: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on(
                "console",
                lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None,
            )
            page.on(
                "request",
                lambda r: None if r.url.startswith(broker.url + "/") else elsewhere.append(r.url),
            )
            keys_in_urls: list[str] = []
            page.on(
                "request",
                lambda r: (
                    keys_in_urls.append(r.url)
                    if ADMIN_KEY in r.url or (world.shop_key and world.shop_key in r.url)
                    else None
                ),
            )
            await page.goto(broker.url + "/console")

            await operator_tour(page, world)
            await sign_out(page)

            await page.fill("#key-input", "not-a-key-of-this-broker-0123456789")
            await page.click("#sign-in-btn")
            await expect(page.locator("#sign-in-message")).to_contain_text("Key not accepted")

            app = broker.node.apps.get(APP)
            assert app is not None
            async with httpx.AsyncClient(
                base_url=broker.url, headers={"authorization": f"Bearer {world.shop_key}"}
            ) as http:
                traffic = Traffic(AppClient(app, http))
                try:
                    await app_tour(page, world, traffic)
                finally:
                    await traffic.close()
            await a_refused_key_returns_to_sign_in(page)
            await operator_sees_the_usage(page, traffic)
            assert errors == []
            assert elsewhere == []
            assert keys_in_urls == []
        finally:
            await browser.close()


async def operator_tour(page: Page, world: World) -> None:
    broker = world.broker
    await sign_in(page, ADMIN_KEY, f"Operator {OPERATOR}")
    apps = page.locator("#apps-table")
    await expect(apps.locator('tr[data-app="legacy"]')).to_contain_text("apps file")
    await expect(page.locator("#health-summary")).to_contain_text("1 of 1 pods ready")
    await expect(page.locator("#health-summary")).to_contain_text("memory backend")

    await page.click('nav a[data-nav="pods"]')
    await expect(page.locator("#pods-table")).to_contain_text(broker.node.settings.node_id)
    await expect(page.locator("#pods-table")).to_contain_text("ready")
    await expect(page.locator("#redis-health")).to_contain_text("memory backend")
    await shot(page, "02-operator-pods")

    # An app of the apps file is shown, not changed.
    await page.click('nav a[data-nav="apps"]')
    await page.click('#apps-table a:text-is("legacy")')
    await expect(page.locator("#from-file-note")).to_be_visible()
    await expect(page.locator("#delete-app-btn")).to_be_disabled()

    # Create the app the rest of the test uses: its key and secret are shown once.
    await page.click('nav a[data-nav="new"]')
    form = page.locator("#create-app-form")
    await form.locator('input[name="id"]').fill(APP)
    await form.locator('input[name="webhook_url"]').fill(world.receiver.url)
    await form.locator('input[name="trace_payloads"]').check()
    await form.locator('input[name="max_tunnels"]').fill("50")
    await form.locator('button[type="submit"]').click()
    created = page.locator("#secret-dialog")
    world.shop_key = await created.locator('input[data-secret="api_key"]').input_value()
    world.shop_secret = await created.locator('input[data-secret="webhook_secret"]').input_value()
    assert len(world.shop_key) >= 16 and world.shop_secret.startswith("whsec_")
    world.receiver.secret = world.shop_secret
    await created.locator("button", has_text="close").click()

    # Its page: details, usage chart, a limit changed through the form.
    await expect(page.locator("main h1")).to_have_text(f"App {APP}")
    await expect(page.locator("#api-keys-table tbody tr")).to_have_count(1)
    await expect(page.locator('figure[data-chart="messages"] svg')).to_be_visible()
    await page.fill('#limits-form input[name="messages_per_second"]', "500")
    await page.click('#edit-app-form button[type="submit"]')
    await expect(page.locator("#flash")).to_contain_text(f"Saved {APP}: messages_per_second")
    async with httpx.AsyncClient(
        base_url=broker.url, headers={"authorization": f"Bearer {ADMIN_KEY}"}
    ) as admin:
        limits = (await admin.get(f"/admin/v1/apps/{APP}")).json()["limits"]
        assert limits["messages_per_second"] == 500
        assert limits["max_tunnels"] == 50
    await shot(page, "03-operator-app")

    # The webhook secret rotated with an overlap: the receiver, still on the old secret,
    # keeps verifying every request until it moves (checked after the app's traffic).
    await page.click("#rotate-secret-btn")
    dialog = page.locator("#rotate-dialog")
    await expect(dialog).to_contain_text("webhook secret keeps working for 24 hours")
    await dialog.locator('button[data-action="confirm"]').click()
    rotated = page.locator("#secret-dialog")
    new_secret_text = await rotated.locator('input[data-secret="webhook_secret"]').input_value()
    assert new_secret_text.startswith("whsec_") and new_secret_text != world.shop_secret
    await rotated.locator("button", has_text="close").click()
    await expect(page.locator("#webhook-secrets-table tbody tr")).to_have_count(2)

    # Another app, deleted after typing its id.
    await page.click('nav a[data-nav="new"]')
    await page.fill('#create-app-form input[name="id"]', "extra")
    await page.fill('#create-app-form input[name="webhook_url"]', "http://127.0.0.1:9/hook")
    await page.click('#create-app-form button[type="submit"]')
    await page.locator("#secret-dialog button", has_text="close").click()
    await expect(page.locator("main h1")).to_have_text("App extra")
    await page.click("#delete-app-btn")
    dialog = page.locator("#delete-dialog")
    confirm = dialog.locator('button[data-action="confirm"]')
    await expect(confirm).to_be_disabled()
    await dialog.locator("input").fill("extra")
    await confirm.click()
    await expect(apps.locator(f'tr[data-app="{APP}"]')).to_contain_text(world.receiver.url)
    await expect(apps).not_to_contain_text("extra")
    await shot(page, "01-operator-apps")

    await page.click('nav a[data-nav="audit"]')
    audit = page.locator("#audit-table")
    await expect(audit).to_contain_text("extra")
    await expect(audit).to_contain_text(OPERATOR)
    await expect(audit).to_contain_text("limits.messages_per_second")


async def app_tour(page: Page, world: World, traffic: Traffic) -> None:
    await sign_in(page, world.shop_key, f"App {APP}")
    chart = page.locator('figure[data-chart="messages"] svg')
    await expect(chart).to_have_attribute("data-total_messages_in", "0")
    await shot(page, "04-app-usage-before")

    # The live trace, while the script sends traffic.
    await page.click('nav a[data-nav="trace"]')
    await expect(page.locator("#trace-status")).to_contain_text("Live")
    trace = page.locator("#trace-list")
    ann = await traffic.connect("ann")
    bob = await traffic.connect("bob")
    await traffic.say("ann", "hello from ann")
    await traffic.say("bob", "hello from bob")
    await traffic.push("ann", "a push to ann")
    await expect(trace.locator('li[data-type="tunnel.connected"]')).to_have_count(2)
    await expect(trace).to_contain_text("hello from ann")
    await expect(trace).to_contain_text("push via api")
    await expect(trace).to_contain_text("push via reply")
    await expect(trace.locator('li[data-kind="delivery"]').first).to_contain_text("ok")
    # Newest on top: the API push came last.
    await expect(trace.locator("li").first).to_contain_text("a push to ann")
    await shot(page, "05-live-trace")

    # Filtered by tunnel (on the server: the query names it).
    await page.fill("#trace-filter input[name=tunnel_id]", ann)
    await page.click("#trace-apply")
    await expect(page.locator("#trace-status")).to_contain_text(f"only tunnel {ann}")
    await traffic.say("bob", "bob is filtered out")
    await traffic.say("ann", "ann gets through")
    await expect(trace).to_contain_text("ann gets through")
    await expect(trace).not_to_contain_text("bob is filtered out")
    await expect(trace.locator(f'li[data-tunnel="{bob}"]')).to_have_count(0)

    # Paused: records are held back, then shown on resume.
    await page.click("#trace-pause")
    await expect(page.locator("#trace-pause")).to_have_attribute("aria-pressed", "true")
    await traffic.say("ann", "said while paused")
    await expect(page.locator("#trace-count")).to_contain_text("held while paused")
    await expect(trace).not_to_contain_text("said while paused")
    await shot(page, "06-live-trace-paused")
    await page.click("#trace-pause")
    await expect(trace).to_contain_text("said while paused")

    # The usage chart now counts exactly the messages the clients sent.
    await page.click('nav a[data-nav="usage"]')
    await expect(chart).to_have_attribute(
        "data-total_messages_in", str(traffic.messages_in), timeout=USAGE_TIMEOUT_MS
    )
    await expect(page.locator('#usage-totals dd[data-total="tunnels_opened"]')).to_have_text("2")
    await expect(chart.locator("polyline.line.s0")).to_be_attached()
    await shot(page, "07-app-usage-chart")
    await page.click("#usage-range input[value='7d']")
    await expect(chart).to_have_attribute("data-points", "168")
    await expect(chart).to_have_attribute("data-total_messages_in", str(traffic.messages_in))

    await page.click('nav a[data-nav="tunnels"]')
    tunnels = page.locator("#tunnels-table")
    await expect(tunnels.locator(f'tr[data-tunnel="{ann}"]')).to_contain_text("ann")
    await expect(tunnels.locator(f'tr[data-tunnel="{bob}"]')).to_contain_text("Bob")
    await shot(page, "08-tunnels")

    await page.click('nav a[data-nav="webhooks"]')
    await expect(page.locator("#deliveries-summary")).to_contain_text("none failed")
    await expect(page.locator("#deliveries-table tbody tr").first).to_contain_text("200")
    await shot(page, "09-webhook-deliveries")

    await rotate_the_key(page, world, traffic)


async def rotate_the_key(page: Page, world: World, traffic: Traffic) -> None:
    old_key = world.shop_key
    await page.click('nav a[data-nav="keys"]')
    await expect(page.locator("#api-keys-table tbody tr")).to_have_count(1)
    await page.click("#rotate-key-btn")
    dialog = page.locator("#rotate-dialog")
    await expect(dialog).to_contain_text("keeps working for 24 hours after the rotation")
    await shot(page, "10-rotation-dialog")
    await dialog.locator('button[data-action="confirm"]').click()
    shown = page.locator("#secret-dialog")
    new_key = await shown.locator('input[data-secret="api_key"]').input_value()
    assert new_key and new_key != old_key
    await shot(page, "11-new-key-shown-once")
    await shown.locator("button", has_text="close").click()
    assert await page.evaluate("() => sessionStorage.getItem('tb-console.key')") == new_key
    await expect(page.locator("#api-keys-table")).to_contain_text("retiring: works until")
    await expect(page.locator("#api-keys-table tbody tr")).to_have_count(2)

    # Both keys work during the overlap: the console's new one, the script's old one.
    async with httpx.AsyncClient(base_url=world.broker.url) as http:
        for key in (old_key, new_key):
            answer = await http.get("/v1/app", headers={"authorization": f"Bearer {key}"})
            assert answer.status_code == 200, answer.text
            assert answer.json()["id"] == APP
    await traffic.push("bob", "pushed with the old key")
    # Every webhook verified with the secret the receiver had before the rotation.
    assert world.receiver.rejected_signatures == 0
    assert world.receiver.deliveries
    await page.click('nav a[data-nav="usage"]')
    await expect(page.locator('figure[data-chart="messages"] svg')).to_be_visible()
    await expect(page.locator("#whoami")).to_have_text(f"App {APP}")


async def a_refused_key_returns_to_sign_in(page: Page) -> None:
    await page.evaluate("() => sessionStorage.setItem('tb-console.key', 'x'.repeat(40))")
    await page.click('nav a[data-nav="tunnels"]')
    await expect(page.locator("#sign-in-message")).to_contain_text(
        "the broker no longer accepts this key (invalid_api_key)"
    )
    assert await page.evaluate("() => sessionStorage.length") == 0
    await shot(page, "12-signed-out-after-401")


async def operator_sees_the_usage(page: Page, traffic: Traffic) -> None:
    """Back as the operator: today's usage of the app, as the script made it."""
    await sign_in(page, ADMIN_KEY, f"Operator {OPERATOR}")
    row = page.locator(f'#apps-table tr[data-app="{APP}"]')
    await expect(row.locator('[data-col="messages_in"]')).to_have_text(str(traffic.messages_in))
    await expect(row.locator('[data-col="peak_tunnels"]')).to_have_text("2")
    await shot(page, "13-operator-apps-with-usage")
