#!/usr/bin/env node
'use strict';
/**
 * One simulated mini-program: loads ONE published client SDK, unmodified, on top of the wx
 * shim, and is driven by newline-delimited JSON on stdin. Everything it says is one JSON object
 * per line on stdout (console output of the SDKs goes to stderr).
 *
 *   node client.js wafer1|wafer2 [--heartbeat-ms N] [--reconnect-increase-ms N]
 *                  [--max-reconnect N] [--no-frames]
 *
 * wafer1 = wafer-client-sdk 0.8.4, wafer2 = wafer2-client-sdk 2.1.0.
 * --heartbeat-ms: the SDKs hard-code a 15 s ping period (only the service's `timeout:N`
 *   packet changes it); with this flag the driver turns every setTimeout(fn, 15000) of the
 *   process into setTimeout(fn, N). The SDK code is untouched; only time is scaled.
 * --reconnect-increase-ms / --max-reconnect: set Tunnel.RECONNECT_TIME_INCREASE and
 *   Tunnel.MAX_RECONNECT_TRY_TIMES (read by the SDK when a Tunnel is constructed; 0 is not
 *   possible for the latter: the SDK treats it as "default 5"). Also settable per `open`.
 *
 * Commands (an optional "id" is echoed in the reply):
 *   {"cmd":"wx", ...shim options}         codes, code, codeUrl, userInfo, checkSession,
 *                                         loginFail, getUserInfoFail (see wx-shim.js)
 *   {"cmd":"login", "loginUrl"?, "method"?, "code"?, "userInfo"?}
 *   {"cmd":"loginWithCode", "loginUrl"?, "code"?}            (wafer2 only)
 *   {"cmd":"request", "url", "method"?, "data"?, "header"?, "login"?}
 *   {"cmd":"session"} / {"cmd":"clearSession"} / {"cmd":"setSession","session":{...}}
 *   {"cmd":"open", "url", "reconnectIncreaseMs"?, "maxReconnect"?}
 *   {"cmd":"emit", "type", "content"?}
 *   {"cmd":"close"}
 *   {"cmd":"status"}
 *   {"cmd":"socket", "action":"drop"|"blackhole"|"unblackhole"}   network faults
 *   {"cmd":"exit"}
 * Replies: {"reply":cmd,"id":..,"ok":true,"result":...} or {"reply":cmd,"id":..,"ok":false,
 *   "error":{"message","type"?,"code"?,"detail"?}}. login/request/loginWithCode reply when the
 *   SDK calls back; the others at once.
 * Events:
 *   {"event":"ready","sdk","version","pid"}
 *   {"event":"tunnel","type":T,"content":C,"status":S}  every dispatched tunnel event: connect,
 *       close, reconnecting, reconnect, error (content = {code,message,detail}), application
 *       messages (type as dispatched, i.e. "@close" for an application "close")
 *   {"event":"frame","dir":"in"|"out","data":D,"socket":n,"dropped":bool}  every text frame
 *   {"event":"socket","kind":"open"|"close"|"error","socket":n,"url",...}
 *   {"event":"http","method","url","statusCode","data"|"errMsg"}   every wx.request
 *   {"event":"wx_login","code"}
 *   {"event":"callback_error","where","message","stack"}  an SDK callback threw (WeChat would
 *       log it); e.g. wafer2 reading data.data.connectUrl of an answer without data
 *   {"event":"uncaught","message","stack"}
 */

const path = require('path');

const args = process.argv.slice(2);
const which = args[0];
const SDKS = { wafer1: 'wafer-client-sdk', wafer2: 'wafer2-client-sdk' };
if (!SDKS[which]) {
    process.stderr.write('usage: node client.js wafer1|wafer2 [--heartbeat-ms N] [--reconnect-increase-ms N] [--max-reconnect N] [--no-frames]\n');
    process.exit(2);
}
function flag(name) {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : undefined;
}
const heartbeatMs = flag('--heartbeat-ms');
const traceFrames = !args.includes('--no-frames');

