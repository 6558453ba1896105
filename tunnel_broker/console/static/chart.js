// Hourly usage charts drawn as SVG by the page (no library). Colours and line styles
// come from console.css; every chart also has a data table for screen readers.

import { h, int, nextId } from './dom.js';

const NS = 'http://www.w3.org/2000/svg';
const HOUR = 3600 * 1000;
const W = 720;
const H = 240;
const PAD = { left: 60, right: 16, top: 14, bottom: 34 };

function s(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== undefined && v !== null) el.setAttribute(k, String(v));
  }
  for (const c of children) {
    if (c !== undefined && c !== null) el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// The hours from `from` (floored) up to and including the hour of `to`.
export function hoursBetween(from, to) {
  const start = Math.floor(new Date(from).getTime() / HOUR) * HOUR;
  const end = Math.floor(new Date(to).getTime() / HOUR) * HOUR;
  const hours = [];
  for (let t = start; t <= end && hours.length < 24 * 400; t += HOUR) hours.push(new Date(t));
  return hours;
}

// One value per hour for `key`; hours without a bucket count zero.
export function hourly(buckets, hours, key) {
  const byHour = new Map();
  for (const b of buckets || []) {
    const t = Math.floor(new Date(b.hour).getTime() / HOUR) * HOUR;
    byHour.set(t, (byHour.get(t) || 0) + Number(b[key] || 0));
  }
  return hours.map((d) => byHour.get(d.getTime()) || 0);
}

// A y scale whose ticks are round numbers: {top, step}.
export function scale(max) {
  if (!(max > 0)) return { top: 4, step: 1 };
  const raw = max / 4;
  const p = 10 ** Math.floor(Math.log10(raw));
  const m = raw / p;
  const nice = m <= 1 ? 1 : m <= 2 ? 2 : m <= 2.5 ? 2.5 : m <= 5 ? 5 : 10;
  const step = Math.max(1, nice * p);
  return { top: step * Math.ceil(max / step), step };
}

function shortNumber(v) {
  if (v >= 1e9) return `${+(v / 1e9).toFixed(1)}G`;
  if (v >= 1e6) return `${+(v / 1e6).toFixed(1)}M`;
  if (v >= 1e4) return `${+(v / 1e3).toFixed(1)}k`;
  return int(v);
}

function hourLabel(d, many) {
  const iso = d.toISOString();
  if (!many) return `${iso.slice(11, 13)}:00`;
  return d.toLocaleDateString('en-US', { month: 'short', day: 'numeric', timeZone: 'UTC' });
}

// series: [{key, label, values}] over `hours` (Dates). Returns a <figure>.
export function lineChart({ name, title, hours, series }) {
  const titleId = nextId('chart-title');
  const descId = nextId('chart-desc');
  const n = hours.length;
  const many = n > 48;
  const max = Math.max(0, ...series.flatMap((x) => x.values));
  const { top, step } = scale(max);
  const pw = W - PAD.left - PAD.right;
  const ph = H - PAD.top - PAD.bottom;
  const x = (i) => PAD.left + (n <= 1 ? pw / 2 : (i * pw) / (n - 1));
  const y = (v) => PAD.top + ph - (v / top) * ph;
  // A series of peaks (agg 'max') sums to nothing meaningful: its legend shows the highest.
  const totals = series.map((x) => (x.agg === 'max' ? Math.max(0, ...x.values) : x.values.reduce((a, b) => a + b, 0)));
  const summary = series.map((x, i) => `${x.label} ${x.agg === 'max' ? 'at most ' : ''}${int(totals[i])}`).join(', ');
  const range = n ? `${hours[0].toISOString().slice(0, 13)}:00 to ${hours[n - 1].toISOString().slice(0, 13)}:59 UTC` : '';

  const svg = s('svg', {
    viewBox: `0 0 ${W} ${H}`,
    class: 'chart-svg',
    role: 'img',
    'aria-labelledby': `${titleId} ${descId}`,
  },
  s('title', { id: titleId }, title),
  s('desc', { id: descId }, `Hourly, ${range}. Totals: ${summary}.`));
  svg.dataset.points = String(n);
  series.forEach((x, i) => { svg.dataset[`total_${x.key}`] = String(totals[i]); });

  for (let v = 0; v <= top + 1e-9; v += step) {
    svg.append(
      s('line', { class: 'grid', x1: PAD.left, x2: W - PAD.right, y1: y(v), y2: y(v) }),
      s('text', { x: PAD.left - 6, y: y(v) + 4, 'text-anchor': 'end' }, shortNumber(v)),
    );
  }
  svg.append(s('line', { class: 'axis', x1: PAD.left, x2: W - PAD.right, y1: y(0), y2: y(0) }));
  hours.forEach((d, i) => {
    const label = many ? d.getUTCHours() === 0 : d.getUTCHours() % 3 === 0;
    if (!label) return;
    svg.append(
      s('line', { class: 'axis', x1: x(i), x2: x(i), y1: y(0), y2: y(0) + 4 }),
      s('text', { x: x(i), y: H - PAD.bottom + 18, 'text-anchor': 'middle' }, hourLabel(d, many)),
    );
  });
  svg.append(s('text', { x: W - PAD.right, y: H - 4, 'text-anchor': 'end' }, 'UTC'));

  series.forEach((ser, i) => {
    const pts = ser.values.map((v, j) => `${x(j).toFixed(1)},${y(v).toFixed(1)}`);
    if (i === 0 && n > 1) {
      svg.append(s('polygon', {
        class: `area s${i}`,
        points: `${x(0).toFixed(1)},${y(0)} ${pts.join(' ')} ${x(n - 1).toFixed(1)},${y(0)}`,
      }));
    }
    svg.append(s('polyline', { class: `line s${i}`, points: pts.join(' '), 'data-series': ser.key }));
    if (n <= 48) {
      ser.values.forEach((v, j) => svg.append(s('circle', { class: `dot s${i}`, cx: x(j), cy: y(v), r: 2.5 })));
    }
  });

  // One hover column per hour, its tooltip naming every value of that hour.
  const colW = n <= 1 ? pw : pw / (n - 1);
  hours.forEach((d, j) => {
    const text = `${d.toISOString().slice(0, 13).replace('T', ' ')}:00 UTC — ${series.map((ser) => `${ser.label}: ${int(ser.values[j])}`).join(', ')}`;
    svg.append(s('rect', { class: 'hover', x: x(j) - colW / 2, y: PAD.top, width: colW, height: ph }, s('title', null, text)));
  });

  const legend = h('ul', { class: 'legend' }, series.map((ser, i) => h('li', null,
    h('span', { class: `swatch s${i}`, 'aria-hidden': 'true' }),
    `${ser.label}${ser.agg === 'max' ? ' (highest)' : ''}: `, h('strong', { dataset: { total: ser.key } }, int(totals[i])))));

  const rows = hours.map((d, j) => h('tr', null,
    h('th', { scope: 'row' }, `${d.toISOString().slice(0, 13).replace('T', ' ')}:00`),
    series.map((ser) => h('td', { class: 'num' }, int(ser.values[j])))));
  const dataTable = h('details', { class: 'data-table' },
    h('summary', null, 'Show the numbers'),
    h('div', { class: 'table-wrap' }, h('table', null,
      h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'Hour (UTC)'), series.map((ser) => h('th', { scope: 'col', class: 'num' }, ser.label)))),
      h('tbody', null, rows))));

  return h('figure', { class: 'chart', dataset: { chart: name } },
    h('figcaption', null, title), svg, legend, dataTable);
}
