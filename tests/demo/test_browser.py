"""Two simulated users in headless Chromium: log in through the WeChat simulator, chat
across rooms, message privately, resume after a dropped connection, play a full game (and one
against the bot), draw, reload, and see their strokes again. Screenshots go to
``test-artifacts/demo/``.

Needs Debian's ``chromium`` (Playwright never downloads a browser here) and the
``playwright`` package; outside CI the test is skipped when either is missing.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from demo_business_app.config import DemoConfig
from demo_business_app.web import create_app
from tests.support.broker import app_config, new_secret, run_broker
from tests.support.browser import CHROMIUM, CHROMIUM_ARGS, require_browser
from tests.support.servers import free_port, run_uvicorn
from tunnel_broker.wechat.simulator import create_simulator_app

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "demo"
APPID = "wxdemo0000000001"
WECHAT_SECRET = "demo-wechat-secret"
TIMEOUT_MS = 10_000

require_browser()
from playwright.async_api import Page, async_playwright, expect  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.timeout(90)]


@dataclass
class Demo:
    url: str


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    """Simulator, broker and demo server on loopback, wired as ``scripts/demo.sh`` does."""
    secret = new_secret()
    demo_port = free_port()
    async with run_uvicorn(create_simulator_app({APPID: WECHAT_SECRET})) as sim_port:
        config = app_config("demo", f"http://127.0.0.1:{demo_port}/webhook", secret)
        config.update(
            wechat_appid=APPID,
            wechat_secret=WECHAT_SECRET,
            wechat_api_base_url=f"http://127.0.0.1:{sim_port}",
        )
        async with run_broker([config]) as broker:
            app = create_app(
                DemoConfig(
                    broker_url=broker.url,
                    api_key=config["api_keys"][0],
                    webhook_secrets=[secret],
                    simulator_url=f"http://127.0.0.1:{sim_port}",
                    wechat_appid=APPID,
                    db_path=str(tmp_path / "board.sqlite3"),
                    bot_wait=3.0,
                    round_seconds=5.0,
                )
            )
            try:
                async with run_uvicorn(app, demo_port):
                    yield Demo(f"http://127.0.0.1:{demo_port}/")
            finally:
                await app.state.demo.aclose()


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def log_in(page: Page, url: str, name: str) -> None:
    await page.goto(url)
    await page.fill("#login-name", name)
    await page.click("#login-btn")
    await expect(page.locator("#status")).to_have_text("connected")
    await expect(page.locator("#me-nick")).to_have_text(name)


async def draw(page: Page, start: tuple[float, float], end: tuple[float, float]) -> None:
    box = await page.locator("#board").bounding_box()
    assert box is not None
    await page.mouse.move(box["x"] + start[0] * box["width"], box["y"] + start[1] * box["height"])
    await page.mouse.down()
    await page.mouse.move(
        box["x"] + end[0] * box["width"], box["y"] + end[1] * box["height"], steps=8
    )
    await page.mouse.up()


async def play_round(page: Page, move: str) -> None:
    button = page.locator(f'.move[data-move="{move}"]')
    await expect(button).to_be_enabled()
    await button.click()


async def test_two_users_chat_play_and_draw(demo: Demo) -> None:
    if os.path.isdir(ARTIFACTS):
        shutil.rmtree(ARTIFACTS)
    expect.set_options(timeout=TIMEOUT_MS)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            ann_ctx = await browser.new_context(viewport={"width": 420, "height": 900})
            bob_ctx = await browser.new_context(viewport={"width": 420, "height": 900})
            ann = await ann_ctx.new_page()
            bob = await bob_ctx.new_page()
            errors: list[str] = []
            for page in (ann, bob):
                page.on("pageerror", lambda exc: errors.append(str(exc)))

            await log_in(ann, demo.url, "Ann")
            await log_in(bob, demo.url, "Bob")
            await expect(ann.locator("#chat-log")).to_contain_text("Bob joined #lobby")
            await expect(ann.locator("#online li")).to_have_text(["Ann", "Bob"])

            await chat_across_rooms(ann, bob)
            await shot(ann, "01-chat-ann")
            await shot(bob, "02-chat-bob")

            await drop_and_reconnect(ann, bob)

            await play_a_full_game(ann, bob)
            await play_the_bot(bob)

            await draw_and_reload(ann, bob)
            assert errors == []
        finally:
            await browser.close()


async def chat_across_rooms(ann: Page, bob: Page) -> None:
    await ann.fill("#chat-input", "hello lobby")
    await ann.click("#chat-send")
    await expect(bob.locator("#chat-log")).to_contain_text("Ann: hello lobby")

    await bob.click('.room[data-room="tech"]')
    await expect(bob.locator("#room-name")).to_have_text("tech")
    await ann.click('.room[data-room="tech"]')
    await expect(bob.locator("#chat-log")).to_contain_text("Ann joined #tech")
    await expect(ann.locator("#online li")).to_have_text(["Ann", "Bob"])
    await ann.fill("#chat-input", "tech talk")
    await ann.press("#chat-input", "Enter")
    await expect(bob.locator("#chat-log")).to_contain_text("Ann: tech talk")

    # Rooms are separate: the lobby never saw the tech message.
    await bob.click('.room[data-room="lobby"]')
    await expect(bob.locator("#chat-log")).to_contain_text("Ann: hello lobby")
    await expect(bob.locator("#chat-log")).not_to_contain_text("tech talk")

    # Private message, Ann to Bob.
    await ann.select_option("#dm-to", label="Bob")
    await ann.fill("#dm-input", "psst, Bob")
    await ann.click("#dm-send")
    await expect(bob.locator("#dm-log")).to_contain_text("(from Ann) psst, Bob")
    await expect(ann.locator("#dm-log")).to_contain_text("(to Bob) psst, Bob")

    # Bob leaves #tech: Ann, who is looking at it, sees him go.
    await bob.click('.room[data-room="tech"]')
    await bob.click("#leave-btn")
    await expect(ann.locator("#chat-log")).to_contain_text("Bob left #tech")
    await expect(ann.locator("#online li")).to_have_text(["Ann"])
    await expect(bob.locator("#room-name")).to_have_text("lobby")


async def drop_and_reconnect(ann: Page, bob: Page) -> None:
    """A dropped socket shows its close code; while Ann's network stays down (3 s) Bob
    messages her privately; her client (clients/miniprogram) resumes the same tunnel and
    she gets the message: nothing missed. Her rooms are still hers."""
    await ann.click("#drop-btn")
    await expect(ann.locator("#close-info")).to_contain_text("Closed 3000")
    await expect(ann.locator("#status")).to_have_text("reconnecting")
    await bob.select_option("#dm-to", label="Ann")
    await bob.fill("#dm-input", "while you were away")
    await bob.click("#dm-send")
    await expect(bob.locator("#dm-log")).to_contain_text("(to Ann) while you were away")
    await expect(ann.locator("#status")).to_have_text("reconnecting")  # still away
    await expect(ann.locator("#status")).to_have_text("connected")
    await expect(ann.locator("#close-info")).to_contain_text("resumed: nothing missed")
    await expect(ann.locator("#dm-log")).to_contain_text("(from Bob) while you were away")
    await shot(ann, "03-resumed")
    await bob.click('.room[data-room="tech"]')
    await expect(bob.locator("#online li")).to_have_text(["Ann", "Bob"])
    await ann.fill("#chat-input", "back again")
    await ann.click("#chat-send")
    await expect(bob.locator("#chat-log")).to_contain_text("Ann: back again")


async def play_a_full_game(ann: Page, bob: Page) -> None:
    for page in (ann, bob):
        await page.click('.tab[data-tab="game"]')
    await ann.click("#rps-find")
    await expect(ann.locator("#rps-status")).to_contain_text("Waiting for an opponent")
    await bob.click("#rps-find")
    await expect(ann.locator("#rps-status")).to_contain_text("Playing Bob")
    await expect(bob.locator("#rps-status")).to_contain_text("Playing Ann")
    for round_no in (1, 2):
        await play_round(ann, "rock")
        await play_round(bob, "scissors")
        await expect(ann.locator("#rps-log")).to_contain_text(f"Round {round_no}: rock vs")
    await expect(ann.locator("#rps-over")).to_have_text("You won the game!")
    await expect(bob.locator("#rps-over")).to_have_text("You lost the game.")
    await expect(ann.locator("#rps-score")).to_have_text("2 : 0")
    await shot(ann, "04-game-ann-won")
    await shot(bob, "05-game-bob-lost")


async def play_the_bot(bob: Page) -> None:
    await bob.click("#rps-find")
    await expect(bob.locator("#rps-status")).to_contain_text("(bot)")
    while not await bob.locator("#rps-over").text_content():
        if await bob.locator('.move[data-move="paper"]').is_enabled():
            await bob.click('.move[data-move="paper"]')
        await bob.wait_for_timeout(100)
    outcome = await bob.locator("#rps-over").text_content()
    assert outcome in ("You won the game!", "You lost the game.", "The game is a draw.")
    await shot(bob, "06-game-vs-bot")


async def strokes(page: Page) -> tuple[str | None, str | None]:
    info = page.locator("#board-info")
    return await info.get_attribute("data-total"), await info.get_attribute("data-mine")


async def draw_and_reload(ann: Page, bob: Page) -> None:
    for page in (ann, bob):
        await page.click('.tab[data-tab="board"]')
    await draw(ann, (0.1, 0.1), (0.6, 0.4))
    await draw(ann, (0.2, 0.8), (0.8, 0.7))
    await expect(bob.locator("#board-info")).to_have_attribute("data-total", "2")
    await draw(bob, (0.5, 0.1), (0.5, 0.9))
    await expect(ann.locator("#board-info")).to_have_text("3 strokes · 2 mine")
    await shot(ann, "07-board-before-reload")

    # Ann comes back: a reload keeps her session (sessionStorage, like wx storage), opens a
    # new tunnel, and the board, read from SQLite, shows her strokes again.
    await ann.reload()
    await expect(ann.locator("#status")).to_have_text("connected")
    await ann.click('.tab[data-tab="board"]')
    await expect(ann.locator("#board-info")).to_have_text("3 strokes · 2 mine")
    await shot(ann, "08-board-after-reload")
    await ann.click("#board-clear")
    await expect(bob.locator("#board-info")).to_have_text("1 strokes · 1 mine")
