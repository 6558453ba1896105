// The operator's views: every app with today's usage and its limits, one app (details,
// limits, rotations, deletion, usage), creating an app, pods and Redis, the audit log.

import { get, api, query } from './api.js';
import { h, int, time, value, duration, replace, table, field, errorBox, loading, badge, every, isoSeconds, flash, nextId } from './dom.js';
import { confirm, showSecrets, overlapControl } from './dialogs.js';
import { usagePanel } from './usage.js';
import { appDetails, keyTable } from './shared.js';

const enc = encodeURIComponent;

function startOfToday() {
  const now = new Date();
  return new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
}

function quotaCell(app, totals) {
  const quota = app.limits && app.limits.message_quota;
  if (quota === null || quota === undefined) return h('span', { class: 'muted' }, 'none');
  const period = app.limits.message_quota_period || 'day';
  const text = `${int(quota)} / ${period}`;
  if (period !== 'day' || !totals) return text;
  const used = Number(totals.messages_in || 0) + Number(totals.pushes || 0);
  const ratio = Math.min(1, used / quota);
  const warn = Number(app.limits.quota_warning_ratio ?? 0.8);
  const bar = h('span', { class: ['quota-bar', ratio >= 1 ? 'full' : ratio >= warn ? 'high' : null], role: 'img', 'aria-label': `${Math.round(ratio * 100)}% used today` },
    h('span', { dataset: { ratio: ratio.toFixed(3) } }));
  // The bar's width is set through the CSSOM (the CSP forbids inline style attributes).
  bar.firstChild.style.width = `${(ratio * 100).toFixed(1)}%`;
  return [text, h('br'), h('span', { class: 'small muted' }, `${int(used)} used today`), bar];
}

function healthLine(pods) {
  const list = pods.pods || [];
  const ready = list.filter((p) => p.ready).length;
  const parts = [badge(`${ready} of ${list.length} pods ready`, ready === list.length && list.length ? 'ok' : 'bad')];
  if (pods.redis) {
    parts.push(' ', badge(`Redis ${pods.redis.topology}: ${pods.redis.healthy ? 'healthy' : 'unhealthy'}`, pods.redis.healthy ? 'ok' : 'bad'));
  } else {
    parts.push(' ', badge('memory backend (no Redis)', 'neutral'));
  }
  return h('p', { id: 'health-summary' }, parts, ' ', h('a', { href: '#/pods' }, 'Pods and Redis'));
}

async function appsOverview(container) {
  replace(container, h('div', { class: 'row spread' }, h('h1', null, 'Apps'), h('a', { class: 'button', href: '#/new' }, 'Create app')), loading());
  const render = async () => {
    const usageQuery = query({ from: isoSeconds(startOfToday()), to: isoSeconds(new Date()) });
    const [apps, usage, pods] = await Promise.all([
      get('/admin/v1/apps'),
      get(`/admin/v1/usage${usageQuery}`).catch((err) => ({ error: err })),
      get('/admin/v1/pods').catch((err) => ({ error: err })),
    ]);
    const totals = new Map((usage.apps || []).map((u) => [u.app_id, u.totals]));
    const rows = (apps.apps || []).slice().sort((a, b) => a.id.localeCompare(b.id));
    const today = (row, key) => {
      const t = totals.get(row.id);
      return t ? int(t[key] ?? 0) : '—';
    };
    replace(container,
      h('div', { class: 'row spread' }, h('h1', null, 'Apps'), h('a', { class: 'button', href: '#/new' }, 'Create app')),
      pods.error ? errorBox(pods.error) : healthLine(pods),
      usage.error ? errorBox(usage.error) : null,
      table({
        id: 'apps-table',
        caption: `${rows.length} app${rows.length === 1 ? '' : 's'}; usage is today's (UTC) so far`,
        rows,
        rowAttrs: (a) => ({ 'data-app': a.id }),
        empty: 'No apps yet: create one.',
        columns: [
          {
            label: 'App',
            key: 'id',
            cell: (a) => [
              h('a', { href: `#/apps/${enc(a.id)}` }, a.id),
              a.from_file ? [' ', badge('apps file', 'neutral')] : null,
              h('br'),
              h('span', { class: 'mono small muted' }, a.webhook_url),
            ],
          },
          { label: 'Messages in', key: 'messages_in', num: true, cell: (a) => today(a, 'messages_in') },
          { label: 'Messages out', key: 'messages_out', num: true, cell: (a) => today(a, 'messages_out') },
          { label: 'Peak tunnels', key: 'peak_tunnels', num: true, cell: (a) => today(a, 'peak_tunnels') },
          { label: 'Webhooks (failed)', key: 'webhooks', num: true, cell: (a) => `${today(a, 'webhook_requests')} (${today(a, 'webhook_failures')})` },
          { label: 'Max tunnels', key: 'max_tunnels', num: true, cell: (a) => value(a.limits && a.limits.max_tunnels) },
          { label: 'Message quota', key: 'message_quota', cell: (a) => quotaCell(a, totals.get(a.id)) },
        ],
      }));
  };
  try {
    await render();
  } catch (err) {
    replace(container, h('h1', null, 'Apps'), errorBox(err));
  }
  return every(10000, render);
}

