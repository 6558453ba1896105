#!/usr/bin/env node
'use strict';
/**
 * A Wafer 1 business server: qcloud-weapp-server-sdk 0.8.2, unmodified, used the way its
 * README and the official demo (tencentyun/wafer-node-server-demo: express + body-parser,
 * routes /login, /user, /tunnel, ChatTunnelHandler) use it.
 *
 * Configuration (env, or --name value on the command line with the same name lowercased and
 * dashed, e.g. --tunnel-server-url):
 *   TUNNEL_SERVER_URL     tunnel service base URL; the SDK appends /get/wsurl and /ws/push  (required)
 *   SERVER_HOST           this server's host name; tcId = md5(SERVER_HOST) and receiveUrl =
 *                         <scheme of TUNNEL_SERVER_URL>//SERVER_HOST/tunnel (no port possible) (required)
 *   TUNNEL_SIGNATURE_KEY  the legacy signing key                                  (required)
 *   AUTH_SERVER_URL       the auth server (qcloud.cam.id_skey / qcloud.cam.auth) for /login,
 *                         /user and CHECK_LOGIN
 *   CHECK_LOGIN           "1" (default when AUTH_SERVER_URL is set) or "0": handle(...,
 *                         {checkLogin}) on /tunnel, as the demo does
 *   PORT                  listen port (default 0 = any; the "ready" line says which)
 *   HOST                  listen address (default 127.0.0.1)
 *   NETWORK_TIMEOUT       ms, qcloud.config.setNetworkTimeout (SDK default 30000)
 *   TUNNEL_CHECK_SIGNATURE "0" to turn the SDK's signature checks off (default on)
 *
 * Chat logic = the demo's ChatTunnelHandler: onRequest maps tunnelId -> userInfo; onConnect of
 * a known tunnel adds it and broadcasts 'people' {total, enter}; of an unknown one closes it;
 * 'speak' {word} is broadcast as 'speak' {who, word}; onClose broadcasts 'people' {total, leave}.
 * Added for tests: message type 'echo' is sent back to its sender with TunnelService.emit.
 *
 * stdout, one JSON object per line:
 *   {"event":"ready","port","receiveUrlPath":"/tunnel","tcId"}
 *   {"event":"http","method","path","headers"}                  every request received
 *   {"event":"receive","body"}                                  every POST /tunnel body (raw, as parsed by body-parser)
 *   {"event":"request","tunnelId","userInfo"} / {"event":"connect","tunnelId"} /
 *   {"event":"message","tunnelId","type","content"} / {"event":"close","tunnelId"}
 *   {"event":"push","op":"broadcast"|"emit"|"closeTunnel","tunnelIds","type"?,"content"?,
 *    "ok","result"|"error"}                                      every SDK call to /ws/push
 *   {"event":"login","ok","userInfo"|"error"} / {"event":"check","ok",...}
 *   {"event":"uncaught","message"}
 * stdin commands (JSON lines, optional "id" echoed):
 *   {"cmd":"broadcast","type","content","tunnelIds"?}  (default: all connected tunnels)
 *   {"cmd":"emit","tunnelId","type","content"}
 *   {"cmd":"closeTunnel","tunnelId"}
 *   {"cmd":"state"}  -> {"connected":[...], "users":{tunnelId:userInfo}}
 *   {"cmd":"exit"}
 *   replies: {"reply":cmd,"id","ok","result"|"error"} once the tunnel service answered.
 */

const express = require('express');
const bodyParser = require('body-parser');
const qcloud = require('qcloud-weapp-server-sdk');
const { LoginService, TunnelService } = qcloud;
const { out, setting, stdinCommands, quietConsole } = require('./lib/common');
const { chatRoom } = require('./lib/chat');

quietConsole();

const TUNNEL_SERVER_URL = setting('TUNNEL_SERVER_URL', { required: true });
const SERVER_HOST = setting('SERVER_HOST', { required: true });
const TUNNEL_SIGNATURE_KEY = setting('TUNNEL_SIGNATURE_KEY', { required: true });
const AUTH_SERVER_URL = setting('AUTH_SERVER_URL', { default: '' });
const CHECK_LOGIN = setting('CHECK_LOGIN', { default: AUTH_SERVER_URL ? '1' : '0' }) === '1';
const PORT = Number(setting('PORT', { default: '0' }));
const HOST = setting('HOST', { default: '127.0.0.1' });
const NETWORK_TIMEOUT = setting('NETWORK_TIMEOUT', { default: '' });
const CHECK_SIGNATURE = setting('TUNNEL_CHECK_SIGNATURE', { default: '1' }) !== '0';

