'use strict';
// The pure parts: frame parsing and encoding, the close-code policy, the backoff.

const { test } = require('node:test');
const assert = require('node:assert/strict');

const { parseFrame, encodeMessage, closeAction, backoffDelay } = require('../lib/index.js');

const bytes = (text) => Uint8Array.from(Buffer.from(text, 'latin1')).buffer;

test('parseFrame: the broker frames, text and binary', () => {
    assert.deepEqual(parseFrame('w:{"a":1}'), { kind: 'w', seq: 0, payload: '{"a":1}' });
    assert.deepEqual(parseFrame('m1:hello'), { kind: 'm', seq: 1, payload: 'hello' });
    assert.deepEqual(parseFrame('m12:'), { kind: 'm', seq: 12, payload: '' });
    assert.deepEqual(parseFrame('m3:a:b:c'), { kind: 'm', seq: 3, payload: 'a:b:c' });
    assert.deepEqual(parseFrame('a0:'), { kind: 'a', seq: 0, payload: '' });
    assert.deepEqual(parseFrame('a9007199254740991:'), { kind: 'a', seq: 9007199254740991, payload: '' });
    assert.deepEqual(parseFrame('h:'), { kind: 'h', seq: 0, payload: '' });
    const binary = parseFrame(bytes('m42:\x00\xff:'));
    assert.equal(binary.kind, 'm');
    assert.equal(binary.seq, 42);
    assert.ok(binary.payload instanceof ArrayBuffer);
    assert.deepEqual([...new Uint8Array(binary.payload)], [0, 255, 58]);
    // A view into a larger buffer: only its bytes count.
    const big = new Uint8Array(bytes('xxm7:abyy'));
    const view = parseFrame(big.subarray(2, 7));
    assert.equal(view.seq, 7);
    assert.equal(Buffer.from(view.payload).toString(), 'ab');
});

test('parseFrame: anything else is not a frame', () => {
    for (const bad of [
        '',
        'hello',
        ':x',
        'm:no number',
        'm01:leading zero',
        'm0:numbered from 1',
        'm-1:x',
        'm1.5:x',
        'm 1:x',
        'm99999999999999999:seventeen digits',
        'm9007199254740992:beyond 2^53-1',
        'a5:something after',
        'h1:',
        'h:x',
        'w1:{}',
        'x1:',
        'm1' + 'x'.repeat(40) + ':colon too far',
    ]) {
        assert.equal(parseFrame(bad), null, bad);
    }
    assert.equal(parseFrame(bytes('a1:')), null); // only messages are binary
    assert.equal(parseFrame(bytes('w:{}')), null);
    assert.equal(parseFrame(bytes('no colon at all')), null);
    assert.equal(parseFrame(42), null);
});

test('encodeMessage: the header as ASCII before text or bytes', () => {
    assert.equal(encodeMessage(1, 'hi'), 'm1:hi');
    assert.equal(encodeMessage(9007199254740991, ''), 'm9007199254740991:');
    const frame = encodeMessage(12, Uint8Array.from([0, 58, 255]).buffer);
    assert.ok(frame instanceof ArrayBuffer);
    assert.deepEqual([...new Uint8Array(frame)], [0x6d, 0x31, 0x32, 0x3a, 0, 58, 255]);
    assert.deepEqual(parseFrame(frame).seq, 12);
});

test('closeAction: the close-code policy of docs/api.md', () => {
    const expected = {
        1000: 'stop',
        4403: 'stop',
        4409: 'stop',
        4000: 'stop',
        4999: 'stop',
        4401: 'refresh',
        4408: 'refresh',
        4410: 'restart',
        1001: 'resume',
        1002: 'resume',
        1005: 'resume',
        1006: 'resume',
        1008: 'resume',
        1009: 'resume',
        1011: 'resume',
        1012: 'resume',
        1013: 'resume',
        3000: 'resume',
    };
    for (const [code, action] of Object.entries(expected)) {
        assert.equal(closeAction(Number(code)), action, code);
    }
});

test('backoffDelay: exponential ceiling, capped, equal jitter within [ceiling/2, ceiling]', () => {
    assert.equal(backoffDelay(1, 500, 30000, () => 0), 250);
    assert.equal(backoffDelay(1, 500, 30000, () => 1), 500);
    assert.equal(backoffDelay(2, 500, 30000, () => 0), 500);
    assert.equal(backoffDelay(3, 500, 30000, () => 0.5), 1500);
    assert.equal(backoffDelay(7, 500, 30000, () => 1), 30000); // 32000 capped
    assert.equal(backoffDelay(1000, 500, 30000, () => 0), 15000); // no overflow
    for (let attempt = 1; attempt <= 10; attempt++) {
        const ceiling = Math.min(30000, 500 * 2 ** (attempt - 1));
        const delays = [];
        for (let i = 0; i < 2000; i++) delays.push(backoffDelay(attempt, 500, 30000));
        const low = Math.min(...delays);
        const high = Math.max(...delays);
        assert.ok(low >= ceiling / 2 && high <= ceiling, `attempt ${attempt}: ${low}..${high}`);
        // Spread over the range: clients closed together do not come back together.
        assert.ok(low < ceiling * 0.55 && high > ceiling * 0.95, `attempt ${attempt}: ${low}..${high}`);
    }
});
