#!/usr/bin/env node
'use strict';
/**
 * SELF-CHECK of the Node side against selfcheck/fake-service.js (not the broker):
 *   node selfcheck/run.js        (after ./setup.sh)
 * Runs, for each server SDK, two clients chatting, broadcast, server close, socket drop and
 * reconnect, heartbeat, login through the server, and prints "N passed, N failed".
 */
const { spawn } = require('child_process');
const path = require('path');
const assert = require('assert');

const JS = path.resolve(__dirname, '..');
const procs = [];

class Proc {
    constructor(name, args, env) {
        this.name = name;
        this.lines = [];
        this.waiters = [];
        this.seq = 0;
        this.p = spawn(process.execPath, args, { cwd: JS, env: Object.assign({}, process.env, env || {}), stdio: ['pipe', 'pipe', 'pipe'] });
        procs.push(this);
        let buf = '';
        this.p.stdout.setEncoding('utf8');
        this.p.stdout.on('data', d => {
            buf += d;
            let i;
            while ((i = buf.indexOf('\n')) >= 0) {
                const line = buf.slice(0, i);
                buf = buf.slice(i + 1);
                let o;
                try { o = JSON.parse(line); } catch (e) { o = { event: 'garbage', line }; }
                if (process.env.SELFCHECK_VERBOSE) process.stderr.write(`${this.name} ${line}\n`);
                this.lines.push(o);
                this.waiters = this.waiters.filter(w => !w(o));
            }
        });
        this.p.stderr.setEncoding('utf8');
        this.p.stderr.on('data', d => { if (process.env.SELFCHECK_VERBOSE) process.stderr.write(`${this.name}! ${d}`); });
    }
    wait(pred, ms, what) {
        const seen = this.lines.find(pred);
        if (seen) return Promise.resolve(seen);
        return new Promise((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`${this.name}: timeout waiting for ${what || pred}`)), ms || 5000);
            this.waiters.push(o => { if (pred(o)) { clearTimeout(timer); resolve(o); return true; } return false; });
        });
    }
    // waits only for lines after now
    next(pred, ms, what) {
        const start = this.lines.length;
        return this.wait((o) => this.lines.indexOf(o) >= start && pred(o), ms, what);
    }
    cmd(c, ms) {
        const id = ++this.seq;
        const p = this.next(o => o.reply !== undefined && o.id === id, ms || 8000, `reply to ${JSON.stringify(c)}`);
        this.p.stdin.write(JSON.stringify(Object.assign({ id }, c)) + '\n');
        return p;
    }
    count(pred) { return this.lines.filter(pred).length; }
}

const results = [];
async function check(name, fn) {
    try {
        await fn();
        results.push([name, true]);
        process.stdout.write(`ok   ${name}\n`);
    } catch (e) {
        results.push([name, false]);
        process.stdout.write(`FAIL ${name}: ${e.stack}\n`);
    }
}

const sleep = ms => new Promise(r => setTimeout(r, ms));
const tunnelEv = (type) => o => o.event === 'tunnel' && o.type === type;

