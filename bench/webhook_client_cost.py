"""CPU cost of one webhook-sized POST with httpx and with aiohttp.

Why the relay uses aiohttp: both clients post the same small JSON body to the same
keep-alive loopback server, in one process, and the process CPU time per request is
printed. The server is a minimal asyncio HTTP/1.1 responder so its share is small and
identical for both clients.

    .venv/bin/python bench/webhook_client_cost.py [--requests 3000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import aiohttp
import httpx

BODY = b'{"events":[{"id":"evt_1","type":"tunnel.message","data":"hello"}]}'
HEADERS = {"webhook-id": "msg_1", "content-type": "application/json"}


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    reply = b'{"actions":[]}'
    response = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            await reader.readexactly(length)
            writer.write(response % (len(reply), reply))
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


async def main(requests: int) -> None:
    server = await asyncio.start_server(_serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/webhook"
    async with httpx.AsyncClient() as client:
        for _ in range(100):
            await client.post(url, content=BODY, headers=HEADERS)
        started = time.process_time()
        for _ in range(requests):
            (await client.post(url, content=BODY, headers=HEADERS)).read()
        httpx_us = (time.process_time() - started) / requests * 1e6
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()
        started = time.process_time()
        for _ in range(requests):
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()
        aiohttp_us = (time.process_time() - started) / requests * 1e6
    from tunnel_broker.webhooks.http_client import WebhookClient

    client = WebhookClient("bench")
    for _ in range(100):
        await client.post(url, BODY, HEADERS, seconds=5, max_body=1 << 20)
    started = time.process_time()
    for _ in range(requests):
        await client.post(url, BODY, HEADERS, seconds=5, max_body=1 << 20)
    own_us = (time.process_time() - started) / requests * 1e6
    await client.close()
    await asyncio.sleep(0.1)  # let the server's handlers see their clients leave
    server.close()
    print(f"broker's WebhookClient {own_us:8.1f} us CPU per request (client + loopback server)")
    print(f"httpx    {httpx_us:8.1f} us CPU per request (client + loopback server)")
    print(f"aiohttp  {aiohttp_us:8.1f} us CPU per request (client + loopback server)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    asyncio.run(main(parser.parse_args().requests))
