'use strict';
// lib/index.d.ts is hand-written: compile an app's use of it (test/types/usage.ts) with
// TypeScript in strict mode, against the DOM's WebSocket too.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { spawnSync } = require('node:child_process');
const path = require('node:path');

test('the declarations compile an app and refuse its mistakes', () => {
    const tsc = require.resolve('typescript/bin/tsc');
    const project = path.join(__dirname, 'types'); // tsconfig.json: strict, ES2015 + DOM, no @types
    const result = spawnSync(process.execPath, [tsc, '--project', project], { encoding: 'utf8' });
    assert.equal(result.status, 0, result.stdout + result.stderr);
});
