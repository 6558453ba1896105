'use strict';
/**
 * A `wx` object for Node: just enough of the WeChat mini-program runtime for the two
 * published client SDKs (wafer-client-sdk 0.8.4, wafer2-client-sdk 2.1.0), unmodified.
 *
 * What the SDKs touch (grep of their lib/): wx.request, wx.login, wx.getUserInfo,
 * wx.checkSession (Wafer 1 only), wx.getStorageSync / setStorageSync / removeStorageSync,
 * and the old single-socket API: wx.connectSocket, wx.onSocketOpen / onSocketClose /
 * onSocketMessage / onSocketError, wx.sendSocketMessage, wx.closeSocket. Their lib/wxTunnel.js
 * binds the four socket listeners when it is loaded, so install the shim on `global.wx`
 * before requiring an SDK.
 *
 * Behaviour copied from the WeChat runtime where the SDKs depend on it:
 *  - wx.request calls `success` for every HTTP answer (4xx/5xx included) with
 *    {data, statusCode, header, errMsg}; `fail` only for network errors; `complete` after
 *    either. dataType 'json' (the default) parses the body and keeps the raw string when it is
 *    not JSON. GET data becomes the query string; other methods send objects as JSON (or as a
 *    form when content-type says so). Default header content-type: application/json.
 *  - One socket at a time: connectSocket while one exists drops the old one silently; events
 *    of a socket that is no longer the current one are not delivered (so the close of a socket
 *    the SDK abandoned during a reconnect cannot hit the new one). Listener events are
 *    delivered asynchronously, as in WeChat.
 *  - Exceptions thrown by SDK callbacks are caught and reported through `hooks.onCallbackError`
 *    (WeChat logs them and goes on); they never kill the process.
 *
 * Everything the tests must control is injectable through `createWx(options)` or later via
 * `wx.__shim.configure(options)`:
 *  - codes: array of login codes, used first-in first-out by wx.login;
 *  - codeSource: function () -> code | Promise<code>, used when `codes` is empty;
 *  - codeUrl: URL answering a code (JSON {code} or the bare code as text), used after both;
 *  - loginFail: make wx.login fail;
 *  - userInfo: {encryptedData, iv, rawData, signature, userInfo} answered by wx.getUserInfo
 *    (a function returning it, possibly a Promise, is accepted too); getUserInfoFail;
 *  - checkSession: true/false or a function -> boolean (wx.checkSession outcome);
 *  - socketOrigins: {"ws://host:a": "ws://host:b"}, connect URLs re-pointed as a load
 *    balancer would (the SDK still sees the URL it was given);
 *  - requestTimeoutMs (default 60000, WeChat's), appId (for the Referer WeChat adds);
 *  - hooks: {onCallbackError(where, error), onSocket(kind, detail), onFrame(dir, data),
 *    onRequest(info)} for tracing.
 * Test-only socket faults: wx.__shim.dropSocket() (TCP cut, no close frame),
 * wx.__shim.blackhole(true|false) (silently discard frames both ways).
 */

const http = require('http');
const https = require('https');
const { URL } = require('url');
const querystring = require('querystring');
const WebSocket = require('ws');

function isPlainObject(v) {
    return v !== null && typeof v === 'object' && !Buffer.isBuffer(v) && !(v instanceof ArrayBuffer);
}