// --- one app ----------------------------------------------------------------------------

const PERIODS = ['hour', 'day', 'month'];

function limitInput(name, current) {
  if (name === 'message_quota_period') {
    return h('select', { name }, PERIODS.map((p) => h('option', { value: p, selected: p === current }, p)));
  }
  if (typeof current === 'boolean') return h('input', { type: 'checkbox', name, checked: current });
  if (typeof current === 'string') return h('input', { type: 'text', name, value: current });
  return h('input', {
    type: 'number', name, step: 'any', min: '0', value: current === null || current === undefined ? '' : String(current), placeholder: 'none',
  });
}

function readInput(input, before) {
  if (input.type === 'checkbox') return input.checked;
  if (input.type === 'number') return input.value.trim() === '' ? null : Number(input.value);
  if (input.tagName === 'SELECT') return input.value;
  return typeof before === 'number' ? Number(input.value) : input.value;
}

function showFieldErrors(form, err) {
  for (const el of form.querySelectorAll('.field .error')) el.textContent = '';
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
  const unmatched = [];
  for (const e of err.fieldErrors) {
    const name = String(e.field || '').split('.').pop();
    const input = name && form.querySelector(`[name="${CSS.escape(name)}"]`);
    if (input) {
      input.setAttribute('aria-invalid', 'true');
      input.closest('.field').querySelector('.error').textContent = e.message;
    } else {
      unmatched.push(`${e.field}: ${e.message}`);
    }
  }
  return unmatched;
}

function editForm(app, onSaved) {
  const status = h('p', { role: 'status', class: 'muted' });
  const general = [
    field({ label: 'Webhook URL', input: h('input', { type: 'url', name: 'webhook_url', value: app.webhook_url, size: 60 }) }),
    field({ label: 'Show payloads in the live trace (truncated, redacted)', input: h('input', { type: 'checkbox', name: 'trace_payloads', checked: !!app.trace_payloads }) }),
    field({ label: 'Mini-programs may open their own tunnels (sessions)', input: h('input', { type: 'checkbox', name: 'allow_session_tunnels', checked: !!app.allow_session_tunnels }) }),
  ];
  const names = Object.keys(app.limits || {}).sort((a, b) => {
    const quota = (n) => (['max_tunnels', 'message_quota', 'message_quota_period', 'quota_warning_ratio'].includes(n) ? 0 : 1);
    return quota(a) - quota(b) || a.localeCompare(b);
  });
  const limits = names.map((name) => field({ label: name, input: limitInput(name, app.limits[name]) }));
  const save = h('button', { type: 'submit' }, 'Save changes');
  const form = h('form', { id: 'edit-app-form', novalidate: true },
    h('fieldset', null, h('legend', null, 'App'), h('div', { class: 'form-grid' }, general)),
    h('fieldset', null, h('legend', null, 'Limits and quotas (empty: none)'), h('div', { class: 'form-grid', id: 'limits-form' }, limits)),
    h('div', { class: 'row' }, save, status));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const patch = {};
    for (const name of ['webhook_url', 'trace_payloads', 'allow_session_tunnels']) {
      const v = readInput(form.elements[name], app[name]);
      if (v !== app[name]) patch[name] = v;
    }
    const changed = {};
    for (const name of names) {
      const v = readInput(form.elements[name], app.limits[name]);
      if (v !== app.limits[name] && !(Number.isNaN(v))) changed[name] = v;
    }
    if (Object.keys(changed).length) patch.limits = changed;
    if (!Object.keys(patch).length) {
      status.textContent = 'Nothing changed.';
      return;
    }
    save.disabled = true;
    status.textContent = 'Saving…';
    try {
      const updated = await api('PATCH', `/admin/v1/apps/${enc(app.id)}`, { body: patch });
      // The page is drawn again from the answer: the message goes to the page's banner.
      flash(`Saved ${app.id}: ${Object.keys(patch).filter((k) => k !== 'limits').concat(Object.keys(changed)).join(', ')}.`);
      onSaved(updated);
    } catch (err) {
      const rest = err.status === 422 ? showFieldErrors(form, err) : [];
      status.textContent = err.status === 422 ? `Not saved: ${rest.length ? rest.join('; ') : 'see the fields marked above'}.` : `Not saved: ${err.message}`;
    } finally {
      save.disabled = false;
    }
  });
  return form;
}

