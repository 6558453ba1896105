'use strict';
// The client against fake sockets (harness/fakes.js): the test plays the broker, and a
// fake clock stands in for time.

const { test, beforeEach, afterEach } = require('node:test');
const assert = require('node:assert/strict');

const { TunnelClient } = require('../lib/index.js');
const { FakeClock, fakeNetwork, fakeWx, record } = require('../harness/fakes.js');

const URL = 'wss://broker.example/v1/connect?token=abc';

let clock;
beforeEach(() => {
    clock = new FakeClock().install();
});
afterEach(() => clock.uninstall());

const flush = () => new Promise((resolve) => setImmediate(resolve));

function client(options) {
    const net = fakeNetwork();
    const c = new TunnelClient(Object.assign({ url: URL, WebSocket: net.WebSocket, wx: null }, options));
    const events = record(c);
    return { c, net, events };
}

/** A client whose first socket is open and welcomed. */
function connected(options, welcome) {
    const t = client(options);
    t.c.connect();
    t.net.last.start(welcome);
    return t;
}

/** Wait out the reconnect the last `reconnecting` event announced. */
function afterBackoff(events) {
    const last = events.named('reconnecting').pop();
    clock.tick(last.delay);
}

test('connects with the subprotocol, reads the welcome, emits open', () => {
    const { c, net, events } = client();
    assert.equal(c.state, 'idle');
    c.connect();
    assert.equal(c.state, 'connecting');
    const s = net.last;
    assert.equal(s.url, URL); // no resume on a first connect
    assert.deepEqual(s.protocols, ['tb.reliable.v1']);
    assert.equal(s.client.binaryType, 'arraybuffer');
    s.accept();
    assert.equal(events.length, 0); // open waits for the welcome
    s.welcome({ tunnel_id: 'tun-9' });
    assert.equal(c.state, 'open');
    assert.equal(c.tunnelId, 'tun-9');
    assert.equal(events.length, 1);
    const [name, detail] = events[0];
    assert.equal(name, 'open');
    assert.equal(detail.resumed, false);
    assert.deepEqual(detail.unconfirmed, []);
    assert.equal(detail.tunnelId, 'tun-9');
});

test('pushes arrive in order as strings and ArrayBuffers; a repeated number is dropped', () => {
    const { net, events } = connected();
    const s = net.last;
    s.push(1, 'hello');
    s.push(2, Buffer.from([0, 1, 2, 255]));
    s.push(2, 'again'); // sent again after a resume: already delivered
    s.push(3, 'm7:looks like a header');
    const messages = events.named('message');
    assert.equal(messages.length, 3);
    assert.equal(messages[0], 'hello');
    assert.ok(messages[1] instanceof ArrayBuffer);
    assert.deepEqual([...new Uint8Array(messages[1])], [0, 1, 2, 255]);
    assert.equal(messages[2], 'm7:looks like a header');
});

test('pushes are acknowledged 500 ms after the first unacknowledged one, or at once every 32', () => {
    const { net } = connected();
    const s = net.last;
    s.push(1, 'a');
    s.push(2, 'b');
    clock.tick(499);
    assert.deepEqual(s.take(), []);
    clock.tick(1);
    assert.deepEqual(s.take(), ['a2:']);
    clock.tick(5000);
    assert.deepEqual(s.take(), []); // nothing new: no ack
    for (let n = 3; n <= 34; n++) s.push(n, 'x' + n);
    assert.deepEqual(s.take(), ['a34:']); // the 32nd unacknowledged one, without waiting
    s.push(35, 'y');
    clock.tick(500);
    assert.deepEqual(s.take(), ['a35:']);
});

