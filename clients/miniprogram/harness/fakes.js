'use strict';
/**
 * Test doubles for the unit tests: a WebSocket constructor and a `wx` object whose sockets
 * the test plays the broker's side of. Nothing here is asynchronous: the test decides when
 * a socket opens, what arrives and when it closes, and FakeClock decides the time.
 *
 * Lives outside test/ because `node --test test/` runs every .js file under test/.
 */

const WELCOME = { tunnel_id: 't1', resumed: false, accepted: 0, resume_window_seconds: 60 };

/** What a client wrote, readable: strings as they are, binary frames as 'bin:' + latin1. */
function show(data) {
    if (typeof data === 'string') return data;
    return 'bin:' + Buffer.from(data).toString('latin1');
}

/** The broker's side of one socket, shared by both fakes. */
class ServerSide {
    constructor(url) {
        this.url = url;
        this.sent = []; // frames the client wrote, as given
        this.closedWith = null; // {code, reason} when the client closed it
        this.open = false;
    }

    get frames() {
        return this.sent.map(show);
    }

    /** The frames the client wrote since the last call. */
    take() {
        const taken = this.frames.slice(this._taken || 0);
        this._taken = this.sent.length;
        return taken;
    }

    get resume() {
        const match = /[?&]resume=([^&]*)/.exec(this.url);
        return match ? match[1] : null;
    }

    accept() {
        this.open = true;
        this._fire('open', {});
    }

    welcome(fields) {
        this.deliver('w:' + JSON.stringify(Object.assign({}, WELCOME, fields)));
    }

    /** accept() then welcome(). */
    start(fields) {
        this.accept();
        this.welcome(fields);
    }

    /** A frame from the broker: a string, or bytes (a Buffer/Uint8Array, delivered as ArrayBuffer). */
    deliver(data) {
        if (typeof data !== 'string') {
            const bytes = Uint8Array.from(data);
            data = bytes.buffer;
        }
        this._fire('message', data);
    }

    push(seq, payload) {
        if (typeof payload === 'string') this.deliver('m' + seq + ':' + payload);
        else this.deliver(Buffer.concat([Buffer.from('m' + seq + ':'), Buffer.from(payload)]));
    }

    serverClose(code, reason) {
        this.open = false;
        this._fire('close', { code, reason: reason || '' });
    }

    error(message) {
        this._fire('error', message || 'boom');
    }
}

/** A WebSocket constructor in the browser's shape; `network.sockets` are their server sides. */
function fakeNetwork() {
    const sockets = [];
    function FakeWebSocket(url, protocols) {
        const server = new ServerSide(url);
        server.protocols = protocols;
        server.client = this;
        sockets.push(server);
        this.binaryType = 'blob';
        this.onopen = this.onmessage = this.onclose = this.onerror = null;
        server._fire = (kind, detail) => {
            const handler = this['on' + kind];
            if (kind === 'message') handler.call(this, { data: detail });
            else if (kind === 'error') handler.call(this, { message: detail });
            else handler.call(this, detail);
        };
        this.send = (data) => {
            if (!server.open) throw new Error('send on a socket that is not open');
            server.sent.push(data);
        };
        this.close = (code, reason) => {
            server.closedWith = { code, reason };
            server.open = false;
        };
    }
    return {
        WebSocket: FakeWebSocket,
        sockets,
        get last() {
            return sockets[sockets.length - 1];
        },
    };
}

/** A `wx` with connectSocket (SocketTask), onAppShow and onNetworkStatusChange. */
function fakeWx() {
    const sockets = [];
    const listeners = { appShow: [], network: [] };
    const remove = (list, fn) => {
        const i = list.indexOf(fn);
        if (i >= 0) list.splice(i, 1);
    };
    return {
        sockets,
        listeners,
        connectOptions: [],
        get last() {
            return sockets[sockets.length - 1];
        },
        connectSocket(options) {
            this.connectOptions.push(options);
            const server = new ServerSide(options.url);
            server.protocols = options.protocols;
            const handlers = {};
            server._fire = (kind, detail) => {
                if (kind === 'message') handlers.message({ data: detail });
                else if (kind === 'error') handlers.error({ errMsg: detail });
                else handlers[kind](detail);
            };
            sockets.push(server);
            return {
                onOpen: (fn) => (handlers.open = fn),
                onMessage: (fn) => (handlers.message = fn),
                onClose: (fn) => (handlers.close = fn),
                onError: (fn) => (handlers.error = fn),
                send: ({ data }) => {
                    if (!server.open) throw new Error('send on a socket that is not open');
                    server.sent.push(data);
                },
                close: ({ code, reason }) => {
                    server.closedWith = { code, reason };
                    server.open = false;
                },
            };
        },
        onAppShow: (fn) => listeners.appShow.push(fn),
        offAppShow: (fn) => remove(listeners.appShow, fn),
        onNetworkStatusChange: (fn) => listeners.network.push(fn),
        offNetworkStatusChange: (fn) => remove(listeners.network, fn),
        showApp() {
            listeners.appShow.slice().forEach((fn) => fn({ scene: 1001 }));
        },
        networkChange(isConnected) {
            listeners.network.slice().forEach((fn) => fn({ isConnected, networkType: isConnected ? 'wifi' : 'none' }));
        },
    };
}

/**
 * A clock for the library's setTimeout / clearTimeout / Date.now: install() replaces the
 * globals (the library looks them up at call time), tick(ms) runs every timer due within
 * ms in order, each at its own time, including timers that those set. (node:test's mock
 * timers in Node 20 run a timer set during tick() relative to the tick's end instead.)
 */
class FakeClock {
    constructor(now) {
        this.now = now || 1_000_000;
        this.timers = new Map(); // id -> {due, fn}
        this.nextId = 1;
        this.saved = null;
    }

    install() {
        this.saved = { setTimeout: global.setTimeout, clearTimeout: global.clearTimeout, now: Date.now };
        global.setTimeout = (fn, ms) => {
            const id = this.nextId++;
            this.timers.set(id, { due: this.now + Math.max(0, ms || 0), fn });
            return id;
        };
        global.clearTimeout = (id) => {
            this.timers.delete(id);
        };
        Date.now = () => this.now;
        return this;
    }

    uninstall() {
        if (!this.saved) return;
        global.setTimeout = this.saved.setTimeout;
        global.clearTimeout = this.saved.clearTimeout;
        Date.now = this.saved.now;
        this.saved = null;
    }

    tick(ms) {
        const end = this.now + ms;
        for (;;) {
            let nextId = null;
            let next = null;
            for (const [id, timer] of this.timers) {
                if (timer.due <= end && (next === null || timer.due < next.due)) {
                    nextId = id;
                    next = timer;
                }
            }
            if (next === null) break;
            this.timers.delete(nextId);
            this.now = next.due;
            next.fn();
        }
        this.now = end;
    }
}

/** Every event a client emits, in order, as [name, detail]. */
function record(client) {
    const events = [];
    for (const name of ['open', 'resumed', 'message', 'reconnecting', 'close', 'error']) {
        client.on(name, (detail) => events.push([name, detail]));
    }
    events.named = (name) => events.filter((e) => e[0] === name).map((e) => e[1]);
    return events;
}

module.exports = { FakeClock, fakeNetwork, fakeWx, record, show, WELCOME };