async function chatScenario(label, server, sdk, serviceUrl, loginFirst, fake) {
    const a = new Proc(`${label}-A`, ['client.js', sdk, '--heartbeat-ms', '300', '--reconnect-increase-ms', '100']);
    const b = new Proc(`${label}-B`, ['client.js', sdk, '--heartbeat-ms', '300', '--reconnect-increase-ms', '100']);
    await a.wait(o => o.event === 'ready');
    await b.wait(o => o.event === 'ready');
    if (loginFirst) {
        await check(`${label}: login through the business server`, async () => {
            const r = await loginFirst(a, 'A');
            assert.ok(r.ok, JSON.stringify(r));
            const r2 = await loginFirst(b, 'B');
            assert.ok(r2.ok, JSON.stringify(r2));
        });
    }
    let tidA, tidB;
    await check(`${label}: two clients connect`, async () => {
        assert.ok((await a.cmd({ cmd: 'open', url: serviceUrl })).ok);
        await a.wait(tunnelEv('connect'));
        tidA = (await server.wait(o => o.event === 'connect')).tunnelId;
        assert.ok((await b.cmd({ cmd: 'open', url: serviceUrl })).ok);
        await b.wait(tunnelEv('connect'));
        tidB = (await server.wait(o => o.event === 'connect' && o.tunnelId !== tidA)).tunnelId;
        await a.wait(o => o.event === 'tunnel' && o.type === 'people' && o.content.total === 2);
    });
    await check(`${label}: speak is broadcast to both`, async () => {
        const pa = a.next(o => o.event === 'tunnel' && o.type === 'speak' && o.content.word === 'hi');
        const pb = b.next(o => o.event === 'tunnel' && o.type === 'speak' && o.content.word === 'hi');
        assert.ok((await a.cmd({ cmd: 'emit', type: 'speak', content: { word: 'hi' } })).ok);
        await pa; await pb;
        const m = await server.wait(o => o.event === 'message' && o.type === 'speak');
        assert.deepStrictEqual(m.content, { word: 'hi' });
    });
    await check(`${label}: application type "close" arrives as "@close"`, async () => {
        const p = b.next(tunnelEv('@close'));
        assert.ok((await server.cmd({ cmd: 'broadcast', tunnelIds: [tidB], type: 'close', content: 1 })).ok);
        await p;
        assert.strictEqual((await b.cmd({ cmd: 'status' })).result.status, 'ACTIVE');
    });
    await check(`${label}: heartbeat (300 ms) keeps the tunnel over 1.5 s`, async () => {
        const before = a.count(o => o.event === 'frame' && o.dir === 'in' && o.data === 'pong');
        await sleep(1500);
        const after = a.count(o => o.event === 'frame' && o.dir === 'in' && o.data === 'pong');
        assert.ok(after - before >= 3, `pongs ${after - before}`);
        assert.strictEqual(a.count(tunnelEv('reconnecting')), 0);
    });
    await check(`${label}: server closes B; B does not reconnect`, async () => {
        const p = b.next(tunnelEv('close'));
        assert.ok((await server.cmd({ cmd: 'closeTunnel', tunnelId: tidB })).ok);
        await p;
        await server.wait(o => o.event === 'close' && o.tunnelId === tidB);
        await sleep(500);
        assert.strictEqual(b.count(tunnelEv('reconnecting')), 0);
        assert.strictEqual((await b.cmd({ cmd: 'status' })).result.status, 'CLOSED');
        // the client answered the service's close with its own close packet
        assert.ok(b.count(o => o.event === 'frame' && o.dir === 'out' && o.data === 'close') >= 1);
    });
    await check(`${label}: A's socket drops; one close event; A reconnects and chats`, async () => {
        const pr = a.next(tunnelEv('reconnect'), 8000);
        assert.ok((await a.cmd({ cmd: 'socket', action: 'drop' })).ok);
        await a.wait(tunnelEv('reconnecting'));
        await pr;
        await server.wait(o => o.event === 'close' && o.tunnelId === tidA);
        const tidA2 = (await server.wait(o => o.event === 'connect' && o.tunnelId !== tidA && o.tunnelId !== tidB)).tunnelId;
        const p = a.next(o => o.event === 'tunnel' && o.type === 'speak' && o.content.word === 'again');
        await a.cmd({ cmd: 'emit', type: 'speak', content: { word: 'again' } });
        await p;
        await sleep(300);
        assert.strictEqual(server.count(o => o.event === 'close' && o.tunnelId === tidA), 1);
        assert.notStrictEqual(tidA2, tidA);
    });
    await check(`${label}: pong timeout (blackholed socket) makes the client reconnect`, async () => {
        const pr = a.next(tunnelEv('reconnect'), 8000);
        assert.ok((await a.cmd({ cmd: 'socket', action: 'blackhole' })).ok);
        await pr;
    });
    await check(`${label}: tunnel.close() sends close and ends the tunnel`, async () => {
        const p = a.next(tunnelEv('close'));
        await a.cmd({ cmd: 'close' });
        await p;
        assert.strictEqual((await a.cmd({ cmd: 'status' })).result.status, 'CLOSED');
    });
    await a.cmd({ cmd: 'exit' });
    await b.cmd({ cmd: 'exit' });
}

