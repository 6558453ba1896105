#!/usr/bin/env node
'use strict';
/**
 * SELF-CHECK ONLY: a minimal stand-in for the legacy tunnel service, the Wafer 1 auth server
 * and a login-code source, so the drivers can be exercised before the broker has its Wafer
 * mode. It is not a reference implementation; the broker is.
 *
 *   node selfcheck/fake-service.js [--key K] [--timeout-packet N]
 *
 * HTTP (one port, printed in the "ready" line):
 *   POST /tunnel-api/get/wsurl, POST /tunnel-api/ws/push   legacy envelope, signature checked
 *   GET  /ws/<tunnelId>                                     WebSocket (legacy packets)
 *   POST /auth                                              qcloud.cam.id_skey / qcloud.cam.auth
 *   GET  /code                                              {"code": "code-N"}
 * Every envelope and event it sees or sends is printed as a JSON line. stdin: {"cmd":"origin",
 * "origin":"http://127.0.0.1:P"} rewrites the origin of receive URLs (the qcloud SDK cannot put
 * a port in them), {"cmd":"drop","tunnelId"} cuts a socket without a close packet.
 */
const http = require('http');
const crypto = require('crypto');
const WebSocket = require('ws');
const { out, setting, stdinCommands } = require('../lib/common');

const KEY = setting('KEY', { default: 'selfcheck-key' });
let TIMEOUT_PACKET = setting('TIMEOUT_PACKET', { default: '' });
let receiveOrigin = null;

const sha1 = s => crypto.createHash('sha1').update(s, 'utf8').digest('hex');
const tunnels = new Map(); // id -> {receiveUrl, ws, closed, queue}
let seq = 0;
let codeSeq = 0;
const sessions = new Map(); // id -> {skey, user_info}

function readBody(req) {
    return new Promise(resolve => {
        const chunks = [];
        req.on('data', c => chunks.push(c));
        req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    });
}

function json(res, status, obj) {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(obj));
}

function target(receiveUrl) {
    if (!receiveOrigin) return receiveUrl;
    const u = new URL(receiveUrl);
    return receiveOrigin + u.pathname + u.search;
}

// Events of one tunnel are posted one after the other.
function postEvent(t, id, type, content) {
    const payload = { tunnelId: id, type };
    if (content !== undefined) payload.content = content;
    const data = JSON.stringify(payload);
    const body = JSON.stringify({ data, signature: sha1(data + KEY) });
    t.queue = t.queue.then(() => new Promise(resolve => {
        const u = target(t.receiveUrl);
        const req = http.request(u, { method: 'POST', headers: { 'content-type': 'application/json' } }, res => {
            const chunks = [];
            res.on('data', c => chunks.push(c));
            res.on('end', () => {
                out({ event: 'posted', url: u, type, tunnelId: id, status: res.statusCode, answer: Buffer.concat(chunks).toString('utf8') });
                resolve();
            });
        });
        req.on('error', e => { out({ event: 'posted', url: u, type, tunnelId: id, error: e.message }); resolve(); });
        req.end(body);
    }));
}

function envelope(raw, path) {
    let body;
    try { body = JSON.parse(raw); } catch (e) { return { error: { code: 1, message: 'body not JSON' } }; }
    out({ event: 'api', path, body });
    if (typeof body.data !== 'string' || typeof body.signature !== 'string') return { error: { code: 2, message: 'no data/signature' } };
    if (sha1(body.data + KEY) !== body.signature) return { error: { code: 3, message: 'bad signature' } };
    let data;
    try { data = JSON.parse(body.data); } catch (e) { return { error: { code: 4, message: 'data not JSON' } }; }
    return { body, data };
}

