#!/usr/bin/env node
'use strict';
/**
 * A wafer2 business server: wafer-node-sdk 1.4.5, unmodified, used the way the official
 * quickstart (tencentyun/wafer2-quickstart-nodejs, server/) uses it: Koa, koa-bodyparser,
 * koa-router with prefix /weapp, the quickstart's response middleware ({code:0,data} or
 * {code:-1,error}, HTTP 200), GET /weapp/login (auth.authorizationMiddleware), GET /weapp/user
 * (auth.validationMiddleware), GET /weapp/tunnel (tunnel.getTunnelUrl) and POST /weapp/tunnel
 * (tunnel.onTunnelMessage), and the quickstart's chat logic (same as the Wafer 1 demo's).
 *
 * wafer-node-sdk needs MySQL for everything but its tunnel API: init() requires a `mysql`
 * config object (knex is created then, no connection yet); login, validation and therefore
 * getTunnelUrl (which validates X-WX-Skey first) query table cSessionInfo.
 *
 * Configuration (env, or --name value, e.g. --tunnel-server-url):
 *   TUNNEL_SERVER_URL     tunnel service base URL (SDK appends /get/wsurl, /ws/push)     (required)
 *   SERVER_HOST           tcId = md5(SERVER_HOST); receiveUrl host                       (required)
 *   TUNNEL_SIGNATURE_KEY  legacy signing key (sent in clear as tcKey on every call)     (required)
 *   SERVER_PORT           port put in receiveUrl (SDK option serverPort; default none)
 *   ROOT_PATHNAME         SDK rootPathname, prefixed to the receiveUrl path (default '')
 *   PORT / HOST           listen port (default 0 = any) / address (default 127.0.0.1)
 *   APP_ID / APP_SECRET   for the SDK's own jscode2session call (useQcloudLogin false)
 *   MYSQL_HOST MYSQL_PORT MYSQL_USER MYSQL_PASS MYSQL_DB MYSQL_CHAR
 *                         (defaults 127.0.0.1 3306 root '' cAuth utf8mb4; no server needed
 *                         unless a login/validation/SDK tunnel GET happens)
 *   INIT_DB               "1": at start, create database MYSQL_DB and table cSessionInfo (the
 *                         quickstart's tools/cAuth.sql) if missing
 *   WX_LOGIN_EXPIRES      seconds (default 7200)
 *   WECHAT_API_BASE       TEST ONLY: the SDK calls https://api.weixin.qq.com/sns/jscode2session
 *                         (hard-coded); when set, an axios request interceptor on the axios
 *                         instance the SDK uses rewrites that origin to this base URL (the
 *                         WeChat simulator). No SDK file is changed.
 *   TUNNEL_LOGIN          "sdk" (default): GET /weapp/tunnel = tunnel.getTunnelUrl(ctx.req),
 *                         exactly as the quickstart (needs MySQL and a logged-in user);
 *                         "none": TEST ONLY, for runs without MySQL: the same SDK request code
 *                         (lib/tunnel/api.requestConnect with lib/tunnel/service.receiveUrl,
 *                         what getTunnelUrl calls after validation) without the validation.
 *                         Not something a real user does; userinfo is then null.
 *
 * stdout JSON lines: ready {port, tcId, receiveUrlPath}, http, receive {body}, request
 * {tunnelId, userinfo}, connect, message {tunnelId,type,content}, close, push {op,...},
 * login {ok, userinfo|error}, uncaught. stdin commands: broadcast {type, content, tunnelIds?},
 * closeTunnel {tunnelId}, state, exit (see server-qcloud.js; no `emit`: the SDK exports none,
 * an echo is a broadcast to the one tunnel).
 */

const path = require('path');
const url = require('url');
const Koa = require('koa');
const bodyParser = require('koa-bodyparser');
const Router = require('koa-router');
const { out, setting, stdinCommands, quietConsole } = require('./lib/common');
const { chatRoom } = require('./lib/chat');

quietConsole();

const cfg = {
    port: Number(setting('PORT', { default: '0' })),
    host: setting('HOST', { default: '127.0.0.1' }),
    tunnelLogin: setting('TUNNEL_LOGIN', { default: 'sdk' }),
    wechatApiBase: setting('WECHAT_API_BASE', { default: '' }),
    initDb: setting('INIT_DB', { default: '0' }) === '1',
};

