// Entry point: sign-in, sign-out, and a hash router over the operator's or the app's views.

import { session, saveSession, clearSession, probe } from './api.js';
import { h, replace, clear, flash } from './dom.js';
import { operatorRoutes } from './operator.js';
import { appRoutes } from './appview.js';

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const signIn = document.getElementById('sign-in');
const form = document.getElementById('sign-in-form');
const keyInput = document.getElementById('key-input');
const signInBtn = document.getElementById('sign-in-btn');
const message = document.getElementById('sign-in-message');
const whoami = document.getElementById('whoami');
const signOutBtn = document.getElementById('sign-out');

let dispose = null;
let rendering = 0;

function stopView() {
  rendering += 1;
  const d = dispose;
  dispose = null;
  if (typeof d === 'function') d();
}

function showSignIn(text) {
  stopView();
  clearSession();
  for (const d of document.querySelectorAll('dialog')) d.close();
  clear(main);
  clear(nav);
  main.hidden = true;
  nav.hidden = true;
  signOutBtn.hidden = true;
  whoami.textContent = '';
  signIn.hidden = false;
  message.textContent = text || '';
  keyInput.value = '';
  keyInput.focus();
}

function routesOf(s) {
  return s.role === 'operator' ? operatorRoutes : appRoutes;
}

function start() {
  const s = session();
  if (!s) {
    showSignIn();
    return;
  }
  signIn.hidden = true;
  message.textContent = '';
  main.hidden = false;
  nav.hidden = false;
  signOutBtn.hidden = false;
  whoami.textContent = s.role === 'operator' ? `Operator ${s.name}` : `App ${s.name}`;
  whoami.dataset.role = s.role;
  replace(nav, routesOf(s).filter((r) => r.label).map((r) => h('a', { href: `#/${r.nav}`, dataset: { nav: r.nav } }, r.label)));
  route();
}

async function route() {
  const s = session();
  if (!s) return;
  const path = location.hash.replace(/^#\/?/, '');
  const routes = routesOf(s);
  let params = [];
  let found = routes[0];
  for (const r of routes) {
    const m = r.pattern.exec(path);
    if (m) {
      found = r;
      params = m.slice(1).filter((x) => x !== undefined).map(decodeURIComponent);
      break;
    }
  }
  if (found === routes[0] && !routes[0].pattern.test(path)) params = [];
  for (const a of nav.querySelectorAll('a')) {
    if (a.dataset.nav === found.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  stopView();
  const mine = rendering;
  // Each view draws into its own box: a view still loading when the user moves on
  // draws into a detached box, never over the next view.
  const box = h('div', { class: 'view', dataset: { view: found.nav } });
  replace(main, box);
  document.title = `${found.label || s.name} · Tunnel broker console`;
  const cleanup = await found.render(box, params);
  if (mine === rendering) dispose = cleanup;
  else if (typeof cleanup === 'function') cleanup();
}

form.addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const key = keyInput.value.trim();
  if (!key) {
    message.textContent = 'Paste a key first.';
    return;
  }
  signInBtn.disabled = true;
  message.textContent = '';
  try {
    const who = await probe(key);
    saveSession(key, who.role, who.name);
    keyInput.value = '';
    flash('');
    if (location.hash && location.hash !== '#/') history.replaceState(null, '', '#/');
    start();
  } catch (err) {
    message.textContent = err.message;
  } finally {
    signInBtn.disabled = false;
  }
});

signOutBtn.addEventListener('click', () => {
  showSignIn();
  flash('Signed out. The key is no longer kept in this tab.');
});

window.addEventListener('tb:unauthorized', (ev) => {
  const code = ev.detail && ev.detail.code;
  if (code === 'signed_out') {
    showSignIn();
    return;
  }
  showSignIn(`Signed out: the broker no longer accepts this key${code ? ` (${code})` : ''}. Sign in again.`);
});

window.addEventListener('hashchange', () => route());

start();