async function rotate(app, kind, rerender) {
  const isKey = kind === 'api-keys';
  const what = isKey ? 'API key' : 'webhook secret';
  const overlap = overlapControl(what);
  let result = null;
  const ok = await confirm({
    id: 'rotate-dialog',
    title: `Rotate the ${what} of ${app.id}?`,
    body: h('p', null, isKey
      ? 'The broker makes a new API key for this app; the business server must move to it.'
      : 'The broker makes a new webhook secret and signs every webhook with both during the overlap; the business server must accept the new one.'),
    controls: overlap.node,
    confirmLabel: `Rotate ${what}`,
    onConfirm: async () => {
      result = await api('POST', `/admin/v1/apps/${enc(app.id)}/${kind}`, { body: { overlap_seconds: overlap.seconds() } });
    },
  });
  if (!ok || !result) return;
  const secret = isKey ? result.api_key : result.webhook_secret;
  await showSecrets({
    title: `New ${what} of ${app.id}`,
    secrets: [{ label: `New ${what}`, value: secret, name: isKey ? 'api_key' : 'webhook_secret' }],
    note: overlap.seconds() ? `The previous ${what} keeps working for ${duration(overlap.seconds())}.` : `The previous ${what} no longer works.`,
  });
  rerender(result.app);
}

async function appDetail(container, [id]) {
  replace(container, h('p', null, h('a', { href: '#/apps' }, '← All apps')), h('h1', null, `App ${id}`), loading());
  let stopUsage = null;
  const show = (app) => {
    if (stopUsage) stopUsage();
    const usageBox = h('div');
    // After a change the answer lacks from_file: the app keeps what it was.
    const rerender = (updated) => show({ from_file: app.from_file, ...updated });
    const fileApp = !!app.from_file;
    const why = fileApp ? 'Defined in the apps file: change it there' : null;
    replace(container,
      h('p', null, h('a', { href: '#/apps' }, '← All apps')),
      h('div', { class: 'row spread' }, h('h1', null, `App ${app.id}`),
        h('div', { class: 'row' },
          h('button', { type: 'button', id: 'rotate-key-btn', disabled: fileApp, title: why, onclick: () => rotate(app, 'api-keys', rerender) }, 'Rotate API key'),
          h('button', { type: 'button', id: 'rotate-secret-btn', class: 'secondary', disabled: fileApp, title: why, onclick: () => rotate(app, 'webhook-secrets', rerender) }, 'Rotate webhook secret'),
          h('button', { type: 'button', id: 'delete-app-btn', class: 'danger', disabled: fileApp, title: why, onclick: () => remove(app) }, 'Delete app'))),
      fileApp ? h('p', { class: 'callout', id: 'from-file-note' },
        'This app is defined in the broker\'s apps file, so the console shows it but cannot change, rotate or delete it: the next start would put the file\'s version back. Change the file (or the Helm apps Secret) instead.') : null,
      h('section', { class: 'card', 'aria-labelledby': 'details-h' }, h('h2', { id: 'details-h' }, 'Details'), appDetails(app)),
      h('section', { class: 'card', 'aria-labelledby': 'keys-h' }, h('h2', { id: 'keys-h' }, 'Keys and secrets'), keyTable(app)),
      h('section', { class: 'card', 'aria-labelledby': 'usage-h' }, h('h2', { id: 'usage-h' }, 'Usage'), usageBox),
      fileApp ? null : h('section', { class: 'card', 'aria-labelledby': 'edit-h' }, h('h2', { id: 'edit-h' }, 'Edit'), editForm(app, rerender)));
    stopUsage = usagePanel(usageBox, async ({ from, to }) => {
      const data = await get(`/admin/v1/usage${query({ app: app.id, from, to })}`);
      const mine = (data.apps || []).find((u) => u.app_id === app.id) || { buckets: [], totals: {} };
      return { from: data.from, to: data.to, buckets: mine.buckets, totals: mine.totals };
    }, { csv: () => csvButton(app.id) });
  };
  try {
    show(await get(`/admin/v1/apps/${enc(id)}`));
  } catch (err) {
    replace(container, h('p', null, h('a', { href: '#/apps' }, '← All apps')), h('h1', null, `App ${id}`), errorBox(err));
  }
  return () => { if (stopUsage) stopUsage(); };
}

