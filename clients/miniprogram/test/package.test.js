'use strict';
// What the shipped file promises: ES2015 script syntax, no dependencies, the entries the
// WeChat npm build and Node read, and a global for a browser <script>.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');

const ROOT = path.join(__dirname, '..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const source = fs.readFileSync(path.join(ROOT, pkg.main), 'utf8');

test('the shipped file is an ES2015 script (no modules, no later syntax)', () => {
    const acorn = require('acorn');
    acorn.parse(source, { ecmaVersion: 2015, sourceType: 'script' });
    // And a later feature is caught, to show the check checks.
    assert.throws(() => acorn.parse('async function f() {}', { ecmaVersion: 2015, sourceType: 'script' }));
    assert.throws(() => acorn.parse('var a = {...b};', { ecmaVersion: 2015, sourceType: 'script' }));
});

test('package.json: main, miniprogram and types entries exist; no runtime dependencies', () => {
    assert.equal(pkg.dependencies, undefined);
    assert.equal(pkg.peerDependencies, undefined);
    assert.ok(fs.statSync(path.join(ROOT, pkg.main)).isFile());
    assert.ok(fs.statSync(path.join(ROOT, pkg.types)).isFile());
    // The WeChat build copies the `miniprogram` directory; require('pkg') takes its index.js.
    const built = path.join(ROOT, pkg.miniprogram, 'index.js');
    assert.equal(fs.readFileSync(built, 'utf8'), source);
    for (const file of [pkg.main, pkg.types]) assert.ok(pkg.files.includes(file), file);
});

test('CommonJS first, even where a define() exists (WeChat has both)', () => {
    const module = { exports: {} };
    const define = () => assert.fail('define() used instead of module.exports');
    define.amd = true;
    vm.runInNewContext(source, { module, exports: module.exports, define });
    assert.equal(typeof module.exports.TunnelClient, 'function');
    assert.equal(module.exports.SUBPROTOCOL, 'tb.reliable.v1');
});

test('a <script> tag gets the global TunnelBrokerClient', () => {
    const context = { WebSocket: function () {} };
    vm.runInNewContext(source, context);
    assert.equal(typeof context.TunnelBrokerClient.TunnelClient, 'function');
    const client = new context.TunnelBrokerClient.TunnelClient({ url: 'wss://x/v1/connect?token=t' });
    assert.equal(client.state, 'idle');
});

test('an AMD loader gets the module', () => {
    let defined = null;
    const define = (deps, factory) => (defined = factory());
    define.amd = true;
    vm.runInNewContext(source, { define });
    assert.equal(typeof defined.TunnelClient, 'function');
});

test('the README documents every option and event the library has', () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const defaults = /var DEFAULTS = \{([\s\S]*?)\};/.exec(source)[1];
    const options = [...defaults.matchAll(/^\s*(\w+):/gm)].map((m) => m[1]);
    assert.ok(options.length >= 10);
    for (const option of options) assert.ok(readme.includes('`' + option + '`'), option);
    for (const event of ['open', 'resumed', 'message', 'reconnecting', 'close', 'error']) {
        assert.ok(readme.includes("`'" + event + "'`") || readme.includes('`' + event + '`'), event);
    }
});
