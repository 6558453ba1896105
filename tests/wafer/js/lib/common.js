'use strict';
// Shared plumbing of the Node programs: JSON lines out, settings from env/argv, JSON-line
// commands on stdin.

function safeJson(x) {
    try { return JSON.stringify(x); } catch (e) { return JSON.stringify(String(x)); }
}

function out(obj) {
    process.stdout.write(safeJson(obj) + '\n');
}

// Keep stdout for JSON lines only (the SDKs and frameworks may log).
function quietConsole() {
    for (const k of ['log', 'info', 'warn', 'error', 'debug']) {
        console[k] = (...a) => process.stderr.write(a.map(x => (typeof x === 'string' ? x : safeJson(x))).join(' ') + '\n');
    }
}

// NAME from `--name value` (lowercase, '_' -> '-') or from the environment.
function setting(name, opts) {
    opts = opts || {};
    const flag = '--' + name.toLowerCase().replace(/_/g, '-');
    const argv = process.argv;
    const i = argv.indexOf(flag);
    let v;
    if (i >= 0 && i + 1 < argv.length) v = argv[i + 1];
    else if (process.env[name] !== undefined) v = process.env[name];
    else v = opts.default;
    if (opts.required && (v === undefined || v === '')) {
        process.stderr.write(`missing setting ${name} (env ${name} or ${flag})\n`);
        process.exit(2);
    }
    return v;
}

// Calls onLine(line) for each line of stdin, then onEnd() when stdin ends.
function readLines(onLine, onEnd) {
    let buf = '';
    process.stdin.setEncoding('utf8');
    process.stdin.on('data', chunk => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
            const line = buf.slice(0, i);
            buf = buf.slice(i + 1);
            onLine(line);
        }
    });
    process.stdin.on('end', () => {
        if (buf.trim()) onLine(buf);
        onEnd();
    });
}

// handlers: {cmd: (command) => value | Promise<value>}; replies {"reply","id","ok","result"|"error"}.
function stdinCommands(handlers) {
    const dispatch = line => {
        line = line.trim();
        if (!line) return;
        let c;
        try { c = JSON.parse(line); } catch (e) { out({ reply: null, ok: false, error: { message: `not JSON: ${line}` } }); return; }
        const reply = (ok, v) => {
            const r = { reply: c.cmd, ok };
            if (c.id !== undefined) r.id = c.id;
            if (ok) r.result = v === undefined ? null : v;
            else r.error = { message: v && v.message !== undefined ? v.message : String(v) };
            out(r);
        };
        const h = handlers[c.cmd];
        if (!h) return reply(false, new Error(`unknown cmd ${c.cmd}`));
        Promise.resolve().then(() => h(c)).then(v => reply(true, v), e => reply(false, e));
    };
    // Exit when the controlling process closes our stdin pipe (it died or is done); stdin
    // from /dev/null or a terminal does not end the server.
    let isPipe = false;
    try { isPipe = require('fs').fstatSync(0).isFIFO(); } catch (e) { /* no stdin */ }
    readLines(dispatch, () => {
        if (isPipe) setTimeout(() => process.exit(0), 50);
    });
}

module.exports = { out, safeJson, setting, stdinCommands, readLines, quietConsole };
