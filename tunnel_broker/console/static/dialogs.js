// Modal dialogs (<dialog>): confirmations, and secrets shown once with a copy button.

import { h, nextId, duration, time } from './dom.js';

function open(dialog) {
  document.body.append(dialog);
  dialog.showModal();
  dialog.addEventListener('close', () => dialog.remove());
}

// Resolves with true (confirmed) or false. `requireText`: the user must type it first.
// `controls`: extra form controls whose values the caller reads after confirming.
export function confirm({ id, title, body, confirmLabel = 'Confirm', danger = false, requireText, controls, onConfirm }) {
  return new Promise((resolve) => {
    const titleId = nextId('dialog-title');
    const errorEl = h('p', { class: 'error-box', role: 'alert', hidden: true });
    const ok = h('button', { type: 'submit', class: danger ? 'danger' : null, 'data-action': 'confirm' }, confirmLabel);
    const cancel = h('button', { type: 'button', class: 'secondary', 'data-action': 'cancel' }, 'Cancel');
    let typed = null;
    if (requireText) {
      typed = h('input', { type: 'text', autocomplete: 'off', spellcheck: 'false', id: nextId('confirm-text') });
      ok.disabled = true;
      typed.addEventListener('input', () => { ok.disabled = typed.value !== requireText; });
    }
    const form = h('form', { method: 'dialog' },
      h('h2', { id: titleId }, title),
      body,
      controls,
      typed ? h('div', { class: 'field' },
        h('label', { for: typed.id }, 'Type ', h('code', null, requireText), ' to confirm'), typed) : null,
      errorEl,
      h('div', { class: 'actions' }, cancel, ok));
    const dialog = h('dialog', { id, 'aria-labelledby': titleId }, form);
    let result = false;
    cancel.addEventListener('click', () => dialog.close());
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      if (typed && typed.value !== requireText) return;
      if (onConfirm) {
        ok.disabled = true;
        cancel.disabled = true;
        errorEl.hidden = true;
        try {
          await onConfirm();
        } catch (err) {
          errorEl.textContent = err.message;
          errorEl.hidden = false;
          ok.disabled = false;
          cancel.disabled = false;
          return;
        }
      }
      result = true;
      dialog.close();
    });
    dialog.addEventListener('close', () => resolve(result));
    open(dialog);
    (typed || ok).focus();
  });
}

async function copy(text, input) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    input.select();
    try {
      return document.execCommand('copy');
    } catch {
      return false;
    }
  }
}

// Shows secrets that the broker returns only once. Resolves when closed.
export function showSecrets({ id = 'secret-dialog', title, intro, secrets, note }) {
  return new Promise((resolve) => {
    const titleId = nextId('dialog-title');
    const blocks = secrets.map(({ label, value, name }) => {
      const input = h('input', { type: 'text', readonly: true, value, id: nextId('secret'), dataset: { secret: name }, spellcheck: 'false' });
      const status = h('span', { class: 'muted small', role: 'status' });
      const button = h('button', { type: 'button', class: 'secondary', dataset: { copy: name } }, 'Copy');
      button.addEventListener('click', async () => {
        status.textContent = (await copy(value, input)) ? 'Copied.' : 'Select the text and copy it.';
      });
      input.addEventListener('focus', () => input.select());
      return [h('label', { for: input.id }, label), h('div', { class: 'secret-value' }, input, button), status];
    });
    const close = h('button', { type: 'button' }, 'I have copied it, close');
    const dialog = h('dialog', { id, 'aria-labelledby': titleId },
      h('h2', { id: titleId }, title),
      intro ? h('p', null, intro) : null,
      h('p', { class: 'callout' }, 'This is the only time the broker shows it: copy it now and keep it somewhere safe.'),
      blocks,
      note ? h('p', { class: 'muted' }, note) : null,
      h('div', { class: 'actions' }, close));
    close.addEventListener('click', () => dialog.close());
    dialog.addEventListener('close', () => resolve());
    open(dialog);
    close.focus();
  });
}

export const OVERLAPS = [
  [0, 'none: the current one stops at once'],
  [3600, '1 hour'],
  [86400, '24 hours'],
  [7 * 86400, '7 days'],
];

// The overlap chooser of a rotation dialog, with a sentence saying what it means.
export function overlapControl(what) {
  const select = h('select', { id: nextId('overlap'), name: 'overlap_seconds' },
    OVERLAPS.map(([seconds, label]) => h('option', { value: String(seconds), selected: seconds === 86400 }, label)));
  const explain = h('p', { class: 'callout', 'aria-live': 'polite' });
  const update = () => {
    const seconds = Number(select.value);
    if (seconds === 0) {
      explain.textContent = `The current ${what} stops working as soon as the new one is made.`;
    } else {
      const until = new Date(Date.now() + seconds * 1000).toISOString();
      explain.textContent = `Overlap: the current ${what} keeps working for ${duration(seconds)} after the rotation (until about ${time(until)}), then stops. Move every client of it to the new one within that time.`;
    }
  };
  select.addEventListener('change', update);
  update();
  return {
    node: [h('div', { class: 'field' }, h('label', { for: select.id }, 'Keep the current one working for'), select), explain],
    seconds: () => Number(select.value),
  };
}