const server = http.createServer(async (req, res) => {
    const raw = await readBody(req);
    const path = req.url.split('?')[0];
    if (req.method === 'POST' && path === '/tunnel-api/get/wsurl') {
        const e = envelope(raw, path);
        if (e.error) return json(res, 200, e.error);
        const id = `t${++seq}-${crypto.randomBytes(4).toString('hex')}`;
        tunnels.set(id, { receiveUrl: e.data.receiveUrl, ws: null, closed: false, queue: Promise.resolve() });
        const data = JSON.stringify({ tunnelId: id, connectUrl: `ws://127.0.0.1:${server.address().port}/ws/${id}` });
        return json(res, 200, { code: 0, data, signature: sha1(data + KEY) });
    }
    if (req.method === 'POST' && path === '/tunnel-api/ws/push') {
        const e = envelope(raw, path);
        if (e.error) return json(res, 200, e.error);
        const invalid = [];
        for (const p of e.data) {
            for (const id of p.tunnelIds) {
                const t = tunnels.get(id);
                if (!t || !t.ws || t.closed) { invalid.push(id); continue; }
                t.ws.send(p.content !== undefined ? `${p.type}:${p.content}` : p.type);
                if (p.type === 'close') setTimeout(() => t.ws.close(), 200);
            }
        }
        return json(res, 200, { code: 0, data: { invalidTunnelIds: invalid } });
    }
    if (req.method === 'POST' && path === '/auth') {
        const body = JSON.parse(raw);
        out({ event: 'auth', body });
        const i = body.interface || {};
        if (i.interfaceName === 'qcloud.cam.id_skey') {
            const p = i.para;
            if (!p.code || !p.encrypt_data || !p.iv) return json(res, 200, { returnCode: 1001, returnMessage: 'missing para' });
            const id = `id-${p.code}`;
            const s = { skey: `skey-${p.code}`, user_info: { openId: `open-${p.code}`, nickName: `nick-${p.code}` } };
            sessions.set(id, s);
            return json(res, 200, { returnCode: 0, returnMessage: 'OK', returnData: { id, skey: s.skey, user_info: s.user_info } });
        }
        if (i.interfaceName === 'qcloud.cam.auth') {
            const s = sessions.get(i.para.id);
            if (!s || s.skey !== i.para.skey) return json(res, 200, { returnCode: 60011, returnMessage: 'skey expired' });
            return json(res, 200, { returnCode: 0, returnMessage: 'OK', returnData: { user_info: s.user_info } });
        }
        return json(res, 200, { returnCode: 1, returnMessage: 'unknown interface' });
    }
    if (req.method === 'GET' && path === '/code') return json(res, 200, { code: `code-${++codeSeq}` });
    json(res, 404, { code: 404, message: 'not found' });
});

const wss = new WebSocket.Server({ noServer: true });
server.on('upgrade', (req, socket, head) => {
    const m = /^\/ws\/([^/?]+)/.exec(req.url);
    const t = m && tunnels.get(m[1]);
    if (!t || t.ws) { socket.destroy(); return; }
    wss.handleUpgrade(req, socket, head, ws => {
        const id = m[1];
        t.ws = ws;
        out({ event: 'ws_open', tunnelId: id });
        postEvent(t, id, 'connect');
        if (TIMEOUT_PACKET) ws.send(`timeout:${TIMEOUT_PACKET}`);
        ws.on('message', (d, isBinary) => {
            const s = d.toString('utf8');
            out({ event: 'frame', tunnelId: id, data: s });
            if (s === 'ping') ws.send('pong');
            else if (s.startsWith('message:')) postEvent(t, id, 'message', s.slice(8));
            else if (s === 'close') ws.close();
        });
        ws.on('close', () => {
            if (t.closed) return;
            t.closed = true;
            out({ event: 'ws_close', tunnelId: id });
            postEvent(t, id, 'close');
        });
    });
});

stdinCommands({
    timeoutPacket: c => { TIMEOUT_PACKET = c.value || ''; return TIMEOUT_PACKET; },
    origin: c => { receiveOrigin = c.origin; return receiveOrigin; },
    drop: c => { const t = tunnels.get(c.tunnelId); if (t && t.ws) t.ws.terminate(); return !!t; },
    exit: () => { setImmediate(() => process.exit(0)); return null; },
});

server.listen(0, '127.0.0.1', () => out({ event: 'ready', port: server.address().port }));