async function main() {
    const fake = new Proc('fake', ['selfcheck/fake-service.js', '--key', 'k1']);
    const fport = (await fake.wait(o => o.event === 'ready')).port;
    const F = `http://127.0.0.1:${fport}`;

    // ---------------- qcloud-weapp-server-sdk + wafer-client-sdk
    const q = new Proc('qcloud', ['server-qcloud.js'], {
        TUNNEL_SERVER_URL: `${F}/tunnel-api`, SERVER_HOST: '127.0.0.1', TUNNEL_SIGNATURE_KEY: 'k1', AUTH_SERVER_URL: `${F}/auth`,
    });
    const qready = await q.wait(o => o.event === 'ready');
    await fake.cmd({ cmd: 'origin', origin: `http://127.0.0.1:${qready.port}` });
    const Q = `http://127.0.0.1:${qready.port}`;
    const userInfo = who => ({ encryptedData: `enc-${who}`, iv: `iv-${who}`, rawData: '{}', signature: 'sig', userInfo: { nickName: `nick-${who}` } });
    const login1 = (c, who) => c.cmd({ cmd: 'login', loginUrl: `${Q}/login`, code: `c${who}`, userInfo: userInfo(who) });
    await chatScenario('qcloud/wafer1', q, 'wafer1', `${Q}/tunnel`, login1, fake);

    await check('qcloud: /get/wsurl envelope is well-formed', async () => {
        const api = fake.lines.find(o => o.event === 'api' && o.path === '/tunnel-api/get/wsurl');
        const crypto = require('crypto');
        assert.strictEqual(api.body.tcId, crypto.createHash('md5').update('127.0.0.1').digest('hex'));
        assert.strictEqual(api.body.tcKey, 'k1');
        assert.deepStrictEqual(JSON.parse(api.body.data), { receiveUrl: 'http://127.0.0.1/tunnel', protocolType: 'wss' });
        const push = fake.lines.find(o => o.event === 'api' && o.path === '/tunnel-api/ws/push');
        assert.ok(!('tcKey' in push.body), 'qcloud sends no tcKey on push');
    });
    await check('qcloud: login sent the three headers, session check via qcloud.cam.auth', async () => {
        const login = fake.lines.find(o => o.event === 'auth' && o.body.interface.interfaceName === 'qcloud.cam.id_skey');
        assert.deepStrictEqual(login.body.interface.para, { code: 'cA', encrypt_data: 'enc-A', iv: 'iv-A' });
        assert.strictEqual(login.body.version, 1);
        assert.strictEqual(login.body.componentName, 'MA');
        assert.ok(fake.lines.find(o => o.event === 'auth' && o.body.interface.interfaceName === 'qcloud.cam.auth'));
    });
    await check('wafer1: code from codeUrl; checkSession skips the server', async () => {
        const c = new Proc('w1-code', ['client.js', 'wafer1']);
        await c.wait(o => o.event === 'ready');
        await c.cmd({ cmd: 'wx', codeUrl: `${F}/code`, userInfo: userInfo('Z') });
        const r = await c.cmd({ cmd: 'login', loginUrl: `${Q}/login` });
        assert.ok(r.ok, JSON.stringify(r));
        assert.ok(/^code-\d+$/.test(c.lines.find(o => o.event === 'wx_login').code));
        const n = c.count(o => o.event === 'http');
        assert.ok((await c.cmd({ cmd: 'login' })).ok);
        assert.strictEqual(c.count(o => o.event === 'http'), n, 'second login must not hit the server');
        const u = await c.cmd({ cmd: 'request', url: `${Q}/user` });
        assert.strictEqual(u.result.data.code, 0);
        await c.cmd({ cmd: 'exit' });
    });
    await check('wafer1: a `timeout:0.2` packet sent on open sets a 200 ms heartbeat (no time scaling)', async () => {
        await fake.cmd({ cmd: 'timeoutPacket', value: '0.2' });
        const c = new Proc('w1-timeout', ['client.js', 'wafer1']);
        await c.wait(o => o.event === 'ready');
        await c.cmd({ cmd: 'wx', codes: ['cT'], userInfo: userInfo('T') });
        assert.ok((await c.cmd({ cmd: 'login', loginUrl: `${Q}/login` })).ok);
        await c.cmd({ cmd: 'open', url: `${Q}/tunnel` });
        await c.wait(tunnelEv('connect'));
        await sleep(1500);
        const pings = c.count(o => o.event === 'frame' && o.dir === 'out' && o.data === 'ping');
        assert.ok(pings >= 5, `pings ${pings}`);
        assert.strictEqual(c.count(tunnelEv('reconnecting')), 0);
        await fake.cmd({ cmd: 'timeoutPacket', value: '' });
        await c.cmd({ cmd: 'exit' });
    });
    await q.cmd({ cmd: 'exit' });

    // ---------------- wafer-node-sdk + wafer2-client-sdk (no MySQL: TUNNEL_LOGIN=none)
    const w = new Proc('wafer2', ['server-wafer2.js'], {
        TUNNEL_SERVER_URL: `${F}/tunnel-api`, SERVER_HOST: '127.0.0.1', TUNNEL_SIGNATURE_KEY: 'k1', TUNNEL_LOGIN: 'none',
        MYSQL_PORT: '1',
    });
    const wready = await w.wait(o => o.event === 'ready');
    const fakeMark = fake.lines.length;
    await fake.cmd({ cmd: 'origin', origin: `http://127.0.0.1:${wready.port}` });
    const W = `http://127.0.0.1:${wready.port}`;
    await chatScenario('wafer-node-sdk/wafer2', w, 'wafer2', `${W}/weapp/tunnel`, null, fake);
    await check('wafer-node-sdk: envelopes carry tcKey on every call', async () => {
        const apis = fake.lines.slice(fakeMark).filter(o => o.event === 'api' && o.body.tcId === require('crypto').createHash('md5').update('127.0.0.1').digest('hex'));
        const ws = apis.filter(o => o.path.endsWith('/get/wsurl'));
        assert.ok(ws.length >= 2);
        assert.deepStrictEqual(JSON.parse(ws[ws.length - 1].body.data), { receiveUrl: 'http://127.0.0.1/weapp/tunnel', protocolType: 'wss' });
        const pushes = apis.filter(o => o.path.endsWith('/ws/push'));
        assert.ok(pushes.length && pushes.every(o => o.body.tcKey === 'k1'));
    });
    await check('wafer2 login without MySQL fails cleanly ({code:-1} from the quickstart middleware)', async () => {
        const c = new Proc('w2-login', ['client.js', 'wafer2']);
        await c.wait(o => o.event === 'ready');
        const r = await c.cmd({ cmd: 'login', loginUrl: `${W}/weapp/login`, code: 'x', userInfo: userInfo('Y') });
        assert.strictEqual(r.ok, false);
        assert.ok(/响应错误/.test(r.error.message), r.error.message);
        await c.cmd({ cmd: 'exit' });
    });
    await w.cmd({ cmd: 'exit' });
    await fake.cmd({ cmd: 'exit' });

    const failed = results.filter(r => !r[1]).length;
    process.stdout.write(`${results.length - failed} passed, ${failed} failed\n`);
    process.exit(failed ? 1 : 0);
}

process.on('exit', () => procs.forEach(p => { try { p.p.kill(); } catch (e) { /* gone */ } }));
main().catch(e => { process.stdout.write(`FAIL ${e.stack}\n`); process.exit(1); });
