// A model on another site (a share link's `model`, `?model=`) loads only after the user presses
// Load in a prompt naming the site.

import { $ } from './ui.js';
import { absolute, isForeign } from './urls.js';

/** A model from another site loads only once the user agrees (a link's or `?model=` model
 * would otherwise load at startup, unasked). Resolves true for Load, false for Cancel. */
export const approved = new Set();
let pendingConfirm = null;
export function mayLoad(url) {
  let abs;
  try {
    abs = absolute(url);
  } catch (_) {
    return Promise.resolve(true); // loadModel names the bad URL
  }
  if (!isForeign(abs) || approved.has(abs)) return Promise.resolve(true);
  if (pendingConfirm) pendingConfirm(false);
  return new Promise((resolve) => {
    const panel = $('confirm-model');
    $('confirm-origin').textContent = new URL(abs).origin;
    $('confirm-url').textContent = abs;
    panel.hidden = false;
    const done = (ok) => {
      pendingConfirm = null;
      panel.hidden = true;
      $('confirm-load').onclick = null;
      $('confirm-cancel').onclick = null;
      if (ok) approved.add(abs);
      else $('status').textContent = `No model loaded: the model from ${new URL(abs).origin} was not loaded. Load a model from a URL or drop a model file on the page.`;
      resolve(ok);
    };
    pendingConfirm = done;
    $('confirm-load').onclick = () => done(true);
    $('confirm-cancel').onclick = () => done(false);
    $('confirm-model').focus();
  });
}

/** A model chosen some other way answers a pending question about a link's model: Cancel. */
export function cancelPending() {
  if (pendingConfirm) pendingConfirm(false);
}
