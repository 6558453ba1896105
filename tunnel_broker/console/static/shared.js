// Pieces both views show: an app's details, its keys and secrets.

import { h, time, value, table } from './dom.js';

export function appDetails(app) {
  const rows = [
    ['App id', h('code', null, app.id)],
    ['Webhook URL', h('code', null, app.webhook_url)],
    ['Payloads in the live trace', value(!!app.trace_payloads)],
    ['Session tunnels (mini-programs open their own)', value(!!app.allow_session_tunnels)],
    ['WeChat appid', app.wechat_appid || 'none'],
    ['Wafer mode', value(!!app.wafer)],
  ];
  const limits = Object.entries(app.limits || {}).sort(([a], [b]) => a.localeCompare(b));
  return [
    h('dl', { class: 'details', id: 'app-details' }, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])),
    h('details', { class: 'data-table' }, h('summary', null, `Limits and quotas (${limits.length})`),
      table({
        id: 'limits-table',
        rows: limits,
        columns: [
          { label: 'Limit', cell: ([k]) => h('code', null, k) },
          { label: 'Value', num: true, cell: ([, v]) => value(v) },
        ],
      })),
  ];
}

function expiry(at) {
  return at ? `retiring: works until ${time(at)}` : 'current';
}

export function keyTable(app) {
  return [
    table({
      id: 'api-keys-table',
      caption: 'API keys (fingerprints; keys are shown only when made)',
      rows: app.api_keys || [],
      columns: [
        { label: 'Prefix', cell: (k) => h('code', null, k.prefix ? `${k.prefix}…` : '—') },
        { label: 'Fingerprint', cell: (k) => h('code', null, k.fingerprint) },
        { label: 'State', cell: (k) => expiry(k.expires_at) },
      ],
    }),
    app.webhook_secrets ? table({
      id: 'webhook-secrets-table',
      caption: 'Webhook secrets',
      rows: app.webhook_secrets,
      columns: [
        { label: 'Fingerprint', cell: (k) => h('code', null, k.fingerprint) },
        { label: 'State', cell: (k) => expiry(k.expires_at) },
      ],
    }) : null,
  ];
}

// A webhook request that failed: its outcome is not "ok" (or, without one, no 2xx).
export function deliveryFailed(d) {
  if (d.outcome) return d.outcome !== 'ok';
  const status = Number(d.status);
  return !(status >= 200 && status < 300) || !!d.error;
}
