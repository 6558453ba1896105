// The live trace: the app's events, pushes and webhook deliveries as they happen, read
// from GET /v1/trace (text/event-stream) with fetch. Newest on top, at most MAX entries;
// pausing keeps reading but holds new entries back until resumed.

import { stream, query } from './api.js';
import { h, clock, int, replace, nextId, badge } from './dom.js';
import { deliveryFailed } from './shared.js';

export const MAX = 200;
const RETRY_MS = 2000;

function describe(r) {
  const bits = [];
  const item = (label, v) => {
    if (v === undefined || v === null || v === '') return;
    bits.push(h('span', null, h('span', { class: 'muted' }, `${label} `), h('code', null, typeof v === 'object' ? JSON.stringify(v) : String(v))));
  };
  if (r.kind === 'event') {
    bits.push(h('strong', null, r.type || 'event'));
    item('tunnel', r.tunnel_id);
    item('user', r.user_id);
    if (r.size !== undefined) item('size', `${int(r.size)} B`);
    if (r.code !== undefined && r.code !== null) item('code', r.code);
    if (r.reason) item('reason', r.reason);
  } else if (r.kind === 'push') {
    bits.push(h('strong', null, `push via ${r.via || '?'}`));
    item('to', r.target);
    if (r.size !== undefined) item('size', `${int(r.size)} B`);
  } else if (r.kind === 'delivery') {
    const failed = deliveryFailed(r);
    bits.push(badge(failed ? `failed: ${r.outcome || 'error'}` : r.outcome || 'ok', failed ? 'bad' : 'ok'));
    item('status', r.status);
    if (r.latency_ms !== undefined && r.latency_ms !== null) item('latency', `${int(Math.round(r.latency_ms))} ms`);
    item('events', r.events);
    item('attempt', r.attempt);
    item('error', r.error);
  } else if (r.kind === 'dropped') {
    bits.push(h('strong', null, `${int(r.count)} record${r.count === 1 ? '' : 's'} left out`));
    item('why', r.why === 'rate' ? 'too many per second (the trace is sampled)' : r.why === 'slow_reader' ? 'this page read too slowly' : r.why);
  } else {
    bits.push(h('strong', null, r.kind || 'record'));
  }
  return bits;
}

function entry(r) {
  const failed = r.kind === 'delivery' && deliveryFailed(r);
  const li = h('li', {
    class: ['fresh', `kind-${r.kind}`, failed ? 'failed' : null],
    dataset: { kind: r.kind || '', tunnel: r.tunnel_id || '', user: r.user_id || '', type: r.type || '' },
  },
  h('time', { datetime: r.at || '' }, r.at ? clock(r.at) : ''),
  h('span', null, badge(r.kind || '?', r.kind || 'neutral')),
  h('div', { class: 'what' }, describe(r)));
  const cut = r.truncated ? ' … (truncated)' : '';
  if (r.data !== undefined && r.data !== null) {
    li.append(h('pre', { class: 'payload' }, (typeof r.data === 'string' ? r.data : JSON.stringify(r.data)) + cut));
  } else if (r.data_base64) {
    li.append(h('pre', { class: 'payload' }, `binary, base64: ${r.data_base64}${cut}`));
  }
  return li;
}

