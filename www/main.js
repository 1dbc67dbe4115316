// The page: pictures, labels, results, share links. The model runs in worker.js; this thread
// only decodes pictures, draws and talks to the worker. Every label reaches the page through
// textContent, never as HTML. window.ovseg is the scripting surface (docs/web.md).

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DEFAULT_MODEL = params.get('model') || 'demo/image.ovsegpack';
const MODEL_CACHE = 'ovseg-models-v2';
const MAX_PICTURE_PIXELS = 4096 * 4096; // what a share link can hold
const EMBED_SIDE = 256; // longest side of the JPEG embedded in share links

// ---------------------------------------------------------------- worker

const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
let nextId = 1;
const waiting = new Map();
worker.onmessage = (e) => {
  const { id, ok, result, error } = e.data;
  const w = waiting.get(id);
  if (!w) return;
  waiting.delete(id);
  ok ? w.resolve(result) : w.reject(new Error(error));
};
worker.onerror = (e) => {
  showMessage(`The model worker failed: ${e.message || 'unknown error'}`);
  for (const w of waiting.values()) w.reject(new Error('worker failed'));
  waiting.clear();
};
function call(op, args = {}, transfer = []) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    worker.postMessage({ id, op, ...args }, transfer);
  });
}

// ---------------------------------------------------------------- state

const state = {
  backend: null, // 'webgpu' | 'cpu' once a model is loaded
  adapter: null,
  modelUrl: '', // '' when the model came from a file
  keep: false, // whether the model from modelUrl is kept in Cache Storage
  export: null, // {validators, bytes} of the image pack (or single file) from modelUrl
  textFromUrl: false, // whether its text pack was downloaded
  modelReady: false,
  // An image pack (`ovseg export-web`) segments preset words at once; its text part is fetched
  // (or taken from the chosen files) the first time other words are asked for.
  hasText: false,
  textFile: null,
  picture: null, // {width, height, rgba, url|null, bitmap}
  result: null, // {width, height, names, mask, labels, background, bgThresh, template}
  vocab: null,
  timings: {},
};
let resolveReady;
const ready = new Promise((res) => { resolveReady = res; });
// Resolved by every successful model load (`ready` waits for the first picture's result too).
let resolveModel;
const modelLoaded = new Promise((res) => { resolveModel = res; });

