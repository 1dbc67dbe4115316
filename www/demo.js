// What the page starts with: the demo model's examples and words (`demo.json`, else the bundled
// pictures) and the preset vocabularies of vocab.json.

import { approved } from './consent.js';
import { setPicture } from './segment.js';
import { DEFAULT_MODEL, state } from './state.js';
import { $ } from './ui.js';
import { absolute, isForeign } from './urls.js';

async function optional(url) {
  try {
    const r = await fetch(url);
    return r.ok ? r : null;
  } catch (_) {
    return null;
  }
}

const BUNDLED_EXAMPLES = ['astronaut', 'cat', 'coffee'].map((name) => ({ name, url: `examples/${name}.png` }));

/** `demo.json` beside the default model (the main job writes it): example pictures, the words
 * and background setting that suit that model. Without it, the bundled examples. */
export async function loadDemo() {
  const at = new URL('demo.json', new URL(DEFAULT_MODEL, location.href));
  // Nothing is asked of another site before the user agrees to load its model.
  const res = isForeign(at.href) && !approved.has(absolute(DEFAULT_MODEL)) ? null : await optional(at);
  const demo = res && (await res.json().catch(() => null));
  let examples = BUNDLED_EXAMPLES;
  if (demo && Array.isArray(demo.examples)) {
    const listed = demo.examples
      .filter((e) => e && typeof e.name === 'string' && typeof e.image === 'string')
      .map((e) => ({ name: e.name, url: new URL(e.image, at).href }))
      .filter((e) => e.url.startsWith(location.origin));
    if (listed.length) examples = listed;
  }
  if (demo && typeof demo.labels === 'string') $('labels').value = demo.labels;
  if (demo && typeof demo.background === 'boolean') $('background').checked = demo.background;
  if (demo && typeof demo.bg_thresh === 'number') $('bg-thresh').value = String(demo.bg_thresh);
  $('examples').replaceChildren(...examples.map((e) => {
    const b = document.createElement('button');
    b.type = 'button';
    b.textContent = e.name;
    b.onclick = () => setPicture(e.url);
    return b;
  }));
  return examples;
}

export async function loadVocab() {
  try {
    const r = await fetch('vocab.json');
    state.vocab = await r.json();
  } catch (_) {
    return;
  }
  // vocab.json's benchmarks, titled with their count of (foreground) classes.
  for (const [key, d] of Object.entries(state.vocab.datasets)) {
    const o = document.createElement('option');
    o.value = key;
    o.textContent = `${d.title} (${d.classes.length - (d.with_background ? 1 : 0)})`;
    $('preset').append(o);
  }
}