qcloud.config({
    ServerHost: SERVER_HOST,
    AuthServerUrl: AUTH_SERVER_URL,
    TunnelServerUrl: TUNNEL_SERVER_URL,
    TunnelSignatureKey: TUNNEL_SIGNATURE_KEY,
    TunnelCheckSignature: CHECK_SIGNATURE,
});
if (NETWORK_TIMEOUT) qcloud.config.setNetworkTimeout(Number(NETWORK_TIMEOUT));

// ---------------------------------------------------------------- chat handler (demo)
function errOf(e) { return { message: e && e.message, code: e && e.code }; }

function push(op, tunnelIds, type, content) {
    let p;
    if (op === 'broadcast') p = TunnelService.broadcast(tunnelIds, type, content);
    else if (op === 'emit') p = TunnelService.emit(tunnelIds[0], type, content);
    else p = TunnelService.closeTunnel(tunnelIds[0]);
    const ev = { event: 'push', op, tunnelIds: tunnelIds.slice() };
    if (type !== undefined) { ev.type = type; ev.content = content; }
    return p.then(
        result => { out(Object.assign(ev, { ok: true, result })); return result; },
        e => { out(Object.assign(ev, { ok: false, error: errOf(e) })); throw e; }
    );
}

const chat = chatRoom({ push, echo: (tunnelId, content) => push('emit', [tunnelId], 'echo', content) });
const { userMap, connectedTunnelIds, forgetInvalid } = chat;

// The demo's ChatTunnelHandler: the SDK calls these.
class ChatTunnelHandler {
    onRequest(tunnelId, userInfo) {
        out({ event: 'request', tunnelId, userInfo });
        if (typeof userInfo === 'object') userMap[tunnelId] = userInfo;
    }

    onConnect(tunnelId) { chat.onConnect(tunnelId); }

    onMessage(tunnelId, type, content) { chat.onMessage(tunnelId, type, content); }

    onClose(tunnelId) { chat.onClose(tunnelId); }
}

// ---------------------------------------------------------------- app (demo)
const app = express();
app.set('strict routing', true);
app.disable('x-powered-by');
app.use((req, res, next) => {
    out({ event: 'http', method: req.method, path: req.originalUrl, headers: req.headers });
    next();
});
app.use(bodyParser.urlencoded({ extended: true }));
app.use(bodyParser.json());

app.get('/login', (req, res) => {
    LoginService.create(req, res).login().then(
        result => out({ event: 'login', ok: true, userInfo: result.userInfo }),
        e => out({ event: 'login', ok: false, error: { type: e.type, message: e.message } })
    );
});

app.get('/user', (req, res) => {
    LoginService.create(req, res).check().then(
        data => {
            out({ event: 'check', ok: true, userInfo: data.userInfo });
            res.json({ code: 0, message: 'ok', data: { userInfo: data.userInfo } });
        },
        e => out({ event: 'check', ok: false, error: { type: e.type, message: e.message } })
    );
});

app.all('/tunnel', (req, res) => {
    if (req.method === 'POST') out({ event: 'receive', body: req.body });
    TunnelService.create(req, res).handle(new ChatTunnelHandler(), { checkLogin: CHECK_LOGIN });
});

process.on('uncaughtException', e => out({ event: 'uncaught', message: e && e.message, stack: e && e.stack }));

const server = app.listen(PORT, HOST, () => {
    out({
        event: 'ready',
        sdk: 'qcloud-weapp-server-sdk',
        version: require('qcloud-weapp-server-sdk/package.json').version,
        port: server.address().port,
        receiveUrlPath: '/tunnel',
        tcId: require('crypto').createHash('md5').update(SERVER_HOST, 'utf8').digest('hex'),
        checkLogin: CHECK_LOGIN,
    });
});

stdinCommands({
    broadcast: c => push('broadcast', c.tunnelIds || connectedTunnelIds, c.type, c.content).then(r => { forgetInvalid(r); return r; }),
    emit: c => push('emit', [c.tunnelId], c.type, c.content),
    closeTunnel: c => push('closeTunnel', [c.tunnelId]),
    state: () => ({ connected: connectedTunnelIds.slice(), users: userMap }),
    exit: () => { setImmediate(() => process.exit(0)); return null; },
});