function showMessage(text) {
  const m = $('message');
  m.textContent = text;
  m.hidden = !text;
}
function setStatus() {
  const parts = [];
  if (state.backend) {
    parts.push(state.backend === 'webgpu' ? `WebGPU${state.adapter ? ` (${state.adapter})` : ''}`
      : `CPU (WebAssembly${state.build === 'cpu' ? ', CPU-only build' : ''})`);
  }
  if (state.timings.download != null) parts.push(`model ${formatBytes(state.timings.bytes)} ${state.timings.cached ? 'from the browser cache' : 'downloaded'} in ${secs(state.timings.download)}`);
  if (state.timings.load != null) parts.push(`loaded in ${secs(state.timings.load)}`);
  if (state.modelReady) {
    parts.push(state.timings.textBytes != null
      ? `text encoder ${formatBytes(state.timings.textBytes)} ${state.timings.textCached ? 'from the browser cache' : 'downloaded'} in ${secs(state.timings.textDownload)}`
      : state.hasText ? 'text encoder included' : 'text encoder not needed yet (these words are precomputed)');
  }
  if (state.timings.segment != null) parts.push(`last segmentation ${secs(state.timings.segment)}${state.timings.encodedText ? ' (words encoded)' : ' (words cached)'}`);
  $('status').textContent = parts.join(' · ') || 'No model loaded yet.';
}
const secs = (ms) => `${(ms / 1000).toFixed(2)} s`;
function formatBytes(n) {
  if (n == null) return '?';
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} kB`;
  if (n < 1 << 30) return `${(n / (1 << 20)).toFixed(1)} MB`;
  return `${(n / (1 << 30)).toFixed(1)} GB`;
}
function updateButtons() {
  $('segment').disabled = !(state.modelReady && state.picture);
  $('share').disabled = !state.result;
  $('download').disabled = !state.result;
  $('groups').disabled = !(state.modelReady && state.picture);
}

// ---------------------------------------------------------------- model

// Models come from URLs (the site's demo, `?model=`, a share link's model, the URL field) or
// files. Downloads are capped; the site's own demo model is kept in Cache Storage, any other
// only when the user ticks "Keep this model"; a model on another site loads only once the user
// agrees. An export (`ovseg export-web`: image.ovsegpack, classes.json, text.ovsegpack) is cached
// as one set: every piece carries the image pack's validator (its ETag, else Last-Modified), a
// cached copy is revalidated with a conditional request on each use, and a piece of another
// export is never paired with the image pack in use.

/** Most bytes one model may download: each file, and all the files of one model together. */
const MAX_DOWNLOAD_BYTES = 1 << 30;
const MAX_DOWNLOAD_TEXT = `${MAX_DOWNLOAD_BYTES / 2 ** 30} GiB`;
/** The model that ships with the site, cached without asking. */
const SITE_MODEL = new URL('demo/image.ovsegpack', location.href).href;

const absolute = (u) => new URL(u, location.href).href;
const beside = (model, name) => new URL(name, absolute(model)).href;
const isForeign = (u) => new URL(u, location.href).origin !== location.origin;

async function modelCache() {
  try {
    return await caches.open(MODEL_CACHE);
  } catch (_) {
    return null; // no Cache Storage (insecure origin)
  }
}

/** Earlier versions' caches: keyed by URL alone, without the validators a revalidation needs. */
async function dropOldCaches() {
  try {
    for (const name of await caches.keys()) if (name.startsWith('ovseg-models-') && name !== MODEL_CACHE) await caches.delete(name);
  } catch (_) { /* no Cache Storage */ }
}

/** What a server said identifies a file's version (sent back in a conditional request). */
function validatorsOf(headers) {
  return { etag: headers.get('etag') || '', lastModified: headers.get('last-modified') || '' };
}
function sameVersion(a, b) {
  const weak = (e) => e.replace(/^W\//, '');
  if (a.etag && b.etag) return weak(a.etag) === weak(b.etag);
  if (a.lastModified && b.lastModified) return a.lastModified === b.lastModified;
  return false;
}
/** The id of an export: its image pack's version ('' when the server gives none: not cached). */
function exportIdOf(v) {
  return v.etag ? `etag ${v.etag}` : v.lastModified ? `date ${v.lastModified}` : '';
}

/** The cached pieces of the export whose image pack (or single model file) is `model`. */
async function dropExport(model) {
  const cache = await modelCache();
  if (!cache) return;
  for (const name of [absolute(model), beside(model, 'classes.json'), beside(model, 'text.ovsegpack')]) await cache.delete(name);
}
async function isKept(model) {
  const cache = await modelCache();
  return !!(cache && (await cache.match(absolute(model))));
}

/** The message for a download over MAX_DOWNLOAD_BYTES: `bytes` its Content-Length (null when
 * counting stopped it), `before` what the model's other files took. */
function tooLarge(url, bytes, before) {
  const others = before ? ` with the ${formatBytes(before)} of this model's other files` : '';
  return new Error(bytes == null
    ? `cannot download ${url}: it is${others} over the limit of ${MAX_DOWNLOAD_TEXT} for a model (stopped after ${formatBytes(MAX_DOWNLOAD_BYTES - before)})`
    : `cannot download ${url}: it is ${formatBytes(bytes)}${others ? `, which${others} is` : ','} over the limit of ${MAX_DOWNLOAD_TEXT} for a model`);
}

/** A response's body, refused over `limit` bytes: the Content-Length is checked before reading
 * and the bytes are counted while they stream (a server may send none, or compress). */
async function readCapped(response, url, limit, before) {
  const progress = $('progress');
  const text = $('progress-text');
  const declared = Number(response.headers.get('content-length')) || 0;
  if (declared > limit) {
    response.body && response.body.cancel().catch(() => {});
    throw tooLarge(url, declared, before);
  }
  progress.hidden = false;
  progress.max = declared || 1;
  progress.value = 0;
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      received += value.length;
      if (received > limit) {
        reader.cancel().catch(() => {});
        chunks.length = 0;
        throw tooLarge(url, null, before);
      }
      chunks.push(value);
      progress.value = declared ? received : 0;
      text.textContent = `${formatBytes(received)}${declared ? ` of ${formatBytes(declared)}` : ''}`;
    }
  } finally {
    progress.hidden = true;
  }
  const bytes = new Uint8Array(received);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  text.textContent = `${formatBytes(received)} downloaded`;
  return bytes.buffer;
}