test('messages are numbered, binary with an ASCII header; acknowledged ones are forgotten', () => {
    const { c, net } = connected();
    const s = net.last;
    assert.equal(c.send('hello'), true);
    const bytes = new Uint8Array([9, 8, 7, 6, 5]);
    assert.equal(c.send(bytes.subarray(1, 4)), true); // a view: only its bytes
    assert.equal(c.send(new Uint8Array([0xff]).buffer), true);
    bytes[2] = 0; // the caller's buffer is not the client's
    assert.deepEqual(s.take(), ['m1:hello', 'bin:m2:\x08\x07\x06', 'bin:m3:\xff']);
    assert.ok(s.sent[1] instanceof ArrayBuffer);
    assert.equal(c.pendingCount, 3);
    s.deliver('a2:');
    assert.equal(c.pendingCount, 1);
    s.deliver('a3:');
    assert.equal(c.pendingCount, 0);
    assert.throws(() => c.send(42), TypeError);
    assert.throws(() => c.send({ text: 'no' }), TypeError);
});

test('a drop resumes: the last push received in the URL, unaccepted messages sent again', () => {
    const { c, net, events } = connected();
    const first = net.last;
    first.push(1, 'p1');
    first.push(2, 'p2');
    c.send('m1');
    c.send('m2');
    c.send('m3');
    first.deliver('a1:');
    first.serverClose(1006);
    assert.equal(c.state, 'reconnecting');
    const [reconnecting] = events.named('reconnecting');
    assert.equal(reconnecting.attempt, 1);
    assert.equal(reconnecting.code, 1006);
    assert.ok(reconnecting.delay >= 250 && reconnecting.delay <= 500, String(reconnecting.delay));
    c.send('m4'); // offline: kept, numbered
    assert.equal(c.send(new Uint8Array([1, 2])), true);
    clock.tick(reconnecting.delay - 1);
    assert.equal(net.sockets.length, 1);
    clock.tick(1);
    const second = net.last;
    assert.equal(second.url, URL + '&resume=2');
    second.start({ resumed: true, accepted: 2 }); // m2 arrived, its ack did not
    assert.deepEqual(second.take(), ['m3:m3', 'm4:m4', 'bin:m5:\x01\x02']);
    const [resumed] = events.named('resumed');
    assert.equal(resumed.resent, 1);
    assert.equal(events.named('open').length, 1); // only the first connect
    assert.equal(c.state, 'open');
    // The numbers go on.
    second.push(3, 'p3');
    c.send('m6');
    assert.deepEqual(events.named('message'), ['p1', 'p2', 'p3']);
    clock.tick(500);
    assert.deepEqual(second.take(), ['m6:m6', 'a3:']);
});

test('a resume the broker could not honour starts over: unconfirmed messages reported, unsent ones renumbered', () => {
    const { c, net, events } = connected();
    const first = net.last;
    first.push(1, 'p1');
    c.send('sent-1');
    c.send('sent-2');
    first.deliver('a1:');
    first.serverClose(1006);
    c.send('queued-3');
    c.send('queued-4');
    afterBackoff(events);
    const second = net.last;
    assert.equal(second.resume, '1');
    second.start({ resumed: false, accepted: 0 }); // the window had passed
    const opens = events.named('open');
    assert.equal(opens.length, 2);
    assert.deepEqual(opens[1].unconfirmed, ['sent-2']);
    assert.deepEqual(second.take(), ['m1:queued-3', 'm2:queued-4']);
    // The push counter starts again too.
    second.push(1, 'new p1');
    assert.deepEqual(events.named('message'), ['p1', 'new p1']);
    c.send('next');
    assert.deepEqual(second.take(), ['m3:next']);
});

test('messages sent before the first connect go out after the welcome, in order', () => {
    const { c, net } = client();
    c.send('early-1');
    c.send('early-2');
    c.connect();
    net.last.accept();
    c.send('early-3'); // still waiting for the welcome
    assert.deepEqual(net.last.take(), []);
    net.last.welcome();
    assert.deepEqual(net.last.take(), ['m1:early-1', 'm2:early-2', 'm3:early-3']);
});

test('a gap in the push numbers drops the socket and resumes from the last one received', () => {
    const { net, events } = connected();
    const first = net.last;
    first.push(1, 'p1');
    first.push(3, 'p3');
    assert.deepEqual(first.closedWith, { code: 4000, reason: 'sequence_gap' });
    assert.equal(events.named('reconnecting')[0].reason, 'sequence_gap');
    assert.deepEqual(events.named('message'), ['p1']);
    afterBackoff(events);
    assert.equal(net.last.resume, '1');
});

