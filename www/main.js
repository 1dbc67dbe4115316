// The page: pictures, labels, results, share links. The model runs in worker.js; this thread
// only decodes pictures, draws and talks to the worker. Every label reaches the page through
// textContent, never as HTML. window.ovseg is the scripting surface (docs/web.md). What each
// module does is in docs/web.md ("The page's modules").

import { dropOldCaches } from './cache.js';
import { approved, mayLoad } from './consent.js';
import { wire } from './controls.js';
import { loadDemo, loadVocab } from './demo.js';
import { chooseBackend, loadModel } from './models.js';
import { call } from './rpc.js';
import { loadRules } from './rules.js';
import { runFromControls, segment, setPicture } from './segment.js';
import { openLink, shareLink } from './share.js';
import { DEFAULT_MODEL, ready, resolveReady, state } from './state.js';
import { $, setStatus, showMessage } from './ui.js';
import { absolute, isForeign } from './urls.js';

window.ovseg = {
  ready,
  get backend() { return state.backend; },
  /** Whether a model is loaded and ready (false while one loads). */
  get loaded() { return state.modelReady; },
  segment: (options) => segment(options),
  shareLink,
  loadModel,
  get timings() { return { ...state.timings }; },
  /** What is on screen: {width, height, labels, mask} or null. */
  current() {
    const r = state.result;
    return r && { width: r.width, height: r.height, labels: r.names.slice(), mask: r.mask.slice() };
  },
};

async function main() {
  wire();
  setStatus();
  // The code for the backend the model will use is fetched now; the page's rules come from it.
  call('prepare', { backend: await chooseBackend().catch(() => 'cpu') }).catch(() => {});
  await loadRules();
  await dropOldCaches();
  await loadVocab();
  let examples = await loadDemo();
  // A shared segmentation shows before any model loads.
  if (location.hash.length > 1) await openLink(location.href);
  if (!state.result) await setPicture(examples[0].url);
  const url = $('model-url').value.trim();
  // A link's or `?model=` model on another site waits for the user's answer.
  if (!(await mayLoad(url))) return;
  let demoModel = null;
  try { demoModel = absolute(DEFAULT_MODEL); } catch (_) { /* loadModel names the bad URL */ }
  if (demoModel && isForeign(demoModel) && approved.has(demoModel)) {
    const before = examples[0].url;
    examples = await loadDemo();
    if (!state.result && examples[0].url !== before) await setPicture(examples[0].url);
  }
  try {
    await loadModel(url, false);
    // The first picture is segmented before `ready` resolves, so scripts never race it.
    if (!state.result && state.picture) await runFromControls();
    resolveReady(state.backend);
  } catch (e) {
    // `ready` resolves once a model is loaded some other way (URL, file, window.ovseg.loadModel).
    showMessage(`${e.message}. Load a model from a URL or drop a model file on the page.`);
    setStatus();
  }
}

main();