/** Asks the server whether `url` is still the version `v`: true (304, the same validators, or no
 * answer: offline keeps the copy) or the new response, whose body is not read yet. */
async function revalidate(url, v) {
  const headers = {};
  if (v.etag) headers['If-None-Match'] = v.etag;
  if (v.lastModified) headers['If-Modified-Since'] = v.lastModified;
  let response;
  try {
    response = await fetch(url, { headers, cache: 'no-store' });
  } catch (_) {
    // Offline, or another site refusing the conditional headers' CORS preflight: a plain
    // request (revalidated by the browser's own cache), compared by its validators.
    try {
      response = await fetch(url, { cache: 'no-cache' });
    } catch (_) {
      return { same: true, offline: true };
    }
  }
  if (response.status === 304) return { same: true };
  if (response.status >= 500) return { same: true, offline: true };
  if (response.ok && sameVersion(validatorsOf(response.headers), v)) {
    response.body && response.body.cancel().catch(() => {});
    return { same: true };
  }
  return { same: false, response };
}

/** One file of a model at `url`: the cached copy if the server says it is current, else the
 * download, stored when `keep`. `model` is the export's image pack (or single file) URL, and
 * `exportId` (for the other pieces) the export the image pack in use belongs to: a cached piece
 * of another export is dropped, never used. `before`: bytes of this model downloaded already.
 * `current`: checked before a download is stored (false: the export changed meanwhile).
 * Resolves {bytes, cached, changed (a cached copy was replaced), validators, stale (`current`
 * said false: nothing stored)}, or null for a missing `optional` file. */
async function fetchPiece(url, { model = url, exportId = null, keep = false, optional = false, before = 0, what = 'the model', current = null } = {}) {
  const abs = absolute(url);
  const cache = await modelCache();
  let hit = cache ? await cache.match(abs) : null;
  if (hit && exportId !== null && hit.headers.get('x-ovseg-export') !== exportId) {
    await cache.delete(abs);
    hit = null;
  }
  let response = null;
  let changed = false;
  if (hit) {
    const v = validatorsOf(hit.headers);
    const check = await revalidate(abs, v);
    if (check.same) {
      const bytes = await hit.arrayBuffer();
      $('progress-text').textContent = `${formatBytes(bytes.byteLength)} from the browser cache${check.offline ? ' (offline)' : ''}`;
      return { bytes, cached: true, changed: false, validators: v };
    }
    response = check.response;
    changed = response.ok;
    if (changed && exportId === null) await dropExport(model); // a new export: its old pieces go
    else await cache.delete(abs);
  } else {
    try {
      response = await fetch(abs, { cache: 'no-cache' });
    } catch (e) {
      if (optional) return null;
      throw new Error(`cannot download ${what} ${url}: ${e.message}`);
    }
  }
  if (!response.ok) {
    if (optional && response.status === 404) return null;
    throw new Error(`cannot download ${what} ${url}: HTTP ${response.status}`);
  }
  const bytes = await readCapped(response, abs, MAX_DOWNLOAD_BYTES - before, before);
  const validators = validatorsOf(response.headers);
  if (current && !(await current())) return { bytes, cached: false, changed, validators, stale: true };
  const id = exportId === null ? exportIdOf(validators) : exportId;
  if (keep && cache && id) {
    const headers = { 'content-type': 'application/octet-stream', 'x-ovseg-export': id, 'x-ovseg-model': absolute(model) };
    if (validators.etag) headers.etag = validators.etag;
    if (validators.lastModified) headers['last-modified'] = validators.lastModified;
    try { await cache.put(abs, new Response(bytes, { headers })); } catch (_) { /* quota */ }
  }
  return { bytes, cached: false, changed, validators };
}