function createWx(options) {
    const cfg = {
        codes: [],
        codeSource: null,
        codeUrl: null,
        loginFail: false,
        userInfo: null,
        getUserInfoFail: false,
        checkSession: true,
        requestTimeoutMs: 60000,
        appId: 'wxshim',
        hooks: {},
    };
    const storage = new Map();
    const socketListeners = { open: null, close: null, message: null, error: null };
    let current = null; // {ws, url, closing, blackholed, id}
    let socketSeq = 0;

    function configure(o) {
        if (!o) return;
        for (const k of Object.keys(o)) {
            if (k === 'codes') cfg.codes = o.codes.slice();
            else if (k === 'code') cfg.codes.push(o.code);
            else if (k === 'hooks') Object.assign(cfg.hooks, o.hooks);
            else cfg[k] = o[k];
        }
    }
    configure(options);

    function hook(name, ...args) {
        const fn = cfg.hooks[name];
        if (typeof fn === 'function') {
            try { fn(...args); } catch (e) { /* a tracing hook must not break the runtime */ }
        }
    }

    // Calls an SDK callback the way WeChat does: errors are logged, not propagated.
    function call(where, fn, arg) {
        if (typeof fn !== 'function') return;
        try {
            fn(arg);
        } catch (e) {
            hook('onCallbackError', where, e);
        }
    }

    function finish(name, o, ok, res) {
        call(`${name}.${ok ? 'success' : 'fail'}`, ok ? o.success : o.fail, res);
        call(`${name}.complete`, o.complete, res);
    }

    // ------------------------------------------------------------------ storage
    function setStorageSync(key, value) {
        // WeChat stores a JSON-compatible copy.
        storage.set(String(key), value === undefined ? undefined : JSON.parse(JSON.stringify(value)));
    }
    function getStorageSync(key) {
        // WeChat answers '' for a missing key.
        if (!storage.has(String(key))) return '';
        const v = storage.get(String(key));
        return v === undefined ? '' : JSON.parse(JSON.stringify(v));
    }
    function removeStorageSync(key) { storage.delete(String(key)); }
    function clearStorageSync() { storage.clear(); }

    // ------------------------------------------------------------------ request
    function request(o) {
        o = o || {};
        const method = String(o.method || 'GET').toUpperCase();
        const dataType = o.dataType === undefined ? 'json' : o.dataType;
        const header = Object.assign({}, o.header || {});
        const lower = {};
        for (const k of Object.keys(header)) lower[k.toLowerCase()] = k;
        if (!lower['content-type']) header['content-type'] = 'application/json';
        if (!lower['referer']) header['Referer'] = `https://servicewechat.com/${cfg.appId}/devtools/page-frame.html`;
        const contentType = String(header[lower['content-type'] || 'content-type']);

        let url;
        try {
            url = new URL(o.url);
        } catch (e) {
            setImmediate(() => finish('request', o, false, { errMsg: `request:fail invalid url "${o.url}"` }));
            return { abort() {} };
        }
        let body = null;
        const data = o.data;
        if (data !== undefined && data !== null) {
            if (method === 'GET') {
                if (isPlainObject(data)) {
                    for (const k of Object.keys(data)) {
                        const v = data[k];
                        url.searchParams.append(k, isPlainObject(v) ? JSON.stringify(v) : String(v));
                    }
                } else if (typeof data === 'string' && data) {
                    url.search += (url.search ? '&' : '') + data;
                }
            } else if (typeof data === 'string') {
                body = Buffer.from(data, 'utf8');
            } else if (Buffer.isBuffer(data) || data instanceof ArrayBuffer) {
                body = Buffer.from(data);
            } else if (/x-www-form-urlencoded/i.test(contentType)) {
                body = Buffer.from(querystring.stringify(data), 'utf8');
            } else {
                body = Buffer.from(JSON.stringify(data), 'utf8');
            }
        }

        const transport = url.protocol === 'https:' ? https : http;
        let done = false;
        let req;
        const end = (ok, res) => {
            if (done) return;
            done = true;
            hook('onRequest', { method, url: url.toString(), header, ok, statusCode: res.statusCode, data: res.data, errMsg: res.errMsg });
            finish('request', o, ok, res);
        };
        try {
            req = transport.request(url, { method, headers: Object.assign({}, header, body ? { 'content-length': body.length } : {}) }, res => {
                const chunks = [];
                res.on('data', c => chunks.push(c));
                res.on('error', e => end(false, { errMsg: `request:fail ${e.message}` }));
                res.on('end', () => {
                    const raw = Buffer.concat(chunks);
                    let out;
                    if (o.responseType === 'arraybuffer') {
                        out = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.length);
                    } else {
                        out = raw.toString('utf8');
                        if (dataType === 'json') {
                            try { out = JSON.parse(out.replace(/^\uFEFF/, '')); } catch (e) { /* keep text */ }
                        }
                    }
                    end(true, { data: out, statusCode: res.statusCode, header: res.headers, cookies: [], errMsg: 'request:ok' });
                });
            });
        } catch (e) {
            // e.g. a header value that is not a valid HTTP header (non-ASCII)
            setImmediate(() => end(false, { errMsg: `request:fail ${e.message}` }));
            return { abort() {} };
        }
        req.setTimeout(cfg.requestTimeoutMs, () => {
            req.destroy(new Error('timeout'));
        });
        req.on('error', e => end(false, { errMsg: `request:fail ${e.message}` }));
        if (body) req.write(body);
        req.end();
        return {
            abort() {
                if (!done) { req.destroy(new Error('abort')); }
            },
        };
    }

    // ------------------------------------------------------------------ login & user
    function fetchText(u) {
        return new Promise((resolve, reject) => {
            const t = new URL(u).protocol === 'https:' ? https : http;
            t.get(u, res => {
                const chunks = [];
                res.on('data', c => chunks.push(c));
                res.on('end', () => {
                    const text = Buffer.concat(chunks).toString('utf8');
                    if (res.statusCode !== 200) reject(new Error(`code source answered HTTP ${res.statusCode}: ${text}`));
                    else resolve(text);
                });
            }).on('error', reject);
        });
    }

    async function nextCode() {
        if (cfg.codes.length) return cfg.codes.shift();
        if (typeof cfg.codeSource === 'function') return await cfg.codeSource();
        if (cfg.codeUrl) {
            const text = (await fetchText(cfg.codeUrl)).trim();
            try {
                const j = JSON.parse(text);
                if (j && typeof j === 'object') {
                    const c = j.code !== undefined ? j.code : (j.data && j.data.code);
                    if (c !== undefined) return String(c);
                }
                if (typeof j === 'string') return j;
            } catch (e) { /* bare text */ }
            return text;
        }
        throw new Error('no login code configured (codes / codeSource / codeUrl)');
    }

    function login(o) {
        o = o || {};
        (async () => {
            if (cfg.loginFail) throw new Error('login failed (configured)');
            return nextCode();
        })().then(
            code => {
                hook('onLogin', code);
                finish('login', o, true, { code: String(code), errMsg: 'login:ok' });
            },
            e => finish('login', o, false, { errMsg: `login:fail ${e.message}` })
        );
    }

    function getUserInfo(o) {
        o = o || {};
        (async () => {
            if (cfg.getUserInfoFail) throw new Error('getUserInfo failed (configured)');
            let u = cfg.userInfo;
            if (typeof u === 'function') u = await u();
            if (!u) throw new Error('no userInfo configured');
            return u;
        })().then(
            u => finish('getUserInfo', o, true, Object.assign({ errMsg: 'getUserInfo:ok' }, JSON.parse(JSON.stringify(u)))),
            e => finish('getUserInfo', o, false, { errMsg: `getUserInfo:fail ${e.message}` })
        );
    }

    function checkSession(o) {
        o = o || {};
        setImmediate(() => {
            const ok = typeof cfg.checkSession === 'function' ? !!cfg.checkSession() : !!cfg.checkSession;
            finish('checkSession', o, ok, { errMsg: ok ? 'checkSession:ok' : 'checkSession:fail session time out' });
        });
    }

    // ------------------------------------------------------------------ sockets
    function emitSocket(sock, kind, arg) {
        if (sock !== current) return; // events of an abandoned socket are not delivered
        if (kind === 'close') current = null;
        hook('onSocket', kind, Object.assign({ socket: sock.id, url: sock.url }, arg));
        call(`onSocket${kind[0].toUpperCase()}${kind.slice(1)}`, socketListeners[kind], arg);
    }

    function detach(sock) {
        if (!sock) return;
        try { sock.ws.terminate(); } catch (e) { /* already gone */ }
    }

    function connectSocket(o) {
        o = o || {};
        if (current) {
            const old = current;
            current = null;
            detach(old);
        }
        let ws;
        // A load balancer in front of several broker pods: `socketOrigins` maps the origin of
        // a connect URL (as the tunnel service issued it) to the one the socket really reaches.
        let target = o.url;
        for (const [from, to] of Object.entries(cfg.socketOrigins || {})) {
            if (target.startsWith(from)) target = to + target.slice(from.length);
        }
        try {
            ws = new WebSocket(target, o.protocols || [], {
                headers: o.header || {},
                handshakeTimeout: cfg.requestTimeoutMs,
                perMessageDeflate: false,
            });
        } catch (e) {
            setImmediate(() => finish('connectSocket', o, false, { errMsg: `connectSocket:fail ${e.message}` }));
            return;
        }
        const sock = { ws, url: o.url, id: ++socketSeq, closing: false, blackholed: false };
        current = sock;
        ws.on('open', () => emitSocket(sock, 'open', { header: {} }));
        ws.on('message', (data, isBinary) => {
            const text = isBinary ? null : data.toString('utf8');
            hook('onFrame', 'in', isBinary ? `<binary ${data.length} bytes>` : text, { socket: sock.id, dropped: sock.blackholed });
            if (sock.blackholed) return;
            const payload = isBinary ? data.buffer.slice(data.byteOffset, data.byteOffset + data.length) : text;
            emitSocket(sock, 'message', { data: payload });
        });
        ws.on('error', e => {
            if (sock.closing) return; // a close the program asked for is not an error
            emitSocket(sock, 'error', { errMsg: e.message });
        });
        ws.on('close', (code, reason) => {
            clearTimeout(sock.killTimer);
            emitSocket(sock, 'close', { code, reason: reason.toString('utf8') });
        });
        setImmediate(() => finish('connectSocket', o, true, { errMsg: 'connectSocket:ok' }));
    }

    function onSocketOpen(fn) { socketListeners.open = fn; }
    function onSocketClose(fn) { socketListeners.close = fn; }
    function onSocketMessage(fn) { socketListeners.message = fn; }
    function onSocketError(fn) { socketListeners.error = fn; }

    function sendSocketMessage(o) {
        o = o || {};
        const sock = current;
        if (!sock || sock.ws.readyState !== WebSocket.OPEN) {
            setImmediate(() => finish('sendSocketMessage', o, false, { errMsg: 'sendSocketMessage:fail WebSocket is not connected' }));
            return;
        }
        const data = o.data;
        hook('onFrame', 'out', typeof data === 'string' ? data : '<binary>', { socket: sock.id, dropped: sock.blackholed });
        if (sock.blackholed) {
            setImmediate(() => finish('sendSocketMessage', o, true, { errMsg: 'sendSocketMessage:ok' }));
            return;
        }
        sock.ws.send(typeof data === 'string' ? data : Buffer.from(data), err => {
            finish('sendSocketMessage', o, !err, { errMsg: err ? `sendSocketMessage:fail ${err.message}` : 'sendSocketMessage:ok' });
        });
    }

    function closeSocket(o) {
        o = o || {};
        const sock = current;
        if (!sock) {
            setImmediate(() => finish('closeSocket', o, false, { errMsg: 'closeSocket:fail WebSocket is not connected' }));
            return;
        }
        if (!sock.closing) {
            sock.closing = true;
            const ws = sock.ws;
            if (ws.readyState === WebSocket.CONNECTING) {
                ws.terminate();
            } else if (ws.readyState === WebSocket.OPEN) {
                ws.close(o.code || 1000, o.reason || '');
                // the peer may never answer the close frame (that is why the SDK closes)
                sock.killTimer = setTimeout(() => ws.terminate(), 2000);
            }
        }
        setImmediate(() => finish('closeSocket', o, true, { errMsg: 'closeSocket:ok' }));
    }

    const shim = {
        configure,
        config: cfg,
        storage,
        currentSocket() {
            if (!current) return null;
            const names = ['CONNECTING', 'OPEN', 'CLOSING', 'CLOSED'];
            return { id: current.id, url: current.url, readyState: names[current.ws.readyState], blackholed: current.blackholed };
        },
        // Test faults
        dropSocket() {
            const sock = current;
            if (!sock) return false;
            // A network cut: no close frame; the peer and the program both see an abnormal close.
            if (sock.ws._socket) sock.ws._socket.destroy();
            else sock.ws.terminate();
            return true;
        },
        blackhole(on) {
            if (!current) return false;
            current.blackholed = !!on;
            return true;
        },
        shutdown() {
            const sock = current;
            current = null;
            detach(sock);
        },
    };

    return {
        request,
        login,
        getUserInfo,
        checkSession,
        getStorageSync,
        setStorageSync,
        removeStorageSync,
        clearStorageSync,
        connectSocket,
        onSocketOpen,
        onSocketClose,
        onSocketMessage,
        onSocketError,
        sendSocketMessage,
        closeSocket,
        getSystemInfoSync() {
            return { platform: 'devtools', SDKVersion: '1.0.0', version: '6.5.3', system: 'node' };
        },
        __shim: shim,
    };
}

/** Creates the shim and installs it as `global.wx` (call before requiring a client SDK). */
function install(options) {
    const wx = createWx(options);
    global.wx = wx;
    return wx;
}

module.exports = { createWx, install };