const sdkOptions = {
    rootPathname: setting('ROOT_PATHNAME', { default: '' }),
    appId: setting('APP_ID', { default: 'wx0000000000000000' }),
    appSecret: setting('APP_SECRET', { default: 'secret' }),
    useQcloudLogin: false,
    mysql: {
        host: setting('MYSQL_HOST', { default: '127.0.0.1' }),
        port: Number(setting('MYSQL_PORT', { default: '3306' })),
        user: setting('MYSQL_USER', { default: 'root' }),
        db: setting('MYSQL_DB', { default: 'cAuth' }),
        pass: setting('MYSQL_PASS', { default: '' }),
        char: setting('MYSQL_CHAR', { default: 'utf8mb4' }),
    },
    // Required by init() even though nothing here uploads to COS.
    cos: { region: 'ap-guangzhou', fileBucket: 'unused', uploadFolder: '' },
    serverHost: setting('SERVER_HOST', { required: true }),
    tunnelServerUrl: setting('TUNNEL_SERVER_URL', { required: true }),
    tunnelSignatureKey: setting('TUNNEL_SIGNATURE_KEY', { required: true }),
    // Required by init(); only used by useQcloudLogin / COS / voice / OCR.
    qcloudAppId: 'unused',
    qcloudSecretId: 'unused',
    qcloudSecretKey: 'unused',
    wxMessageToken: 'unused',
    wxLoginExpires: Number(setting('WX_LOGIN_EXPIRES', { default: '7200' })),
};
const serverPort = setting('SERVER_PORT', { default: '' });
if (serverPort) sdkOptions.serverPort = Number(serverPort);

const sdkDir = path.dirname(require.resolve('wafer-node-sdk/package.json'));

if (cfg.wechatApiBase) {
    // The axios the SDK itself resolves (it may be a nested copy in a real install).
    const axios = require(require.resolve('axios', { paths: [sdkDir] }));
    const base = cfg.wechatApiBase.replace(/\/+$/, '');
    axios.interceptors.request.use(c => {
        if (typeof c.url === 'string' && c.url.startsWith('https://api.weixin.qq.com/')) {
            c.url = base + c.url.slice('https://api.weixin.qq.com'.length);
        }
        return c;
    });
}

const qcloud = require('wafer-node-sdk')(sdkOptions);
const { auth: { authorizationMiddleware, validationMiddleware }, tunnel } = qcloud;

// ---------------------------------------------------------------- chat (quickstart)
function push(op, tunnelIds, type, content) {
    const p = op === 'broadcast' ? tunnel.broadcast(tunnelIds, type, content) : tunnel.closeTunnel(tunnelIds[0]);
    const ev = { event: 'push', op, tunnelIds: tunnelIds.slice() };
    if (type !== undefined) { ev.type = type; ev.content = content; }
    return p.then(
        result => { out(Object.assign(ev, { ok: true, result })); return result; },
        e => { out(Object.assign(ev, { ok: false, error: { message: e && e.message } })); throw e; }
    );
}

const chat = chatRoom({
    push,
    // The SDK exports no emit: an echo is a broadcast to the one tunnel.
    echo: (tunnelId, content) => push('broadcast', [tunnelId], 'echo', content),
});
const { userMap, connectedTunnelIds, forgetInvalid } = chat;

async function getTunnelUrlWithoutLogin(req) {
    // TEST ONLY (TUNNEL_LOGIN=none): what getTunnelUrl does after its validation step.
    const api = require(path.join(sdkDir, 'lib', 'tunnel', 'api'));
    const { receiveUrl } = require(path.join(sdkDir, 'lib', 'tunnel', 'service'));
    const pathname = `${sdkOptions.rootPathname}${url.parse(req.url).pathname}`;
    const res = await api.requestConnect(receiveUrl(pathname));
    return { tunnel: JSON.parse(res.data), userinfo: null };
}

const controllers = {
    login: async ctx => {
        if (ctx.state.$wxInfo.loginState) {
            ctx.state.data = ctx.state.$wxInfo.userinfo;
            ctx.state.data['time'] = Math.floor(Date.now() / 1000);
            out({ event: 'login', ok: true, userinfo: ctx.state.data });
        }
    },
    user: async ctx => {
        if (ctx.state.$wxInfo.loginState === 1) {
            ctx.state.data = ctx.state.$wxInfo.userinfo;
        } else {
            ctx.state.code = -1;
        }
    },
    tunnelGet: async ctx => {
        const data = cfg.tunnelLogin === 'none'
            ? await getTunnelUrlWithoutLogin(ctx.req)
            : await tunnel.getTunnelUrl(ctx.req);
        const tunnelInfo = data.tunnel;
        userMap[tunnelInfo.tunnelId] = data.userinfo;
        out({ event: 'request', tunnelId: tunnelInfo.tunnelId, userinfo: data.userinfo, tunnel: tunnelInfo });
        ctx.state.data = tunnelInfo;
    },
    tunnelPost: async ctx => {
        out({ event: 'receive', body: JSON.parse(JSON.stringify(ctx.request.body || null)) });
        const packet = await tunnel.onTunnelMessage(ctx.request.body);
        switch (packet.type) {
        case 'connect': chat.onConnect(packet.tunnelId); break;
        case 'message': chat.onMessage(packet.tunnelId, packet.content.messageType, packet.content.messageContent); break;
        case 'close': chat.onClose(packet.tunnelId); break;
        }
    },
};