/** Whether the image pack (or single file) in use is still the server's version. */
async function modelStillCurrent() {
  const e = state.export;
  if (!e || !exportIdOf(e.validators)) return true;
  return (await revalidate(absolute(state.modelUrl), e.validators)).same;
}

/** The image pack (or single file) at `url` with its classes.json, pieces of one export. */
async function fetchModel(url, keep) {
  for (let attempt = 0; ; attempt++) {
    const image = await fetchPiece(url, { keep });
    const exportId = exportIdOf(image.validators);
    // `ovseg export-web` writes classes.json beside the model; plain `ovseg convert` output has none.
    const classes = await fetchPiece(beside(url, 'classes.json'), {
      model: url, exportId, keep, optional: true, before: image.bytes.byteLength, what: 'the class embeddings',
    });
    // A piece changed while its image pack did not: the export changed between the two requests
    // (or the copies do not belong together). Everything is fetched again, once.
    if (attempt === 0 && image.cached && classes && classes.changed) {
      await dropExport(url);
      continue;
    }
    return { image, classes };
  }
}

/** A model from another site loads only once the user agrees (a link's or `?model=` model
 * would otherwise load at startup, unasked). Resolves true for Load, false for Cancel. */
const approved = new Set();
let pendingConfirm = null;
function mayLoad(url) {
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

/** "Keep this model for next time": stores the pieces of the loaded export (the browser's HTTP
 * cache usually still has them), provided the server still has the version in use. */
async function keepModel(keep) {
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
async function loadDemo() {
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

async function chooseBackend() {
  const probe = await call('probe');
  state.adapter = probe.adapter;
  const wanted = $('backend').value;
  if (wanted === 'webgpu' && !probe.webgpu) throw new Error('WebGPU is not available in this browser (no adapter); choose CPU');
  if (wanted === 'cpu') return 'cpu';
  return probe.webgpu ? 'webgpu' : 'cpu';
}

/** 'image' or 'text' for a weight pack (`ovseg export-web`), null for anything else. */
function packPart(bytes) {
  const b = new Uint8Array(bytes, 0, Math.min(bytes.byteLength, 1 << 16));
  if (b.length < 12 || new TextDecoder().decode(b.subarray(0, 8)) !== 'OVSEGPAK') return null;
  const m = /"part":"(image|text)"/.exec(new TextDecoder().decode(b.subarray(12)));
  return m ? m[1] : null;
}

/** Loads a model from a URL, a File/Blob, or several files (an image pack with its text pack,
 * tokenizer.json, classes.json); resolves when it is ready to segment. */
async function loadModel(source, announce = true) {
  // A model chosen some other way answers a pending question about a link's model: Cancel.
  if (pendingConfirm) pendingConfirm(false);
  state.modelReady = false;
  updateButtons();
  showMessage('');
  const backend = await chooseBackend();
  $('status').textContent = `Loading the model on ${backend === 'webgpu' ? 'WebGPU' : 'the CPU'}…`;
  // The worker fetches its code (the CPU-only build unless WebGPU is used) while the weights
  // download here; `load` waits for it.
  call('prepare', { backend }).catch(() => {});
  let bytes;
  let tokenizer;
  let classes = null;
  let textFile = null;
  let fromUrl = null; // {url, keep, export} for a model from a URL
  const t0 = performance.now();
  $('keep-model').disabled = true;
  if (typeof source === 'string') {
    const abs = absolute(source);
    if (!/^https?:$/.test(new URL(abs).protocol)) throw new Error(`cannot download the model ${source}: not an http(s) URL`);
    // The site's own demo model is kept in Cache Storage; any other only once the user keeps it
    // (then it is in the cache already).
    const keep = abs === SITE_MODEL || (await isKept(abs));
    const got = await fetchModel(source, keep);
    bytes = got.image.bytes;
    state.timings.cached = got.image.cached;
    if (got.classes) {
      try { classes = JSON.parse(new TextDecoder().decode(got.classes.bytes)); } catch (_) { classes = null; }
    }
    fromUrl = {
      url: source,
      keep,
      export: { validators: got.image.validators, bytes: bytes.byteLength + (got.classes ? got.classes.bytes.byteLength : 0) },
    };
  } else {
    const files = source instanceof Blob ? [source] : [...source];
    const weights = [];
    for (const f of files) {
      if (f.name === 'classes.json') classes = JSON.parse(await f.text());
      else if (f.name === 'tokenizer.json') tokenizer = await f.arrayBuffer();
      else weights.push({ file: f, bytes: await f.arrayBuffer() });
    }
    const model = weights.find((w) => packPart(w.bytes) !== 'text');
    if (!model) throw new Error('no model among the chosen files (a text.ovsegpack needs its image.ovsegpack)');
    textFile = (weights.find((w) => packPart(w.bytes) === 'text') || {}).file || null;
    bytes = model.bytes;
    state.timings.cached = false;
  }
  state.timings.download = performance.now() - t0;
  state.timings.bytes = bytes.byteLength;
  // The tokenizer travels inside the model file, or inside an image pack's text part.
  const isPack = packPart(bytes) === 'image';
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
async function loadText(retried = false) {
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

// ---------------------------------------------------------------- pictures

/** A picture as a bitmap, refused over MAX_PICTURE_PIXELS: every picture passes here, chosen,
 * dropped, pasted, fetched or named by a share link. */
async function pictureBitmap(blob, options = { colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image' }) {
  const bitmap = await createImageBitmap(blob, options)
    .catch(() => { throw new Error('this file is not a picture the browser can read (JPEG, PNG, WebP, GIF)'); });
  const { width, height } = bitmap;
  if (width * height > MAX_PICTURE_PIXELS) {
    bitmap.close();
    throw new Error(`the picture is ${width}x${height}; at most ${MAX_PICTURE_PIXELS} pixels`);
  }
  return bitmap;
}

async function decodePicture(blob) {
  const bitmap = await pictureBitmap(blob);
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  return { width, height, rgba, bitmap };
}

async function pictureFrom(image) {
  if (typeof image === 'string') {
    const url = new URL(image, location.href);
    const r = await fetch(url).catch(() => null);
    if (!r || !r.ok) throw new Error(`cannot load the picture ${image}`);
    const p = await decodePicture(await r.blob());
    p.url = image;
    return p;
  }
  if (image instanceof Blob) {
    const p = await decodePicture(image);
    p.url = null;
    return p;
  }
  throw new Error('image must be a URL or a Blob');
}

function showPicture(p) {
  const c = $('picture');
  c.width = p.width;
  c.height = p.height;
  c.getContext('2d').drawImage(p.bitmap, 0, 0, p.width, p.height);
  const o = $('overlay');
  o.width = p.width;
  o.height = p.height;
  o.getContext('2d').clearRect(0, 0, p.width, p.height);
  $('placeholder').hidden = true;
}

async function setPicture(image) {
  try {
    showMessage('');
    state.picture = await pictureFrom(image);
    state.result = null;
    showPicture(state.picture);
    $('legend').replaceChildren();
    updateButtons();
    if (state.modelReady) await runFromControls();
  } catch (e) {
    showMessage(e.message);
  }
}

// ---------------------------------------------------------------- segmentation

function palette(i, names) {
  if (names[i] === 'background' && i === 0) return [0, 0, 0, 0];
  // The PASCAL VOC colour map (bit-interleaved), as mmseg and the CLI's overlay use.
  let r = 0, g = 0, b = 0, c = i;
  for (let j = 0; j < 8; j++) {
    r |= ((c >> 0) & 1) << (7 - j);
    g |= ((c >> 1) & 1) << (7 - j);
    b |= ((c >> 2) & 1) << (7 - j);
    c >>= 3;
  }
  return [r, g, b, 255];
}

/** The raw groups of the current picture, drawn instead of the labels (nearest-neighbour). */
async function drawGroups() {
  const p = state.picture;
  if (!p || !state.modelReady) return;
  const rgba = p.rgba.slice();
  const g = await call('groups', { rgba: rgba.buffer, width: p.width, height: p.height }, [rgba.buffer]);
  const mask = new Uint8Array(p.width * p.height);
  for (let y = 0; y < p.height; y++) {
    const gy = Math.min(g.side - 1, Math.floor(((y + 0.5) * g.side) / p.height));
    for (let x = 0; x < p.width; x++) {
      mask[y * p.width + x] = g.mask[gy * g.side + Math.min(g.side - 1, Math.floor(((x + 0.5) * g.side) / p.width))];
    }
  }
  // Group colours start at palette index 1 so none is transparent.
  drawMap({ width: p.width, height: p.height, names: g.names, mask }, (i) => palette(i + 1, []));
}

function drawResult() {
  if ($('groups').checked) $('groups').checked = false;
  drawMap(state.result, (i, names) => palette(i, names));
}

function drawMap(r, colourOf) {
  const o = $('overlay');
  o.width = r.width;
  o.height = r.height;
  const img = new ImageData(r.width, r.height);
  const colours = r.names.map((_, i) => colourOf(i, r.names));
  for (let i = 0; i < r.mask.length; i++) img.data.set(colours[r.mask[i]] || [255, 0, 255, 255], i * 4);
  o.getContext('2d').putImageData(img, 0, 0);
  o.style.opacity = $('opacity').value;
  const counts = new Array(r.names.length).fill(0);
  for (const v of r.mask) counts[v]++;
  const items = r.names
    .map((name, i) => ({ name, i, share: counts[i] / r.mask.length }))
    .filter((x) => x.share > 0)
    .sort((a, b) => b.share - a.share)
    .map(({ name, i, share }) => {
      const li = document.createElement('li');
      const sw = document.createElement('span');
      sw.className = 'swatch';
      const [cr, cg, cb, ca] = colours[i];
      sw.style.background = ca ? `rgb(${cr},${cg},${cb})` : 'transparent';
      const label = document.createElement('span');
      label.textContent = `${name} ${(share * 100).toFixed(1)}%`;
      li.append(sw, label);
      return li;
    });
  $('legend').replaceChildren(...items);
  $('placeholder').hidden = true;
  updateButtons();
}

/** The one segmentation path: the page's button and window.ovseg.segment both come here. */
async function segment({ image, labels, background = true, bgThresh = 0.95, template = 'simple' } = {}) {
  await modelLoaded;
  if (image !== undefined && image !== null) {
    state.picture = await pictureFrom(image);
    showPicture(state.picture);
  }
  const p = state.picture;
  if (!p) throw new Error('no picture chosen');
  if (typeof labels !== 'string') labels = Array.isArray(labels) ? labels.join(',') : '';
  if (!state.hasText && (await call('needsText', { labels, template }))) await loadText();
  const rgba = p.rgba.slice();
  const out = await call('segment', {
    rgba: rgba.buffer, width: p.width, height: p.height, labels, background: !!background, bgThresh: Number(bgThresh), template,
  }, [rgba.buffer]);
  state.timings.segment = out.ms;
  state.timings.encodedText = out.encodedText;
  state.result = {
    width: p.width, height: p.height, names: out.names, mask: out.mask,
    labels: out.names.slice(background ? 1 : 0), background: !!background, bgThresh: Number(bgThresh), template,
  };
  $('shared').hidden = true;
  setStatus();
  drawResult();
  return { width: p.width, height: p.height, labels: out.names.slice(), mask: out.mask.slice() };
}

function controls() {
  return {
    labels: $('labels').value,
    background: $('background').checked,
    bgThresh: Number($('bg-thresh').value),
    template: $('template').value,
  };
}

async function runFromControls() {
  $('segment').disabled = true;
  showMessage('');
  try {
    await segment(controls());
  } catch (e) {
    showMessage(e.message);
  } finally {
    updateButtons();
  }
}

// ---------------------------------------------------------------- share links

async function embeddedJpeg(p) {
  const scale = Math.min(1, EMBED_SIDE / Math.max(p.width, p.height));
  const w = Math.max(1, Math.round(p.width * scale));
  const h = Math.max(1, Math.round(p.height * scale));
  const c = new OffscreenCanvas(w, h);
  c.getContext('2d').drawImage(p.bitmap, 0, 0, w, h);
  const blob = await c.convertToBlob({ type: 'image/jpeg', quality: 0.7 });
  return new Uint8Array(await blob.arrayBuffer());
}

/** The link for what is on screen. */
async function shareLink() {
  const r = state.result;
  if (!r) throw new Error('nothing to share yet: segment a picture first');
  const p = state.picture;
  const imageUrl = p && p.url ? new URL(p.url, location.href).href : null;
  const jpeg = !imageUrl && p ? await embeddedJpeg(p) : null;
  const base = location.href.split('#')[0];
  return call('shareLink', {
    base, labels: r.labels, background: r.background, bgThresh: r.bgThresh, template: r.template,
    model: state.modelUrl ? new URL(state.modelUrl, location.href).href : '',
    width: r.width, height: r.height, mask: r.mask, imageUrl, jpeg,
  });
}

async function openLink(link) {
  let s;
  try {
    s = await call('shareRead', { link });
  } catch (e) {
    $('shared').hidden = false;
    $('shared').classList.add('broken');
    $('rerun').hidden = true;
    $('shared-text').textContent = `This segmentation link cannot be shown: ${e.message}`;
    return false;
  }
  const names = s.background ? ['background', ...s.labels] : [...s.labels];
  let bitmap = null;
  let url = null;
  let refused = null; // why the picture was refused, as for a chosen or dropped one
  try {
    if (s.imageUrl) {
      url = s.imageUrl;
      const r = await fetch(s.imageUrl).catch(() => null);
      if (r && r.ok) bitmap = await pictureBitmap(await r.blob(), { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
    } else if (s.jpeg) {
      bitmap = await pictureBitmap(new Blob([s.jpeg], { type: 'image/jpeg' }), {});
    }
  } catch (e) {
    bitmap = null;
    refused = e.message;
  }
  if (bitmap) {
    // The picture at the label map's size (an embedded JPEG is smaller than the original).
    const c = new OffscreenCanvas(s.width, s.height);
    const ctx = c.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(bitmap, 0, 0, s.width, s.height);
    const rgba = ctx.getImageData(0, 0, s.width, s.height).data;
    state.picture = { width: s.width, height: s.height, rgba, url, bitmap: c.transferToImageBitmap() };
    showPicture(state.picture);
  } else {
    state.picture = null;
    const c = $('picture');
    c.width = s.width;
    c.height = s.height;
    c.getContext('2d').clearRect(0, 0, s.width, s.height);
  }
  state.result = {
    width: s.width, height: s.height, names, mask: s.mask, labels: [...s.labels],
    background: s.background, bgThresh: s.bgThresh, template: s.template,
  };
  $('labels').value = s.labels.join(', ');
  $('background').checked = s.background;
  $('bg-thresh').value = String(s.bgThresh);
  $('template').value = s.template;
  if (s.model) $('model-url').value = s.model;
  drawResult();
  $('shared').hidden = false;
  $('shared').classList.remove('broken');
  $('rerun').hidden = !state.picture;
  $('shared-text').textContent = state.picture
    ? 'This segmentation was opened from a link.'
    : `This segmentation was opened from a link (its picture could not be loaded${refused ? `: ${refused}` : ''}).`;
  return true;
}

// ---------------------------------------------------------------- mask PNG

const crcTable = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
/** The label map as an 8-bit grey PNG holding label indices, like `ovseg segment --out-mask`. */
async function maskPng(r) {
  const raw = new Uint8Array((r.width + 1) * r.height);
  for (let y = 0; y < r.height; y++) raw.set(r.mask.subarray(y * r.width, (y + 1) * r.width), y * (r.width + 1) + 1);
  const zipped = new Uint8Array(await new Response(new Blob([raw]).stream().pipeThrough(new CompressionStream('deflate'))).arrayBuffer());
  const chunk = (type, data) => {
    const out = new Uint8Array(12 + data.length);
    const dv = new DataView(out.buffer);
    dv.setUint32(0, data.length);
    out.set(new TextEncoder().encode(type), 4);
    out.set(data, 8);
    dv.setUint32(8 + data.length, crc32(out.subarray(4, 8 + data.length)));
    return out;
  };
  const ihdr = new Uint8Array(13);
  const dv = new DataView(ihdr.buffer);
  dv.setUint32(0, r.width);
  dv.setUint32(4, r.height);
  ihdr.set([8, 0, 0, 0, 0], 8);
  return new Blob([new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', zipped), chunk('IEND', new Uint8Array())], { type: 'image/png' });
}

// ---------------------------------------------------------------- wiring

function hover(e) {
  const r = state.result;
  if (!r) return;
  const rect = $('overlay').getBoundingClientRect();
  const x = Math.floor(((e.clientX - rect.left) / rect.width) * r.width);
  const y = Math.floor(((e.clientY - rect.top) / rect.height) * r.height);
  if (x < 0 || y < 0 || x >= r.width || y >= r.height) return;
  $('hover').textContent = r.names[r.mask[y * r.width + x]] ?? '—';
}

function isPicture(file) {
  return file.type.startsWith('image/') || /\.(png|jpe?g|webp|gif|bmp)$/i.test(file.name);
}

async function loadVocab() {
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

function wire() {
  $('model-url').value = DEFAULT_MODEL;
  const backend = params.get('backend');
  if (backend && ['auto', 'webgpu', 'cpu'].includes(backend)) $('backend').value = backend;
  const reload = (source) => loadModel(source).catch((e) => { showMessage(e.message); setStatus(); });
  $('load-model').onclick = () => {
    // The user typed or read the URL and asked for it: no second question.
    const url = $('model-url').value.trim();
    try { approved.add(absolute(url)); } catch (_) { /* loadModel names the bad URL */ }
    reload(url);
  };
  $('backend').onchange = async () => {
    const url = state.modelUrl || $('model-url').value.trim();
    if (await mayLoad(url)) reload(url);
  };
  $('keep-model').onchange = () => keepModel($('keep-model').checked);
  $('model-file').onchange = (e) => e.target.files.length && reload(e.target.files);
  $('picture-file').onchange = (e) => e.target.files[0] && setPicture(e.target.files[0]);
  $('preset').onchange = () => {
    const d = state.vocab && state.vocab.datasets[$('preset').value];
    if (!d) return;
    const classes = (d.with_background ? d.classes.slice(1) : d.classes).map((c) => c.trim());
    $('labels').value = classes.join(', ');
    $('background').checked = d.with_background;
    if (d.bg_thresh != null) $('bg-thresh').value = String(d.bg_thresh);
  };
  $('segment').onclick = runFromControls;
  $('opacity').oninput = () => { $('overlay').style.opacity = $('opacity').value; };
  $('groups').onchange = async () => {
    try {
      if ($('groups').checked) await drawGroups();
      else if (state.result) drawMap(state.result, (i, names) => palette(i, names));
    } catch (e) {
      showMessage(e.message);
    }
  };
  $('share').onclick = async () => {
    try {
      const link = await shareLink();
      const out = $('share-out');
      out.hidden = false;
      out.value = link;
      try {
        await navigator.clipboard.writeText(link);
        $('share').textContent = `Copied (${formatBytes(link.length)})`;
      } catch (_) {
        out.select();
        $('share').textContent = 'Copy the link below';
      }
      setTimeout(() => { $('share').textContent = 'Copy share link'; }, 3000);
    } catch (e) {
      showMessage(e.message);
    }
  };
  $('download').onclick = async () => {
    const blob = await maskPng(state.result);
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = 'mask.png';
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  };
  $('rerun').onclick = async () => {
    const wanted = $('model-url').value.trim();
    if (wanted && (!state.modelUrl || absolute(wanted) !== absolute(state.modelUrl))) {
      if (!(await mayLoad(wanted))) return;
      await reload(wanted);
    }
    await runFromControls();
  };
  $('stage').addEventListener('pointermove', hover);
  document.addEventListener('paste', (e) => {
    const file = [...(e.clipboardData?.files || [])].find(isPicture);
    if (file) setPicture(file);
  });
  document.addEventListener('dragover', (e) => { e.preventDefault(); document.body.classList.add('dragging'); });
  document.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
  document.addEventListener('drop', (e) => {
    e.preventDefault();
    document.body.classList.remove('dragging');
    const files = [...(e.dataTransfer?.files || [])];
    if (!files.length) return;
    if (isPicture(files[0])) setPicture(files[0]);
    else reload(files);
  });
  window.addEventListener('hashchange', () => { if (location.hash.length > 1) openLink(location.href); });
}

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