test('a frame outside the protocol, or no welcome first, drops the socket', () => {
    const { c, net, events } = connected();
    net.last.deliver('hello without a header');
    assert.equal(net.sockets[0].closedWith.reason, 'invalid_frame');
    afterBackoff(events);
    net.last.accept();
    net.last.deliver('m1:before the welcome');
    assert.equal(net.sockets[1].closedWith.reason, 'no_welcome');
    afterBackoff(events);
    net.last.start({ resumed: true });
    assert.equal(c.state, 'open');
});

test('heartbeats: h: every interval; any frame answers; silence past the timeout drops', () => {
    const { c, net, events } = connected({ heartbeatInterval: 1000, heartbeatTimeout: 300 });
    const s = net.last;
    clock.tick(1000);
    assert.deepEqual(s.take(), ['h:']);
    s.deliver('h:');
    clock.tick(1000);
    assert.deepEqual(s.take(), ['h:']);
    clock.tick(200);
    s.push(1, 'a push is an answer too');
    clock.tick(800);
    assert.deepEqual(s.take(), ['a1:', 'h:']);
    clock.tick(299);
    assert.equal(c.state, 'open');
    clock.tick(1);
    assert.equal(c.state, 'reconnecting');
    assert.deepEqual(s.closedWith, { code: 4000, reason: 'heartbeat_timeout' });
    assert.equal(events.named('reconnecting')[0].reason, 'heartbeat_timeout');
});

test('a connect that gets no welcome in time is abandoned and retried', () => {
    const { c, net, events } = client({ connectTimeout: 2000 });
    c.connect();
    net.last.accept();
    clock.tick(2000);
    assert.deepEqual(net.sockets[0].closedWith, { code: 4000, reason: 'connect_timeout' });
    assert.equal(events.named('reconnecting')[0].reason, 'connect_timeout');
    afterBackoff(events);
    assert.equal(net.sockets.length, 2);
    assert.equal(net.last.resume, null); // never welcomed: nothing to resume
});

test('reconnect delays grow with jitter within bounds, are capped, and reset after a welcome', () => {
    const { c, net, events } = client({ reconnectDelay: 100, maxReconnectDelay: 1000 });
    c.connect();
    for (let attempt = 1; attempt <= 8; attempt++) {
        net.last.serverClose(1013, 'overloaded');
        const r = events.named('reconnecting').pop();
        assert.equal(r.attempt, attempt);
        assert.equal(r.code, 1013);
        const ceiling = Math.min(1000, 100 * 2 ** (attempt - 1));
        assert.ok(r.delay >= ceiling / 2 && r.delay <= ceiling, `attempt ${attempt}: ${r.delay}`);
        clock.tick(r.delay);
    }
    net.last.start();
    net.last.serverClose(1012, 'broker_restarting');
    const r = events.named('reconnecting').pop();
    assert.equal(r.attempt, 1);
    assert.ok(r.delay >= 50 && r.delay <= 100);
    assert.equal(c.state, 'reconnecting');
});

test('maxReconnectAttempts: the client gives up and closes', () => {
    const { c, net, events } = client({ maxReconnectAttempts: 2 });
    c.connect();
    net.last.serverClose(1006);
    afterBackoff(events);
    net.last.serverClose(1006);
    afterBackoff(events);
    net.last.serverClose(1006, 'still down');
    assert.equal(c.state, 'closed');
    assert.deepEqual(events.named('close')[0].code, 1006);
    assert.equal(events.named('reconnecting').length, 2);
});

for (const [code, reason] of [
    [4409, 'replaced'],
    [4403, 'rejected'],
    [1000, ''],
    [4000, 'kicked by the business server'],
]) {
    test(`close ${code}: final, no reconnect`, () => {
        const { c, net, events } = connected();
        c.send('unacked');
        net.last.serverClose(code, reason);
        assert.equal(c.state, 'closed');
        const [close] = events.named('close');
        assert.equal(close.code, code);
        assert.equal(close.reason, reason);
        assert.deepEqual(close.unconfirmed, ['unacked']);
        clock.tick(60_000);
        assert.equal(net.sockets.length, 1);
        assert.deepEqual(events.named('reconnecting'), []);
        assert.equal(c.send('late'), false);
    });
}