const { out, safeJson, readLines, quietConsole } = require('./lib/common');

quietConsole();
function errJson(e) {
    if (e === undefined || e === null) return { message: String(e) };
    if (typeof e !== 'object') return { message: String(e) };
    const o = { message: e.message !== undefined ? e.message : (e.errMsg || safeJson(e)) };
    for (const k of ['type', 'code', 'detail', 'errMsg']) if (e[k] !== undefined) o[k] = e[k];
    return JSON.parse(safeJson(o));
}

if (heartbeatMs !== undefined) {
    const realSetTimeout = global.setTimeout;
    const n = Number(heartbeatMs);
    global.setTimeout = function (fn, ms, ...rest) {
        return realSetTimeout(fn, ms === 15000 ? n : ms, ...rest);
    };
}

process.on('uncaughtException', e => out({ event: 'uncaught', message: e && e.message, stack: e && e.stack }));
process.on('unhandledRejection', e => out({ event: 'uncaught', message: e && e.message, stack: e && e.stack }));

const shim = require('./wx-shim');
const wx = shim.install({
    hooks: {
        onCallbackError(where, e) { out({ event: 'callback_error', where, message: e && e.message, stack: e && e.stack }); },
        onSocket(kind, detail) { out(Object.assign({ event: 'socket', kind }, detail)); },
        onFrame(dir, data, info) { if (traceFrames) out(Object.assign({ event: 'frame', dir, data }, info)); },
        onRequest(info) {
            const e = { event: 'http', method: info.method, url: info.url, header: info.header };
            if (info.ok) { e.statusCode = info.statusCode; e.data = info.data; } else { e.errMsg = info.errMsg; }
            out(e);
        },
        onLogin(code) { out({ event: 'wx_login', code }); },
    },
});

const sdkName = SDKS[which];
const sdkDir = path.dirname(require.resolve(`${sdkName}/package.json`));
const sdk = require(sdkName);
const Session = require(path.join(sdkDir, 'lib', 'session'));
const sdkVersion = require(`${sdkName}/package.json`).version;

if (flag('--reconnect-increase-ms') !== undefined) sdk.Tunnel.RECONNECT_TIME_INCREASE = Number(flag('--reconnect-increase-ms'));
if (flag('--max-reconnect') !== undefined) sdk.Tunnel.MAX_RECONNECT_TRY_TIMES = Number(flag('--max-reconnect'));

let tunnel = null;

function tunnelStatus() {
    return {
        status: tunnel ? tunnel.status : null,
        serviceUrl: tunnel ? tunnel.serviceUrl : null,
        socketUrl: tunnel ? tunnel.socketUrl : null,
        socket: wx.__shim.currentSocket(),
        reconnectIncreaseMs: sdk.Tunnel.RECONNECT_TIME_INCREASE || 1000,
        maxReconnect: sdk.Tunnel.MAX_RECONNECT_TRY_TIMES || 5,
        heartbeatMs: heartbeatMs !== undefined ? Number(heartbeatMs) : 15000,
    };
}

function prepareLogin(c) {
    if (c.loginUrl) sdk.setLoginUrl(c.loginUrl);
    const o = {};
    for (const k of ['code', 'codes', 'codeUrl', 'userInfo']) if (c[k] !== undefined) o[k] = c[k];
    wx.__shim.configure(o);
}

