// Talking to the broker: the key lives in sessionStorage (this tab only) and travels in
// the Authorization header, never in a URL; it is never logged.

const STORE = window.sessionStorage;
const KEY = 'tb-console.key';
const ROLE = 'tb-console.role';
const NAME = 'tb-console.name';

export function session() {
  const key = STORE.getItem(KEY);
  if (!key) return null;
  return { key, role: STORE.getItem(ROLE), name: STORE.getItem(NAME) };
}

export function saveSession(key, role, name) {
  STORE.setItem(KEY, key);
  STORE.setItem(ROLE, role);
  STORE.setItem(NAME, name || '');
}

export function replaceKey(key) {
  STORE.setItem(KEY, key);
}

export function clearSession() {
  STORE.removeItem(KEY);
  STORE.removeItem(ROLE);
  STORE.removeItem(NAME);
}

export class ApiError extends Error {
  constructor(status, problem) {
    const p = problem || {};
    const text = [p.title, p.detail].filter(Boolean).join(': ') || `HTTP ${status}`;
    super(p.code ? `${text} (${p.code})` : text);
    this.status = status;
    this.problem = p;
    this.code = p.code || null;
  }

  get fieldErrors() {
    return Array.isArray(this.problem.errors) ? this.problem.errors : [];
  }
}

export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

async function send(key, method, path, { body, signal, accept = 'application/json' } = {}) {
  const headers = { authorization: `Bearer ${key}`, accept };
  const init = {
    method,
    headers,
    signal,
    cache: 'no-store',
    credentials: 'omit',
    redirect: 'error',
    referrerPolicy: 'no-referrer',
  };
  if (body !== undefined) {
    headers['content-type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  try {
    return await fetch(path, init);
  } catch (err) {
    if (err && err.name === 'AbortError') throw err;
    throw new ApiError(0, { title: 'Network error', detail: 'the broker could not be reached' });
  }
}

async function problemOf(response) {
  try {
    if ((response.headers.get('content-type') || '').includes('json')) return await response.json();
  } catch {
    // not JSON after all
  }
  return { title: response.statusText || `HTTP ${response.status}` };
}

function unauthorized(problem) {
  window.dispatchEvent(new CustomEvent('tb:unauthorized', { detail: problem || {} }));
}

async function check(response) {
  if (response.status === 401) {
    const problem = await problemOf(response);
    unauthorized(problem);
    throw new ApiError(401, problem);
  }
  if (!response.ok) throw new ApiError(response.status, await problemOf(response));
  return response;
}

// A call with the signed-in key. A 401 signs the console out (tb:unauthorized).
export async function api(method, path, options = {}) {
  const s = session();
  if (!s) {
    unauthorized({ code: 'signed_out' });
    throw new ApiError(401, { title: 'Signed out' });
  }
  const response = await check(await send(s.key, method, path, options));
  if (response.status === 204) return null;
  if (options.text) return response.text();
  return response.json();
}

export const get = (path, options) => api('GET', path, options);

// Which kind of key this is: an operator key (admin API) or an app API key.
export async function probe(key) {
  const admin = await send(key, 'GET', '/admin/v1/whoami');
  if (admin.ok) {
    const who = await admin.json();
    return { role: 'operator', name: who.operator || 'operator' };
  }
  // 401: not an operator key; 404: the admin API is off on this broker.
  if (![401, 403, 404].includes(admin.status)) throw new ApiError(admin.status, await problemOf(admin));
  const app = await send(key, 'GET', '/v1/app');
  if (app.ok) {
    const view = await app.json();
    return { role: 'app', name: view.id, app: view };
  }
  if (app.status === 401 || app.status === 403) {
    throw new ApiError(401, {
      title: 'Key not accepted',
      detail: 'this broker knows no operator key and no app API key like it',
    });
  }
  throw new ApiError(app.status, await problemOf(app));
}

// Reads a text/event-stream with fetch (EventSource cannot send the Authorization header)
// and calls onRecord with each JSON record; resolves when the server ends the stream.
export async function stream(path, { onRecord, onOpen, onKeepalive, signal }) {
  const s = session();
  if (!s) throw new ApiError(401, { title: 'Signed out' });
  const response = await check(await send(s.key, 'GET', path, { signal, accept: 'text/event-stream' }));
  if (onOpen) onOpen();
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r/g, '');
    let end = buffer.indexOf('\n\n');
    while (end >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const lines = block.split('\n');
      const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''));
      if (data.length) {
        let record = null;
        try {
          record = JSON.parse(data.join('\n'));
        } catch {
          record = null;
        }
        if (record) onRecord(record);
      } else if (onKeepalive && lines.some((l) => l.startsWith(':'))) {
        onKeepalive();
      }
      end = buffer.indexOf('\n\n');
    }
  }
}
