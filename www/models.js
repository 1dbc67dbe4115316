// Loading models: from URLs (the site's demo, `?model=`, a share link's model, the URL field) or
// files, onto the backend chosen; an image pack's text part on demand; "Keep this model". The
// site's own demo model is kept in Cache Storage, any other only when the user ticks "Keep this
// model" (cache.js).

import { dropExport, exportIdOf, fetchModel, fetchPiece, isKept, revalidate, sameVersion } from './cache.js';
import { cancelPending } from './consent.js';
import { call } from './rpc.js';
import { resolveModel, resolveReady, state } from './state.js';
import { $, setStatus, showMessage, updateButtons } from './ui.js';
import { absolute, beside } from './urls.js';

/** The model that ships with the site, cached without asking. */
const SITE_MODEL = new URL('demo/image.ovsegpack', location.href).href;

/** Whether the image pack (or single file) in use is still the server's version. */
async function modelStillCurrent() {
  const e = state.export;
  if (!e || !exportIdOf(e.validators)) return true;
  return (await revalidate(absolute(state.modelUrl), e.validators)).same;
}

/** "Keep this model for next time": stores the pieces of the loaded export (the browser's HTTP
 * cache usually still has them), provided the server still has the version in use. */
export async function keepModel(keep) {
  const url = state.modelUrl;
  if (!url) return;
  showMessage('');
  state.keep = keep;
  if (!keep) {
    await dropExport(url);
    $('progress-text').textContent = 'not kept in this browser';
    return;
  }
  try {
    if (!exportIdOf(state.export.validators)) throw new Error(`the server of ${absolute(url)} gives no ETag or Last-Modified, so this page could not tell when it changes`);
    const image = await fetchPiece(url, { keep: true });
    if (!sameVersion(image.validators, state.export.validators)) throw new Error(`${absolute(url)} changed on the server since it was loaded; load it again`);
    const exportId = exportIdOf(image.validators);
    await fetchPiece(beside(url, 'classes.json'), { model: url, exportId, keep: true, optional: true, what: 'the class embeddings' });
    if (state.textFromUrl) await fetchPiece(beside(url, 'text.ovsegpack'), { model: url, exportId, keep: true, what: 'the text encoder' });
    $('progress-text').textContent = 'kept in this browser for next time';
  } catch (e) {
    await dropExport(url);
    state.keep = false;
    $('keep-model').checked = false;
    showMessage(`Not kept: ${e.message}`);
  }
}

export async function chooseBackend() {
  const probe = await call('probe');
  state.adapter = probe.adapter;
  const wanted = $('backend').value;
  if (wanted === 'webgpu' && !probe.webgpu) throw new Error('WebGPU is not available in this browser (no adapter); choose CPU');
  if (wanted === 'cpu') return 'cpu';
  return probe.webgpu ? 'webgpu' : 'cpu';
}

/** Which kind of model file `bytes` is ('model', 'image-pack', 'text-pack', 'checkpoint'), as
 * the model crate decides it; null for none of them (loading it then says why). */
function fileKind(bytes, backend) {
  return call('kind', { prefix: bytes.slice(0, 1 << 16), backend }).catch(() => null);
}

/** The image pack (or single file) at a URL with its classes.json. */
async function modelFromUrl(source) {
  const abs = absolute(source);
  if (!/^https?:$/.test(new URL(abs).protocol)) throw new Error(`cannot download the model ${source}: not an http(s) URL`);
  // The site's own demo model is kept in Cache Storage; any other only once the user keeps it
  // (then it is in the cache already).
  const keep = abs === SITE_MODEL || (await isKept(abs));
  const got = await fetchModel(source, keep);
  const bytes = got.image.bytes;
  state.timings.cached = got.image.cached;
  let classes = null;
  if (got.classes) {
    try { classes = JSON.parse(new TextDecoder().decode(got.classes.bytes)); } catch (_) { classes = null; }
  }
  const fromUrl = {
    url: source,
    keep,
    export: { validators: got.image.validators, bytes: bytes.byteLength + (got.classes ? got.classes.bytes.byteLength : 0) },
  };
  return { bytes, classes, tokenizer: undefined, textFile: null, fromUrl };
}

/** A model from chosen files: a model file or image pack, and its text pack, tokenizer.json and
 * classes.json when they are among them. */
