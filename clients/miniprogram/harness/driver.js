'use strict';
/**
 * The library in Node against a real broker, driven by tests/clients/test_miniprogram_client.py
 * through JSON lines: commands on stdin, replies and events on stdout (stderr: anything else).
 * One process holds any number of clients, each under a name. The WebSocket is the `ws`
 * package (a devDependency, installed by setup.sh).
 *
 * Commands ({"id": n, "cmd": ..., ...}; the reply is {"reply": cmd, "id", "ok", "result"|"error"}):
 *   start    {name, url?, options?, getConnectUrl?: bool}  create a client and connect it; with
 *            getConnectUrl, the client asks for URLs with a `need_url` event, answered by `url`
 *   url      {name, url}                  the answer to the client's last `need_url`
 *   send     {name, text | base64}        result: what send() returned
 *   sendMany {name, prefix, from, count}  send prefix+n for n in [from, from+count); result: how
 *                                         many send() accepted
 *   drop     {name}                       destroy the current socket's TCP connection (no close
 *                                         frame either way): the network vanished
 *   close    {name, code?, reason?}
 *   state    {name}                       result: {state, pendingCount, tunnelId}
 *   exit
 * Events: {"event": "ready"} first; then {"event": E, "name", "detail"} for every client event
 * (open, resumed, message, reconnecting, close, error); binary payloads as {"base64": ...};
 * {"event": "socket", "name", "url"} for every socket a client opens; {"event": "need_url", "name"}.
 */

const readline = require('node:readline');
const WebSocket = require('ws');
const { TunnelClient } = require('../lib/index.js');

const clients = new Map(); // name -> {client, socket (the latest ws), urlWaiters}

function out(line) {
    process.stdout.write(JSON.stringify(line) + '\n');
}

/** A payload as JSON: text as it is, bytes as {base64}. */
function plain(payload) {
    if (typeof payload === 'string') return payload;
    return { base64: Buffer.from(payload).toString('base64') };
}

function describe(name, detail) {
    if (name === 'message') return plain(detail);
    if (name === 'error') return { message: detail && detail.message };
    const copy = Object.assign({}, detail);
    for (const key of ['unconfirmed', 'unsent']) {
        if (copy[key]) copy[key] = copy[key].map(plain);
    }
    return copy;
}

function start(c) {
    if (clients.has(c.name)) throw new Error(`client ${c.name} exists`);
    const entry = { client: null, socket: null, urlWaiters: [] };
    // A WebSocket constructor that remembers the latest socket, for `drop`.
    function TrackedWebSocket(url, protocols) {
        const ws = new WebSocket(url, protocols);
        entry.socket = ws;
        out({ event: 'socket', name: c.name, url });
        return ws;
    }
    const options = Object.assign({ url: c.url, WebSocket: TrackedWebSocket, wx: null }, c.options || {});
    if (c.getConnectUrl) {
        options.getConnectUrl = () =>
            new Promise((resolve) => {
                entry.urlWaiters.push(resolve);
                out({ event: 'need_url', name: c.name });
            });
    }
    const client = new TunnelClient(options);
    entry.client = client;
    for (const name of ['open', 'resumed', 'message', 'reconnecting', 'close', 'error']) {
        client.on(name, (detail) => out({ event: name, name: c.name, detail: describe(name, detail) }));
    }
    clients.set(c.name, entry);
    client.connect();
    return null;
}

function get(name) {
    const entry = clients.get(name);
    if (!entry) throw new Error(`no client ${name}`);
    return entry;
}

const commands = {
    start,
    url(c) {
        const waiter = get(c.name).urlWaiters.shift();
        if (!waiter) throw new Error('the client asked for no URL');
        waiter(c.url);
        return null;
    },
    send(c) {
        const payload = c.base64 !== undefined ? new Uint8Array(Buffer.from(c.base64, 'base64')) : c.text;
        return get(c.name).client.send(payload);
    },
    sendMany(c) {
        const { client } = get(c.name);
        let accepted = 0;
        for (let n = c.from; n < c.from + c.count; n++) if (client.send(c.prefix + n)) accepted++;
        return accepted;
    },
    drop(c) {
        const ws = get(c.name).socket;
        if (!ws || !ws._socket) throw new Error('no open socket to drop');
        ws._socket.destroy();
        return null;
    },
    close(c) {
        get(c.name).client.close(c.code, c.reason);
        return null;
    },
    state(c) {
        const { client } = get(c.name);
        return { state: client.state, pendingCount: client.pendingCount, tunnelId: client.tunnelId };
    },
    exit() {
        setImmediate(() => process.exit(0));
        return null;
    },
};

const input = readline.createInterface({ input: process.stdin });
input.on('line', (line) => {
    if (!line.trim()) return;
    let c;
    try {
        c = JSON.parse(line);
        const handler = commands[c.cmd];
        if (!handler) throw new Error(`unknown command ${c.cmd}`);
        out({ reply: c.cmd, id: c.id, ok: true, result: handler(c) });
    } catch (err) {
        out({ reply: c && c.cmd, id: c && c.id, ok: false, error: { message: String(err && err.message) } });
    }
});
// The test went away: so does this process.
input.on('close', () => process.exit(0));
process.on('uncaughtException', (err) => {
    out({ event: 'uncaught', message: String(err && err.stack) });
});

out({ event: 'ready', pid: process.pid });