export function traceView(container) {
  const tunnelId = nextId('trace-tunnel');
  const userId = nextId('trace-user');
  const tunnel = h('input', { id: tunnelId, name: 'tunnel_id', autocomplete: 'off', spellcheck: 'false', placeholder: 'any' });
  const user = h('input', { id: userId, name: 'user_id', autocomplete: 'off', spellcheck: 'false', placeholder: 'any' });
  const apply = h('button', { type: 'submit', id: 'trace-apply' }, 'Apply filter');
  const pause = h('button', { type: 'button', class: 'secondary', id: 'trace-pause', 'aria-pressed': 'false' }, 'Pause');
  const clearBtn = h('button', { type: 'button', class: 'secondary', id: 'trace-clear' }, 'Clear');
  const dot = h('span', { class: 'status-dot', 'aria-hidden': 'true' });
  const statusText = h('span', null, 'Connecting…');
  const status = h('p', { id: 'trace-status', role: 'status' }, dot, statusText);
  const counter = h('p', { class: 'muted small', id: 'trace-count', 'aria-live': 'off' });
  const list = h('ol', { class: 'trace', id: 'trace-list', 'aria-label': 'Trace records, newest first', 'aria-live': 'off' });
  const form = h('form', { class: 'trace-controls', id: 'trace-filter', novalidate: true },
    h('div', { class: 'field' }, h('label', { for: tunnelId }, 'Tunnel id'), tunnel),
    h('div', { class: 'field' }, h('label', { for: userId }, 'User id'), user),
    apply, pause, clearBtn);

  let received = 0;
  let held = [];
  let paused = false;
  let controller = null;
  let stopped = false;
  let retryTimer = null;
  let generation = 0;

  const setStatus = (kind, text) => {
    dot.className = `status-dot ${kind}`;
    statusText.textContent = text;
    status.dataset.state = kind;
  };
  const count = () => {
    counter.textContent = `${int(received)} received · ${int(list.children.length)} shown (at most ${MAX})${held.length ? ` · ${int(held.length)} held while paused` : ''}`;
  };
  const add = (records) => {
    for (const r of records) list.prepend(entry(r));
    while (list.children.length > MAX) list.lastElementChild.remove();
    count();
  };
  const onRecord = (r) => {
    received += 1;
    if (paused) {
      held.push(r);
      if (held.length > MAX) held = held.slice(-MAX);
      count();
    } else {
      add([r]);
    }
  };

  const filters = () => ({ tunnel_id: tunnel.value.trim(), user_id: user.value.trim() });
  const describeFilter = () => {
    const f = filters();
    const parts = [f.tunnel_id && `tunnel ${f.tunnel_id}`, f.user_id && `user ${f.user_id}`].filter(Boolean);
    return parts.length ? ` (only ${parts.join(', ')})` : '';
  };

  async function connect() {
    const mine = ++generation;
    clearTimeout(retryTimer);
    if (controller) controller.abort();
    controller = new AbortController();
    setStatus('', 'Connecting…');
    try {
      await stream(`/v1/trace${query(filters())}`, {
        signal: controller.signal,
        onOpen: () => { if (mine === generation) setStatus(paused ? 'paused' : 'live', `${paused ? 'Paused' : 'Live'}${describeFilter()}`); },
        onRecord: (r) => { if (mine === generation) onRecord(r); },
      });
      if (mine !== generation || stopped) return;
      setStatus('error', `The broker ended the stream; reconnecting in ${RETRY_MS / 1000} s…`);
    } catch (err) {
      if (mine !== generation || stopped || (err && err.name === 'AbortError')) return;
      if (err.status === 401) return; // signed out already
      if (err.status >= 400 && err.status < 500 && err.status !== 429) {
        setStatus('error', `${err.message}. Change the filter and apply it again.`);
        return; // the same request would be refused again
      }
      setStatus('error', `${err.message}; reconnecting in ${RETRY_MS / 1000} s…`);
    }
    retryTimer = setTimeout(() => { if (!stopped && mine === generation) connect(); }, RETRY_MS);
  }

  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    replace(list);
    held = [];
    connect();
  });
  pause.addEventListener('click', () => {
    paused = !paused;
    pause.setAttribute('aria-pressed', String(paused));
    pause.textContent = paused ? 'Resume' : 'Pause';
    if (!paused && held.length) {
      add(held);
      held = [];
    }
    if (status.dataset.state === 'live' || status.dataset.state === 'paused') {
      setStatus(paused ? 'paused' : 'live', `${paused ? 'Paused' : 'Live'}${describeFilter()}`);
    }
    count();
  });
  clearBtn.addEventListener('click', () => {
    replace(list);
    held = [];
    count();
  });

  replace(container,
    h('h1', null, 'Live trace'),
    h('p', { class: 'muted' }, 'Events of your tunnels and the pushes of your business server as the broker sees them, and each webhook request. Payloads appear only if the operator turned them on for this app (truncated and redacted).'),
    h('section', { class: 'card' }, form, status, counter, list));
  count();
  connect();
  return () => {
    stopped = true;
    clearTimeout(retryTimer);
    if (controller) controller.abort();
  };
}