for (const code of [1001, 1002, 1008, 1011, 1012, 1013, 1005, 3000]) {
    test(`close ${code}: reconnect with backoff, resuming`, () => {
        const { c, net, events } = connected();
        net.last.push(1, 'p');
        net.last.serverClose(code, 'x');
        assert.equal(events.named('reconnecting')[0].code, code);
        afterBackoff(events);
        assert.equal(net.last.resume, '1');
        assert.equal(c.state, 'connecting');
    });
}

for (const code of [4401, 4408]) {
    test(`close ${code}: a new URL from getConnectUrl, a new tunnel (no resume)`, async () => {
        const urls = ['wss://b/v1/connect?token=second'];
        let asked = 0;
        const { c, net, events } = connected({
            getConnectUrl: () => {
                asked++;
                return Promise.resolve(urls.shift());
            },
        });
        net.last.push(1, 'p');
        c.send('sent');
        net.last.serverClose(code, code === 4401 ? 'token_invalid' : 'token_expired');
        c.send('queued');
        assert.equal(asked, 0);
        afterBackoff(events);
        await flush();
        assert.equal(asked, 1);
        assert.equal(net.last.url, 'wss://b/v1/connect?token=second');
        net.last.start({ tunnel_id: 't2' });
        const open = events.named('open').pop();
        assert.equal(open.tunnelId, 't2');
        assert.deepEqual(open.unconfirmed, ['sent']);
        assert.deepEqual(net.last.take(), ['m1:queued']);
        assert.equal(c.tunnelId, 't2');
    });

    test(`close ${code} without getConnectUrl: final`, () => {
        const { c, net, events } = connected();
        net.last.serverClose(code, 'token');
        assert.equal(c.state, 'closed');
        assert.equal(events.named('close')[0].code, code);
    });
}

test('close 4410: the tunnel ended; the same URL again, without resume', () => {
    const { net, events } = connected();
    net.last.push(1, 'p');
    net.last.serverClose(4410, 'resume_buffer_full');
    afterBackoff(events);
    assert.equal(net.last.url, URL);
    net.last.start({ resumed: false });
    assert.equal(events.named('open').length, 2);
});

test('close 4410 with getConnectUrl: asks for a new URL', async () => {
    const { net, events } = connected({ getConnectUrl: () => 'wss://b/v1/connect?token=fresh' });
    net.last.serverClose(4410, 'resume_buffer_full');
    afterBackoff(events);
    await flush();
    assert.equal(net.last.url, 'wss://b/v1/connect?token=fresh');
});

test('no url: getConnectUrl gives the first; a failure is retried with backoff', async () => {
    let calls = 0;
    const net = fakeNetwork();
    const c = new TunnelClient({
        WebSocket: net.WebSocket,
        wx: null,
        getConnectUrl: () => {
            calls++;
            return calls === 1 ? Promise.reject(new Error('business server down')) : 'wss://b/c?token=1';
        },
    });
    const events = record(c);
    c.connect();
    await flush();
    assert.equal(events.named('error')[0].message, 'business server down');
    assert.equal(events.named('reconnecting')[0].reason, 'connect_url_failed');
    assert.equal(net.sockets.length, 0);
    afterBackoff(events);
    await flush();
    assert.equal(net.last.url, 'wss://b/c?token=1');
    net.last.start();
    assert.equal(c.state, 'open');
});

test('a late URL after close() is not used', async () => {
    let resolve;
    const net = fakeNetwork();
    const c = new TunnelClient({
        WebSocket: net.WebSocket,
        wx: null,
        getConnectUrl: () => new Promise((r) => (resolve = r)),
    });
    c.connect();
    await flush();
    c.close();
    resolve('wss://b/c?token=late');
    await flush();
    assert.equal(net.sockets.length, 0);
});

