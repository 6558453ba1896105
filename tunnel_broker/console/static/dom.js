// Small DOM helpers. Everything the broker returns is put in the page as text (never as
// HTML), so app ids, identities and trace payloads cannot inject markup.

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

export function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (name === 'class') {
      el.setAttribute('class', Array.isArray(value) ? value.filter(Boolean).join(' ') : value);
    } else if (name === 'dataset') {
      Object.assign(el.dataset, value);
    } else if (name === 'value' || name === 'checked') {
      el[name] = value;
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replace(el, ...children) {
  clear(el);
  return append(el, children);
}

let uid = 0;
export function nextId(prefix) {
  uid += 1;
  return `${prefix}-${uid}`;
}

// --- formatting ------------------------------------------------------------------------

const NUMBER = new Intl.NumberFormat('en-US');

export function int(n) {
  return n === undefined || n === null || Number.isNaN(Number(n)) ? '—' : NUMBER.format(n);
}

export function bytes(n) {
  if (n === undefined || n === null) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function time(iso) {
  if (!iso) return '—';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return `${d.toISOString().slice(0, 19).replace('T', ' ')} UTC`;
}

export function clock(iso) {
  const d = iso instanceof Date ? iso : new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toISOString().slice(11, 23);
}

export function duration(seconds) {
  const s = Number(seconds);
  if (s % 86400 === 0 && s >= 86400) return s === 86400 ? '24 hours' : `${s / 86400} days`;
  if (s % 3600 === 0 && s >= 3600) return s === 3600 ? '1 hour' : `${s / 3600} hours`;
  if (s % 60 === 0 && s >= 60) return `${s / 60} minutes`;
  return `${s} seconds`;
}

export function value(v) {
  if (v === undefined || v === null) return 'none';
  if (typeof v === 'boolean') return v ? 'yes' : 'no';
  if (typeof v === 'number') return int(v);
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

export function isoSeconds(date) {
  return date.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

// --- building blocks -------------------------------------------------------------------

// A table: columns are {label, cell(row) -> node|string, num?}; rowClass(row) optional.
export function table({ caption, columns, rows, empty = 'Nothing to show.', id, rowClass, rowAttrs }) {
  const head = h('tr', null, columns.map((c) => h('th', { scope: 'col', class: c.num ? 'num' : null }, c.label)));
  const body = h('tbody');
  for (const row of rows) {
    const tr = h('tr', { class: rowClass ? rowClass(row) : null, ...(rowAttrs ? rowAttrs(row) : {}) });
    columns.forEach((c, i) => {
      const content = c.cell(row);
      tr.append(i === 0 && c.header !== false
        ? h('th', { scope: 'row', 'data-col': c.key }, content)
        : h('td', { class: c.num ? 'num' : null, 'data-col': c.key }, content));
    });
    body.append(tr);
  }
  if (!rows.length) {
    body.append(h('tr', { class: 'empty' }, h('td', { colspan: columns.length, class: 'muted' }, empty)));
  }
  return h('div', { class: 'table-wrap' },
    h('table', { id }, caption ? h('caption', null, caption) : null, h('thead', null, head), body));
}

export function field({ label, input, hint, error }) {
  const id = input.id || nextId('f');
  input.id = id;
  const errorEl = h('span', { class: 'error', id: `${id}-error`, role: 'alert' }, error || '');
  input.setAttribute('aria-describedby', `${id}-error`);
  const isCheck = input.type === 'checkbox';
  return h('div', { class: ['field', isCheck ? 'check' : null], dataset: { field: input.name || '' } },
    isCheck ? [input, h('label', { for: id }, label)] : [h('label', { for: id }, label), input],
    hint ? h('span', { class: 'muted small' }, hint) : null,
    errorEl);
}

export function errorBox(err) {
  return h('p', { class: 'error-box', role: 'alert' }, err instanceof Error ? err.message : String(err));
}

export function loading(what = 'Loading…') {
  return h('p', { class: 'muted', role: 'status' }, what);
}

export function badge(text, kind) {
  return h('span', { class: `badge ${kind}` }, text);
}

// Runs fn now and then every ms while the tab is visible; returns a stop function.
export function every(ms, fn) {
  let stopped = false;
  let timer = null;
  const tick = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try {
        await fn();
      } catch {
        // the view shows its own errors
      }
    }
    if (!stopped) timer = setTimeout(tick, ms);
  };
  timer = setTimeout(tick, ms);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

export function flash(text) {
  const el = document.getElementById('flash');
  el.textContent = text;
  el.hidden = !text;
  clearTimeout(flash.timer);
  if (text) flash.timer = setTimeout(() => { el.hidden = true; }, 8000);
}
