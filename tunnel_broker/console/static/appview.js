// The app's own views (signed in with its API key): usage, open tunnels, webhook
// deliveries, the live trace, its settings and key rotation.

import { get, api, query, replaceKey, session } from './api.js';
import { h, int, time, replace, table, errorBox, loading, badge, every, nextId, flash, duration } from './dom.js';
import { confirm, showSecrets, overlapControl } from './dialogs.js';
import { usagePanel } from './usage.js';
import { appDetails, keyTable, deliveryFailed } from './shared.js';
import { traceView } from './trace.js';

function usageView(container) {
  const box = h('div');
  replace(container, h('h1', null, `Usage of ${session().name}`), box);
  return usagePanel(box, ({ from, to }) => get(`/v1/usage${query({ from, to })}`));
}

function compact(v) {
  if (v === undefined || v === null) return '—';
  const text = typeof v === 'string' ? v : JSON.stringify(v);
  return text.length > 120 ? `${text.slice(0, 119)}…` : text;
}

function tunnelsView(container) {
  const sizeId = nextId('size');
  const size = h('select', { id: sizeId }, [25, 50, 100].map((n) => h('option', { value: String(n) }, String(n))));
  const body = h('div', null, loading());
  const prev = h('button', { type: 'button', class: 'secondary', id: 'tunnels-prev' }, '← Previous page');
  const next = h('button', { type: 'button', class: 'secondary', id: 'tunnels-next' }, 'Next page →');
  const where = h('span', { class: 'muted', role: 'status' });
  const cursors = [null]; // cursors[i]: where page i starts
  let page = 0;
  let nextCursor = null;
  const render = async () => {
    try {
      const data = await get(`/v1/tunnels${query({ limit: size.value, cursor: cursors[page] })}`);
      nextCursor = data.next_cursor || null;
      const rows = data.tunnels || [];
      const users = new Set(rows.map((t) => t.user_id));
      replace(body, table({
        id: 'tunnels-table',
        caption: `${rows.length} tunnel${rows.length === 1 ? '' : 's'} on this page, ${users.size} user${users.size === 1 ? '' : 's'}`,
        rows,
        empty: 'No open tunnels.',
        rowAttrs: (t) => ({ 'data-tunnel': t.tunnel_id }),
        columns: [
          { label: 'Tunnel', cell: (t) => h('code', null, t.tunnel_id) },
          { label: 'User', cell: (t) => t.user_id },
          { label: 'Identity', cell: (t) => h('code', { class: 'small' }, compact(t.identity)) },
          { label: 'Groups', cell: (t) => (t.groups && t.groups.length ? t.groups.join(', ') : '—') },
          { label: 'Connected', cell: (t) => time(t.connected_at) },
          { label: 'Pod', cell: (t) => h('span', { class: 'mono small' }, t.node_id || '—') },
          { label: 'State', cell: (t) => t.state || '—' },
        ],
      }));
      where.textContent = `Page ${page + 1}`;
      prev.disabled = page === 0;
      next.disabled = !nextCursor;
    } catch (err) {
      replace(body, errorBox(err));
    }
  };
  prev.addEventListener('click', () => { if (page > 0) { page -= 1; render(); } });
  next.addEventListener('click', () => {
    if (!nextCursor) return;
    cursors[page + 1] = nextCursor;
    page += 1;
    render();
  });
  size.addEventListener('change', () => { cursors.length = 1; page = 0; render(); });
  replace(container,
    h('div', { class: 'row spread' }, h('h1', null, 'Open tunnels and presence'),
      h('div', { class: 'row' }, h('label', { for: sizeId }, 'Per page'), size,
        h('button', { type: 'button', class: 'secondary', onclick: render }, 'Refresh'))),
    body,
    h('div', { class: 'row' }, prev, where, next));
  render();
  return every(10000, render);
}

