// The usage panel (app view, and the operator's page of one app): a range selector,
// totals and hourly charts, refreshed every few seconds.

import { h, int, bytes, replace, errorBox, every, isoSeconds, nextId, loading } from './dom.js';
import { hoursBetween, hourly, lineChart } from './chart.js';

const HOUR = 3600 * 1000;
export const RANGES = { '24h': 24, '7d': 24 * 7 };
const REFRESH_MS = 5000;

let chosen = '24h';

export function rangeBounds(range, now = new Date()) {
  const hours = RANGES[range] || 24;
  const start = new Date(Math.floor(now.getTime() / HOUR) * HOUR - (hours - 1) * HOUR);
  return { from: isoSeconds(start), to: isoSeconds(now) };
}

const CHARTS = [
  {
    name: 'messages',
    title: 'Messages per hour',
    series: [['messages_in', 'Messages in (from clients)'], ['messages_out', 'Messages out (to clients)']],
  },
  {
    name: 'tunnels',
    title: 'Tunnels per hour',
    series: [['peak_tunnels', 'Peak open tunnels'], ['tunnels_opened', 'Tunnels opened']],
  },
  {
    name: 'webhooks',
    title: 'Webhook requests per hour',
    series: [['webhook_requests', 'Requests'], ['webhook_failures', 'Failures'], ['webhook_retries', 'Retries']],
  },
];

const TOTALS = [
  ['messages_in', 'Messages in', int],
  ['messages_out', 'Messages out', int],
  ['bytes_in', 'Bytes in', bytes],
  ['bytes_out', 'Bytes out', bytes],
  ['pushes', 'Pushes (API and replies)', int],
  ['tunnels_opened', 'Tunnels opened', int],
  ['peak_tunnels', 'Peak tunnels', int],
  ['tunnel_minutes', 'Tunnel-minutes', int],
  ['webhook_requests', 'Webhook requests', int],
  ['webhook_failures', 'Webhook failures', int],
  ['api_calls', 'API calls', int],
  ['logins', 'Logins', int],
];

// `load({from, to})` resolves with {from, to, buckets, totals}. Returns a stop function.
export function usagePanel(container, load, { csv } = {}) {
  const name = nextId('range');
  const radios = Object.keys(RANGES).map((key) => {
    const input = h('input', { type: 'radio', name, value: key, id: `${name}-${key}`, checked: key === chosen });
    input.addEventListener('change', () => { chosen = key; refresh(true); });
    return h('span', null, input, ' ', h('label', { for: input.id }, key === '24h' ? 'Last 24 hours' : 'Last 7 days'));
  });
  const updated = h('span', { class: 'muted small', role: 'status', id: 'usage-updated' });
  const refreshBtn = h('button', { type: 'button', class: 'secondary', onclick: () => refresh(false) }, 'Refresh');
  const body = h('div', { id: 'usage-body' }, loading());
  replace(container,
    h('div', { class: 'row spread' },
      h('fieldset', { class: 'segmented', id: 'usage-range' }, h('legend', null, 'Range'), radios),
      h('div', { class: 'row' }, updated, refreshBtn, csv ? csv() : null)),
    body);

  let seq = 0;
  let last = null;
  async function refresh(showLoading) {
    const mine = ++seq;
    if (showLoading) replace(body, loading());
    const bounds = rangeBounds(chosen);
    let data;
    try {
      data = await load(bounds);
    } catch (err) {
      if (mine === seq) replace(body, errorBox(err));
      throw err;
    }
    if (mine !== seq) return;
    const fingerprint = JSON.stringify([chosen, bounds.from, data.buckets, data.totals]);
    if (fingerprint !== last || !body.querySelector('figure.chart')) {
      last = fingerprint;
      render(body, data, bounds);
    }
    updated.textContent = `Updated ${new Date().toISOString().slice(11, 19)} UTC`;
  }
  refresh(false).catch(() => {});
  return every(REFRESH_MS, () => refresh(false));
}

function render(body, data, bounds) {
  const open = new Set([...body.querySelectorAll('figure.chart details[open]')].map((d) => d.closest('figure').dataset.chart));
  const hours = hoursBetween(data.from || bounds.from, data.to || bounds.to);
  const totals = data.totals || {};
  const stats = h('dl', { class: 'stats', id: 'usage-totals' }, TOTALS.map(([key, label, fmt]) =>
    h('div', null, h('dt', null, label), h('dd', { dataset: { total: key } }, fmt(totals[key] ?? 0)))));
  const charts = h('div', { class: 'charts' }, CHARTS.map((c) => lineChart({
    name: c.name,
    title: c.title,
    hours,
    series: c.series.map(([key, label]) => ({ key, label, agg: key === 'peak_tunnels' ? 'max' : 'sum', values: hourly(data.buckets, hours, key) })),
  })));
  for (const figure of charts.querySelectorAll('figure.chart')) {
    if (open.has(figure.dataset.chart)) figure.querySelector('details').open = true;
  }
  replace(body, h('h2', { class: 'sr-only' }, 'Totals'), stats, h('h2', { class: 'sr-only' }, 'Charts'), charts);
}