async function modelFromFiles(source, backend) {
  const files = source instanceof Blob ? [source] : [...source];
  const weights = [];
  let classes = null;
  let tokenizer;
  for (const f of files) {
    if (f.name === 'classes.json') classes = JSON.parse(await f.text());
    else if (f.name === 'tokenizer.json') tokenizer = await f.arrayBuffer();
    else {
      const bytes = await f.arrayBuffer();
      weights.push({ file: f, bytes, kind: await fileKind(bytes, backend) });
    }
  }
  const model = weights.find((w) => w.kind !== 'text-pack');
  if (!model) throw new Error('no model among the chosen files (a text.ovsegpack needs its image.ovsegpack)');
  const textFile = (weights.find((w) => w.kind === 'text-pack') || {}).file || null;
  state.timings.cached = false;
  return { bytes: model.bytes, classes, tokenizer, textFile, fromUrl: null };
}

/** Loads a model from a URL, a File/Blob, or several files (an image pack with its text pack,
 * tokenizer.json, classes.json); resolves when it is ready to segment. */
export async function loadModel(source, announce = true) {
  cancelPending();
  state.modelReady = false;
  updateButtons();
  showMessage('');
  const backend = await chooseBackend();
  $('status').textContent = `Loading the model on ${backend === 'webgpu' ? 'WebGPU' : 'the CPU'}…`;
  // The worker fetches its code (the CPU-only build unless WebGPU is used) while the weights
  // download here; `load` waits for it.
  call('prepare', { backend }).catch(() => {});
  const t0 = performance.now();
  $('keep-model').disabled = true;
  // fromUrl: {url, keep, export} for a model from a URL.
  const { bytes, classes, tokenizer, textFile, fromUrl } = typeof source === 'string'
    ? await modelFromUrl(source) : await modelFromFiles(source, backend);
  state.timings.download = performance.now() - t0;
  state.timings.bytes = bytes.byteLength;
  // The tokenizer travels inside the model file, or inside an image pack's text part.
  const isPack = (await fileKind(bytes, backend)) === 'image-pack';
  const loaded = await call('load', { model: bytes, tokenizer: isPack ? undefined : tokenizer, backend }, [bytes]);
  state.backend = loaded.backend;
  state.build = loaded.build;
  state.modelUrl = fromUrl ? fromUrl.url : '';
  state.keep = fromUrl ? fromUrl.keep : false;
  state.export = fromUrl ? fromUrl.export : null;
  state.textFromUrl = false;
  $('keep-model').checked = state.keep;
  $('keep-model').disabled = !fromUrl;
  state.timings.load = loaded.ms;
  state.hasText = loaded.hasText;
  state.textFile = textFile;
  state.textTokenizer = isPack ? tokenizer : undefined;
  delete state.timings.textBytes;
  if (classes && classes.datasets) {
    for (const d of Object.values(classes.datasets)) {
      const values = base64ToFloats(d.embeddings);
      await call('classes', { labels: d.labels.join(','), template: classes.template, values }, [values.buffer]);
    }
  }
  state.modelReady = true;
  setStatus();
  updateButtons();
  resolveModel(state.backend);
  if (announce) resolveReady(state.backend);
  return state.backend;
}

/** The image pack's text part: from the chosen files, or `text.ovsegpack` beside the model URL,
 * of the same export as the image pack in use. */
export async function loadText(retried = false) {
  const t0 = performance.now();
  let weights;
  let tokenizer = state.textTokenizer;
  if (state.textFile) {
    weights = await state.textFile.arrayBuffer();
    state.timings.textCached = false;
  } else if (state.modelUrl) {
    $('status').textContent = 'Downloading the text encoder for these words…';
    // A text pack from the server now joins an image pack loaded earlier: if the model was
    // exported again since, the whole export is loaded again.
    const got = await fetchPiece(beside(state.modelUrl, 'text.ovsegpack'), {
      model: state.modelUrl, exportId: exportIdOf(state.export.validators), keep: state.keep, before: state.export.bytes,
      what: 'the text encoder', current: retried ? null : modelStillCurrent,
    });
    if (got.stale) {
      await loadModel(state.modelUrl, false);
      if (!state.hasText) await loadText(true);
      return;
    }
    weights = got.bytes;
    state.timings.textCached = got.cached;
    state.textFromUrl = true;
  } else {
    throw new Error('this model file is only the image part of an export: choose its text.ovsegpack too, or pick a preset vocabulary');
  }
  state.timings.textBytes = weights.byteLength;
  state.timings.textDownload = performance.now() - t0;
  await call('text', { weights, tokenizer }, [weights]);
  state.hasText = true;
}

function base64ToFloats(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new Float32Array(bytes.buffer);
}