function deliveriesView(container) {
  const body = h('div', null, loading());
  const render = async () => {
    try {
      const data = await get(`/v1/webhooks/deliveries${query({ limit: 100 })}`);
      const rows = data.deliveries || [];
      const failed = rows.filter(deliveryFailed).length;
      replace(body,
        h('p', { id: 'deliveries-summary' }, failed
          ? badge(`${failed} of ${rows.length} failed`, 'bad')
          : badge(`${rows.length} deliveries, none failed`, 'ok')),
        table({
          id: 'deliveries-table',
          caption: 'Newest first; failed attempts are highlighted',
          rows,
          empty: 'No webhook requests yet.',
          rowClass: (d) => (deliveryFailed(d) ? 'failed' : null),
          columns: [
            { label: 'When', cell: (d) => time(d.at) },
            { label: 'Result', cell: (d) => badge(deliveryFailed(d) ? `failed: ${d.outcome || 'error'}` : d.outcome || 'ok', deliveryFailed(d) ? 'bad' : 'ok') },
            { label: 'HTTP status', num: true, cell: (d) => (d.status === null || d.status === undefined ? '—' : String(d.status)) },
            { label: 'Latency', num: true, cell: (d) => (d.latency_ms === null || d.latency_ms === undefined ? '—' : `${int(Math.round(d.latency_ms))} ms`) },
            { label: 'Events', num: true, cell: (d) => int(d.events) },
            { label: 'Attempt', num: true, cell: (d) => int(d.attempt) },
            { label: 'Error', cell: (d) => d.error || '' },
          ],
        }));
    } catch (err) {
      replace(body, errorBox(err));
    }
  };
  replace(container,
    h('div', { class: 'row spread' }, h('h1', null, 'Webhook deliveries'),
      h('button', { type: 'button', class: 'secondary', onclick: render }, 'Refresh')),
    body);
  render();
  return every(5000, render);
}

async function keysView(container) {
  replace(container, h('h1', null, 'Settings and keys'), loading());
  const show = (app) => {
    replace(container,
      h('div', { class: 'row spread' }, h('h1', null, `App ${app.id}`),
        h('button', { type: 'button', id: 'rotate-key-btn', onclick: () => rotate(app, show) }, 'Rotate API key')),
      h('section', { class: 'card', 'aria-labelledby': 'keys-h' }, h('h2', { id: 'keys-h' }, 'API keys and webhook secrets'), keyTable(app)),
      h('section', { class: 'card', 'aria-labelledby': 'details-h' }, h('h2', { id: 'details-h' }, 'Settings'), appDetails(app),
        h('p', { class: 'muted small' }, 'Limits, quotas and the trace-payloads switch are set by the broker\'s operator.')));
  };
  try {
    show(await get('/v1/app'));
  } catch (err) {
    replace(container, h('h1', null, 'Settings and keys'), errorBox(err));
  }
}

async function rotate(app, show) {
  const overlap = overlapControl('API key');
  let result = null;
  const ok = await confirm({
    id: 'rotate-dialog',
    title: `Rotate the API key of ${app.id}?`,
    body: h('p', null, 'The broker makes a new API key. This console switches to it at once; your business server must move to it too.'),
    controls: overlap.node,
    confirmLabel: 'Rotate API key',
    onConfirm: async () => {
      result = await api('POST', '/v1/app/api-keys', { body: { overlap_seconds: overlap.seconds() } });
    },
  });
  if (!ok || !result) return;
  replaceKey(result.api_key);
  await showSecrets({
    title: `New API key of ${app.id}`,
    secrets: [{ label: 'New API key', value: result.api_key, name: 'api_key' }],
    note: overlap.seconds()
      ? `The previous key keeps working for ${duration(overlap.seconds())}. This console now uses the new key.`
      : 'The previous key no longer works. This console now uses the new key.',
  });
  flash('API key rotated; the console uses the new key.');
  show(result.app || await get('/v1/app'));
}

export const appRoutes = [
  { pattern: /^(usage)?$/, nav: 'usage', label: 'Usage', render: usageView },
  { pattern: /^tunnels$/, nav: 'tunnels', label: 'Tunnels', render: tunnelsView },
  { pattern: /^webhooks$/, nav: 'webhooks', label: 'Webhooks', render: deliveriesView },
  { pattern: /^trace$/, nav: 'trace', label: 'Live trace', render: traceView },
  { pattern: /^keys$/, nav: 'keys', label: 'Settings and keys', render: keysView },
];