test('the offline queue is bounded: send returns false beyond queueLimit', () => {
    const { c, net, events } = connected({ queueLimit: 3 });
    net.last.serverClose(1006);
    assert.equal(c.send('1'), true);
    assert.equal(c.send('2'), true);
    assert.equal(c.send('3'), true);
    assert.equal(c.send('4'), false);
    assert.equal(c.pendingCount, 3);
    afterBackoff(events);
    net.last.start({ resumed: true });
    assert.deepEqual(net.last.take(), ['m1:1', 'm2:2', 'm3:3']);
    assert.equal(c.send('4'), false); // sent but not yet acknowledged: still counted
    net.last.deliver('a2:');
    assert.equal(c.send('4'), true);
    assert.deepEqual(net.last.take(), ['m4:4']);
});

test('close() by the app: 1000, no reconnect, what was not acknowledged reported', () => {
    const { c, net, events } = connected();
    const s = net.last;
    c.send('sent');
    s.serverClose(1006);
    c.send('unsent');
    afterBackoff(events);
    net.last.accept();
    c.close();
    assert.deepEqual(net.last.closedWith, { code: 1000, reason: '' });
    const [close] = events.named('close');
    assert.deepEqual(close, { code: 1000, reason: '', unconfirmed: ['sent'], unsent: ['unsent'] });
    net.last.welcome(); // late frames of the closed socket are ignored
    net.last.serverClose(1006);
    clock.tick(60_000);
    assert.equal(net.sockets.length, 2);
    assert.equal(c.state, 'closed');
    assert.equal(events.named('close').length, 1);
    c.close(); // twice: nothing
    assert.throws(() => c.connect(), /closed/);
});

test('events of a socket given up on are ignored, even a 4409 it gets later', () => {
    const { c, net, events } = connected({ heartbeatInterval: 100, heartbeatTimeout: 100 });
    const old = net.last;
    clock.tick(200); // heartbeat unanswered: dropped
    assert.equal(old.closedWith.reason, 'heartbeat_timeout');
    afterBackoff(events);
    net.last.start({ resumed: true });
    old.push(1, 'stale'); // late frames of the old socket
    old.serverClose(4409, 'replaced'); // the resume took it over
    assert.equal(c.state, 'open');
    assert.deepEqual(events.named('message'), []);
    assert.deepEqual(events.named('close'), []);
});

test('a 4409 soon after a connect was abandoned mid-handshake resumes instead of stopping', () => {
    const { c, net, events } = connected({ connectTimeout: 1000 });
    net.last.serverClose(1006);
    afterBackoff(events);
    const slow = net.last; // its handshake reaches the broker late
    clock.tick(1000);
    assert.equal(slow.closedWith.reason, 'connect_timeout');
    afterBackoff(events);
    net.last.start({ resumed: true });
    // The broker completes the abandoned handshake now: a takeover of our newer socket.
    slow.accept();
    assert.deepEqual(slow.closedWith, { code: 4000, reason: 'abandoned' });
    net.last.serverClose(4409, 'replaced');
    assert.equal(c.state, 'reconnecting');
    afterBackoff(events);
    net.last.start({ resumed: true });
    assert.equal(c.state, 'open');
    // Long after, a 4409 is another client's takeover again.
    clock.tick(5000);
    net.last.serverClose(4409, 'replaced');
    assert.equal(c.state, 'closed');
});

test('a socket error: the close that follows decides; without one the socket counts as dropped', () => {
    const { c, net, events } = connected();
    net.last.error('network lost');
    assert.equal(events.named('error')[0].message, 'network lost');
    net.last.serverClose(4409, 'replaced');
    assert.equal(c.state, 'closed');

    const second = connected();
    second.net.last.error('no close follows');
    assert.equal(second.c.state, 'open');
    clock.tick(1000);
    assert.equal(second.c.state, 'reconnecting');
    assert.equal(second.events.named('reconnecting')[0].reason, 'socket_error');
});

test('a listener that throws does not break the protocol; the error surfaces later', () => {
    const { c, net, events } = connected();
    c.on('message', (m) => {
        if (m === 'bad') throw new Error('listener failed');
    });
    net.last.push(1, 'bad');
    net.last.push(2, 'good');
    assert.deepEqual(events.named('message'), ['bad', 'good']);
    assert.throws(() => clock.tick(0), /listener failed/);
    clock.tick(500);
    assert.deepEqual(net.last.take(), ['a2:']);
});