const handlers = {
    wx(c, reply) {
        const o = Object.assign({}, c);
        delete o.cmd; delete o.id;
        wx.__shim.configure(o);
        reply(true, null);
    },
    login(c, reply) {
        prepareLogin(c);
        const o = {
            success: userInfo => reply(true, { userInfo, session: Session.get() }),
            fail: e => reply(false, errJson(e)),
        };
        if (c.method) o.method = c.method;
        if (c.data !== undefined) o.data = c.data;
        sdk.login(o);
    },
    loginWithCode(c, reply) {
        if (typeof sdk.loginWithCode !== 'function') return reply(false, { message: `${sdkName} has no loginWithCode` });
        prepareLogin(c);
        const o = {
            success: userInfo => reply(true, { userInfo, session: Session.get() }),
            fail: e => reply(false, errJson(e)),
        };
        if (c.method) o.method = c.method;
        sdk.loginWithCode(o);
    },
    request(c, reply) {
        prepareLogin(c);
        const o = {
            url: c.url,
            login: !!c.login,
            success: res => reply(true, { statusCode: res.statusCode, data: res.data, header: res.header }),
            fail: e => reply(false, errJson(e)),
        };
        for (const k of ['method', 'data', 'header', 'dataType']) if (c[k] !== undefined) o[k] = c[k];
        sdk.request(o);
    },
    session(c, reply) { reply(true, Session.get()); },
    clearSession(c, reply) { Session.clear(); reply(true, null); },
    setSession(c, reply) { Session.set(c.session); reply(true, Session.get()); },
    open(c, reply) {
        if (c.reconnectIncreaseMs !== undefined) sdk.Tunnel.RECONNECT_TIME_INCREASE = Number(c.reconnectIncreaseMs);
        if (c.maxReconnect !== undefined) sdk.Tunnel.MAX_RECONNECT_TRY_TIMES = Number(c.maxReconnect);
        let t;
        try {
            t = new sdk.Tunnel(c.url);
        } catch (e) {
            return reply(false, errJson(e));
        }
        tunnel = t;
        t.on('*', (type, content) => {
            out({ event: 'tunnel', type, content: content === undefined ? null : JSON.parse(safeJson(content) || 'null'), status: t.status });
        });
        t.open();
        reply(true, tunnelStatus());
    },
    emit(c, reply) {
        if (!tunnel) return reply(false, { message: 'no tunnel' });
        tunnel.emit(c.type, c.content);
        reply(true, tunnelStatus());
    },
    close(c, reply) {
        if (!tunnel) return reply(false, { message: 'no tunnel' });
        tunnel.close();
        reply(true, tunnelStatus());
    },
    status(c, reply) { reply(true, tunnelStatus()); },
    socket(c, reply) {
        const s = wx.__shim;
        let done;
        if (c.action === 'drop') done = s.dropSocket();
        else if (c.action === 'blackhole') done = s.blackhole(true);
        else if (c.action === 'unblackhole') done = s.blackhole(false);
        else return reply(false, { message: `unknown socket action ${c.action}` });
        if (!done) return reply(false, { message: 'no current socket' });
        reply(true, tunnelStatus());
    },
    exit(c, reply) {
        reply(true, null);
        wx.__shim.shutdown();
        setImmediate(() => process.exit(0));
    },
};

function dispatch(line) {
    line = line.trim();
    if (!line) return;
    let c;
    try {
        c = JSON.parse(line);
    } catch (e) {
        out({ reply: null, ok: false, error: { message: `not JSON: ${line}` } });
        return;
    }
    let replied = false;
    const reply = (ok, value) => {
        if (replied) return;
        replied = true;
        const r = { reply: c.cmd, ok };
        if (c.id !== undefined) r.id = c.id;
        if (ok) r.result = value === undefined ? null : JSON.parse(safeJson(value) || 'null');
        else r.error = value;
        out(r);
    };
    const h = handlers[c.cmd];
    if (!h) return reply(false, { message: `unknown cmd ${c.cmd}` });
    try {
        h(c, reply);
    } catch (e) {
        reply(false, errJson(e));
    }
}

readLines(dispatch, () => {
    // The controller closed our stdin: it is done or dead.
    wx.__shim.shutdown();
    setTimeout(() => process.exit(0), 50);
});

out({ event: 'ready', sdk: sdkName, version: sdkVersion, pid: process.pid });