// ---------------------------------------------------------------- app (quickstart)
const app = new Koa();
app.use(async (ctx, next) => {
    out({ event: 'http', method: ctx.method, path: ctx.url, headers: ctx.headers });
    await next();
});
// the quickstart's middlewares/response.js
app.use(async (ctx, next) => {
    try {
        await next();
        ctx.body = ctx.body ? ctx.body : {
            code: ctx.state.code !== undefined ? ctx.state.code : 0,
            data: ctx.state.data !== undefined ? ctx.state.data : {},
        };
    } catch (e) {
        out({ event: 'error', path: ctx.url, message: e && e.message ? e.message : String(e) });
        if (ctx.path.endsWith('/login')) out({ event: 'login', ok: false, error: { message: e && e.message } });
        ctx.status = 200;
        ctx.body = { code: -1, error: e && e.message ? e.message : e.toString() };
    }
});
app.use(bodyParser());

const router = new Router({ prefix: '/weapp' });
router.get('/login', authorizationMiddleware, controllers.login);
router.get('/user', validationMiddleware, controllers.user);
router.get('/tunnel', controllers.tunnelGet);
router.post('/tunnel', controllers.tunnelPost);
app.use(router.routes());

process.on('uncaughtException', e => out({ event: 'uncaught', message: e && e.message, stack: e && e.stack }));
process.on('unhandledRejection', e => out({ event: 'uncaught', message: e && e.message, stack: e && e.stack }));

async function initDb() {
    // The database itself (knex connects to it), then the quickstart's tools/cAuth.sql.
    const mysqlDriver = require(require.resolve('mysql', { paths: [sdkDir] }));
    const m = sdkOptions.mysql;
    await new Promise((resolve, reject) => {
        const conn = mysqlDriver.createConnection({ host: m.host, port: m.port, user: m.user, password: m.pass, charset: m.char });
        conn.query(`CREATE DATABASE IF NOT EXISTS \`${m.db}\` DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci`, e => {
            conn.end();
            if (e) reject(e); else resolve();
        });
    });
    await qcloud.mysql.raw(`CREATE TABLE IF NOT EXISTS \`cSessionInfo\` (
  \`open_id\` varchar(100) COLLATE utf8mb4_unicode_ci NOT NULL,
  \`uuid\` varchar(100) COLLATE utf8mb4_unicode_ci NOT NULL,
  \`skey\` varchar(100) COLLATE utf8mb4_unicode_ci NOT NULL,
  \`create_time\` timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
  \`last_visit_time\` timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
  \`session_key\` varchar(100) COLLATE utf8mb4_unicode_ci NOT NULL,
  \`user_info\` varchar(2048) COLLATE utf8mb4_unicode_ci NOT NULL,
  PRIMARY KEY (\`open_id\`),
  KEY \`openid\` (\`open_id\`) USING BTREE,
  KEY \`skey\` (\`skey\`) USING BTREE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci`);
}

(async () => {
    if (cfg.initDb) {
        try {
            await initDb();
        } catch (e) {
            process.stderr.write(`INIT_DB failed: ${e.message}\n`);
            process.exit(3);
        }
    }
    const server = app.listen(cfg.port, cfg.host, () => {
        out({
            event: 'ready',
            sdk: 'wafer-node-sdk',
            version: require('wafer-node-sdk/package.json').version,
            port: server.address().port,
            receiveUrlPath: `${sdkOptions.rootPathname}/weapp/tunnel`,
            tcId: require('crypto').createHash('md5').update(sdkOptions.serverHost, 'utf8').digest('hex'),
            tunnelLogin: cfg.tunnelLogin,
        });
    });
})();

stdinCommands({
    broadcast: c => push('broadcast', c.tunnelIds || connectedTunnelIds, c.type, c.content).then(r => { forgetInvalid(r); return r; }),
    closeTunnel: c => push('closeTunnel', [c.tunnelId]),
    state: () => ({ connected: connectedTunnelIds.slice(), users: userMap }),
    exit: () => { setImmediate(() => process.exit(0)); return null; },
});