test('off() removes a listener', () => {
    const { c, net } = connected();
    const seen = [];
    const listener = (m) => seen.push(m);
    c.on('message', listener);
    net.last.push(1, 'one');
    c.off('message', listener);
    net.last.push(2, 'two');
    assert.deepEqual(seen, ['one']);
});

test('wake(): reconnects at once when waiting, probes with a heartbeat when open', () => {
    const { c, net, events } = connected({ heartbeatTimeout: 500, reconnectDelay: 10_000 });
    c.wake();
    assert.deepEqual(net.last.take(), ['h:']);
    clock.tick(500);
    assert.equal(c.state, 'reconnecting'); // no answer
    assert.ok(events.named('reconnecting')[0].delay >= 5000);
    c.wake();
    assert.equal(net.sockets.length, 2);
    assert.equal(c.state, 'connecting');
});

test('option checks', () => {
    assert.throws(() => new TunnelClient({ WebSocket: fakeNetwork().WebSocket }), /url or a getConnectUrl/);
    assert.throws(() => new TunnelClient({ url: URL, wx: null }), /no WebSocket/);
    assert.throws(() => TunnelClient({ url: URL }), /new TunnelClient/);
});

// ---- WeChat ------------------------------------------------------------------------------

test('wx: connectSocket with the subprotocol; text and ArrayBuffer frames both ways', () => {
    const wx = fakeWx();
    const c = new TunnelClient({ url: URL, wx });
    const events = record(c);
    c.connect();
    const s = wx.last;
    assert.deepEqual(wx.connectOptions[0].protocols, ['tb.reliable.v1']);
    s.start();
    assert.equal(events.named('open').length, 1);
    s.push(1, 'text');
    s.push(2, Buffer.from('bytes'));
    const [text, bytes] = events.named('message');
    assert.equal(text, 'text');
    assert.equal(Buffer.from(bytes).toString(), 'bytes');
    c.send('up');
    c.send(new Uint8Array([1, 2, 3]));
    assert.equal(s.sent[0], 'm1:up');
    assert.ok(s.sent[1] instanceof ArrayBuffer); // wx sends binary only as an ArrayBuffer
    assert.deepEqual([...new Uint8Array(s.sent[1])], [0x6d, 0x32, 0x3a, 1, 2, 3]);
    s.serverClose(4409, 'replaced');
    assert.equal(events.named('close')[0].code, 4409);
});

test('wx: onAppShow and a network back reconnect at once; listeners removed on close', () => {
    const wx = fakeWx();
    const c = new TunnelClient({ url: URL, wx, reconnectDelay: 60_000 });
    const events = record(c);
    c.connect();
    wx.last.start();
    wx.last.serverClose(1006);
    assert.equal(c.state, 'reconnecting');
    wx.networkChange(false); // still offline: keep waiting
    assert.equal(wx.sockets.length, 1);
    wx.networkChange(true);
    assert.equal(wx.sockets.length, 2);
    assert.equal(wx.last.resume, '0');
    wx.last.serverClose(1006);
    wx.showApp();
    assert.equal(wx.sockets.length, 3);
    wx.last.start({ resumed: true });
    wx.showApp(); // open: a heartbeat checks the socket
    assert.deepEqual(wx.last.take(), ['h:']);
    assert.equal(events.named('resumed').length, 1);
    c.close();
    assert.deepEqual(wx.listeners, { appShow: [], network: [] });
});

test('wx: connectSocket failing (fail callback, no close) is retried', () => {
    const wx = fakeWx();
    const c = new TunnelClient({ url: URL, wx });
    const events = record(c);
    c.connect();
    wx.last.error('connectSocket:fail url not in domain list');
    clock.tick(1000);
    assert.equal(events.named('reconnecting')[0].reason, 'socket_error');
    afterBackoff(events);
    assert.equal(wx.sockets.length, 2);
});

test('watchSystemEvents: false leaves wx alone', () => {
    const wx = fakeWx();
    new TunnelClient({ url: URL, wx, watchSystemEvents: false }).connect();
    assert.deepEqual(wx.listeners, { appShow: [], network: [] });
});