function csvButton(appId) {
  return h('button', {
    type: 'button',
    class: 'secondary',
    onclick: async () => {
      const now = new Date();
      const from = new Date(now.getTime() - 31 * 86400 * 1000);
      try {
        const text = await api('GET', `/admin/v1/usage.csv${query({ app: appId, from: isoSeconds(from), to: isoSeconds(now) })}`, { text: true, accept: 'text/csv' });
        const url = URL.createObjectURL(new Blob([text], { type: 'text/csv' }));
        const a = h('a', { href: url, download: `usage-${appId}-${isoSeconds(now).slice(0, 10)}.csv` });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
      } catch (err) {
        flash(`CSV export failed: ${err.message}`);
      }
    },
  }, 'Export 31 days as CSV');
}

async function remove(app) {
  const ok = await confirm({
    id: 'delete-dialog',
    title: `Delete the app ${app.id}?`,
    body: [
      h('p', null, 'Its API keys and webhook secrets stop working at once and its open tunnels are closed. This cannot be undone.'),
    ],
    requireText: app.id,
    danger: true,
    confirmLabel: 'Delete this app',
    onConfirm: () => api('DELETE', `/admin/v1/apps/${enc(app.id)}`),
  });
  if (ok) {
    flash(`App ${app.id} deleted.`);
    location.hash = '#/apps';
  }
}

// --- create -----------------------------------------------------------------------------

function createView(container) {
  const status = h('p', { role: 'status', class: 'muted' });
  const form = h('form', { id: 'create-app-form', novalidate: true },
    h('div', { class: 'form-grid' },
      field({ label: 'App id', input: h('input', { name: 'id', required: true, pattern: '[A-Za-z0-9_.-]+', autocomplete: 'off' }), hint: 'Letters, digits, - _ .' }),
      field({ label: 'Webhook URL', input: h('input', { name: 'webhook_url', type: 'url', required: true, placeholder: 'https://biz.example.com/tunnel-webhook' }) }),
      field({ label: 'Max tunnels (empty: none)', input: h('input', { name: 'max_tunnels', type: 'number', min: '1', step: '1' }) }),
      field({ label: 'Message quota (empty: none)', input: h('input', { name: 'message_quota', type: 'number', min: '1', step: '1' }) }),
      field({ label: 'Quota period', input: h('select', { name: 'message_quota_period' }, PERIODS.map((p) => h('option', { value: p, selected: p === 'day' }, p))) }),
      field({ label: 'Show payloads in the live trace', input: h('input', { type: 'checkbox', name: 'trace_payloads' }) })),
    h('div', { class: 'row' }, h('button', { type: 'submit' }, 'Create app'), status));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const el = form.elements;
    const body = { id: el.id.value.trim(), webhook_url: el.webhook_url.value.trim(), trace_payloads: el.trace_payloads.checked };
    const limits = {};
    if (el.max_tunnels.value) limits.max_tunnels = Number(el.max_tunnels.value);
    if (el.message_quota.value) {
      limits.message_quota = Number(el.message_quota.value);
      limits.message_quota_period = el.message_quota_period.value;
    }
    if (Object.keys(limits).length) body.limits = limits;
    status.textContent = 'Creating…';
    try {
      const created = await api('POST', '/admin/v1/apps', { body });
      status.textContent = '';
      await showSecrets({
        title: `App ${created.app.id} created`,
        intro: 'Give these to the app\'s business server.',
        secrets: [
          { label: 'API key', value: created.api_key, name: 'api_key' },
          { label: 'Webhook secret', value: created.webhook_secret, name: 'webhook_secret' },
        ],
      });
      location.hash = `#/apps/${enc(created.app.id)}`;
    } catch (err) {
      const rest = err.status === 422 ? showFieldErrors(form, err) : [];
      status.textContent = err.status === 422 && !rest.length ? 'Not created: see the fields marked above.' : `Not created: ${rest.length ? rest.join('; ') : err.message}`;
    }
  });
  replace(container, h('p', null, h('a', { href: '#/apps' }, '← All apps')), h('h1', null, 'Create an app'),
    h('section', { class: 'card' }, form));
}

// --- pods, audit ------------------------------------------------------------------------

async function podsView(container) {
  replace(container, h('h1', null, 'Pods and Redis'), loading());
  const render = async () => {
    let data;
    try {
      data = await get('/admin/v1/pods');
    } catch (err) {
      replace(container, h('h1', null, 'Pods and Redis'), errorBox(err));
      return;
    }
    const redis = data.redis;
    replace(container, h('h1', null, 'Pods and Redis'),
      table({
        id: 'pods-table',
        caption: `${(data.pods || []).length} pods`,
        rows: data.pods || [],
        columns: [
          { label: 'Node', cell: (p) => h('span', { class: 'mono' }, p.node_id) },
          { label: 'Ready', cell: (p) => badge(p.ready ? 'ready' : 'not ready', p.ready ? 'ok' : 'bad') },
          { label: 'Tunnels', num: true, cell: (p) => int(p.tunnels) },
          { label: 'Started', cell: (p) => time(p.started_at) },
          { label: 'Last seen', cell: (p) => time(p.last_seen) },
          { label: 'Version', cell: (p) => p.version || '—' },
        ],
      }),
      h('section', { class: 'card', id: 'redis-health', 'aria-labelledby': 'redis-h' },
        h('h2', { id: 'redis-h' }, 'Redis'),
        redis ? h('dl', { class: 'details' },
          h('dt', null, 'Topology'), h('dd', null, redis.topology),
          h('dt', null, 'Health'), h('dd', null, badge(redis.healthy ? 'healthy' : 'unhealthy', redis.healthy ? 'ok' : 'bad')),
          h('dt', null, 'Outages'), h('dd', null, int(redis.outages)),
          h('dt', null, 'Failovers'), h('dd', null, int(redis.failovers)))
          : h('p', null, 'This broker runs on the memory backend: one process, no Redis.')));
  };
  await render();
  return every(5000, render);
}

async function auditView(container) {
  const id = nextId('limit');
  const limit = h('select', { id }, [50, 100, 500].map((n) => h('option', { value: String(n) }, String(n))));
  const body = h('div', null, loading());
  const render = async () => {
    try {
      const data = await get(`/admin/v1/audit${query({ limit: limit.value })}`);
      replace(body, table({
        id: 'audit-table',
        caption: 'Newest first. Changes name the fields, never their secret values.',
        rows: data.entries || [],
        empty: 'No changes recorded.',
        columns: [
          { label: 'When', cell: (e) => time(e.at) },
          { label: 'Operator', cell: (e) => e.operator },
          { label: 'Action', cell: (e) => h('code', null, e.action) },
          { label: 'App', cell: (e) => (e.app_id ? h('a', { href: `#/apps/${enc(e.app_id)}` }, e.app_id) : '—') },
          { label: 'Changed', cell: (e) => (e.changes && e.changes.length ? e.changes.join(', ') : '—') },
        ],
      }));
    } catch (err) {
      replace(body, errorBox(err));
    }
  };
  limit.addEventListener('change', render);
  replace(container, h('div', { class: 'row spread' }, h('h1', null, 'Audit log'),
    h('div', { class: 'row' }, h('label', { for: id }, 'Entries'), limit,
      h('button', { type: 'button', class: 'secondary', onclick: render }, 'Refresh'))), body);
  await render();
  return every(15000, render);
}

export const operatorRoutes = [
  { pattern: /^(apps)?$/, nav: 'apps', label: 'Apps', render: appsOverview },
  { pattern: /^apps\/(.+)$/, nav: 'apps', render: appDetail },
  { pattern: /^new$/, nav: 'new', label: 'Create app', render: createView },
  { pattern: /^pods$/, nav: 'pods', label: 'Pods and Redis', render: podsView },
  { pattern: /^audit$/, nav: 'audit', label: 'Audit log', render: auditView },
];
