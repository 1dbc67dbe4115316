// The page: pictures, labels, results, share links. The model runs in worker.js; this thread
// only decodes pictures, draws and talks to the worker. Every label reaches the page through
// textContent, never as HTML. window.ovseg is the scripting surface (README "In the browser").

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const DEFAULT_MODEL = params.get('model') || 'demo/image.ovsegpack';
const MODEL_CACHE = 'ovseg-models-v1';
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
  return `${(n / (1 << 20)).toFixed(1)} MB`;
}
function updateButtons() {
  $('segment').disabled = !(state.modelReady && state.picture);
  $('share').disabled = !state.result;
  $('download').disabled = !state.result;
  $('groups').disabled = !(state.modelReady && state.picture);
}

// ---------------------------------------------------------------- model

async function fetchWithProgress(url) {
  const progress = $('progress');
  const text = $('progress-text');
  let cache = null;
  try { cache = await caches.open(MODEL_CACHE); } catch (_) { /* no Cache Storage (insecure origin) */ }
  const absolute = new URL(url, location.href).href;
  if (cache) {
    const hit = await cache.match(absolute);
    if (hit) {
      const bytes = await hit.arrayBuffer();
      text.textContent = `${formatBytes(bytes.byteLength)} from the browser cache`;
      return { bytes, cached: true };
    }
  }
  const response = await fetch(absolute);
  if (!response.ok) throw new Error(`cannot download the model ${url}: HTTP ${response.status}`);
  const total = Number(response.headers.get('content-length')) || 0;
  progress.hidden = false;
  progress.max = total || 1;
  progress.value = 0;
  const reader = response.body.getReader();
  const chunks = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
    received += value.length;
    progress.value = total ? received : 0;
    text.textContent = `${formatBytes(received)}${total ? ` of ${formatBytes(total)}` : ''}`;
  }
  const bytes = new Uint8Array(received);
  let at = 0;
  for (const c of chunks) { bytes.set(c, at); at += c.length; }
  progress.hidden = true;
  text.textContent = `${formatBytes(received)} downloaded`;
  if (cache) {
    try { await cache.put(absolute, new Response(bytes.slice().buffer)); } catch (_) { /* quota */ }
  }
  return { bytes: bytes.buffer, cached: false };
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
  const res = await optional(at);
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
  const t0 = performance.now();
  if (typeof source === 'string') {
    const got = await fetchWithProgress(source);
    bytes = got.bytes;
    state.timings.cached = got.cached;
    state.modelUrl = source;
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
    state.modelUrl = '';
  }
  state.timings.download = performance.now() - t0;
  state.timings.bytes = bytes.byteLength;
  const isPack = packPart(bytes) === 'image';
  if (typeof source === 'string') {
    // `ovseg export-web` writes this beside the model; plain `ovseg convert` output has none.
    // The tokenizer travels inside the model file, or inside an image pack's text part.
    const cls = await optional(new URL('classes.json', new URL(source, location.href)));
    if (cls) classes = await cls.json().catch(() => null);
  }
  const loaded = await call('load', { model: bytes, tokenizer: isPack ? undefined : tokenizer, backend }, [bytes]);
  state.backend = loaded.backend;
  state.build = loaded.build;
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

/** The image pack's text part: from the chosen files, or `text.ovsegpack` beside the model URL. */
async function loadText() {
  const t0 = performance.now();
  let weights;
  let tokenizer = state.textTokenizer;
  if (state.textFile) {
    weights = await state.textFile.arrayBuffer();
    state.timings.textCached = false;
  } else if (state.modelUrl) {
    const base = new URL(state.modelUrl, location.href);
    $('status').textContent = 'Downloading the text encoder for these words…';
    const got = await fetchWithProgress(new URL('text.ovsegpack', base).href);
    weights = got.bytes;
    state.timings.textCached = got.cached;
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

async function decodePicture(blob) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image' })
    .catch(() => { throw new Error('this file is not a picture the browser can read (JPEG, PNG, WebP, GIF)'); });
  const { width, height } = bitmap;
  if (width * height > MAX_PICTURE_PIXELS) throw new Error(`the picture is ${width}x${height}; at most ${MAX_PICTURE_PIXELS} pixels`);
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
  try {
    if (s.imageUrl) {
      url = s.imageUrl;
      const r = await fetch(s.imageUrl);
      if (r.ok) bitmap = await createImageBitmap(await r.blob(), { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
    } else if (s.jpeg) {
      bitmap = await createImageBitmap(new Blob([s.jpeg], { type: 'image/jpeg' }));
    }
  } catch (_) {
    bitmap = null;
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
    : 'This segmentation was opened from a link (its picture could not be loaded).';
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
  const names = { voc: 'PASCAL VOC (20)', context: 'PASCAL Context (59)', coco_object: 'COCO Object (80)', ade20k: 'ADE20K (150)' };
  for (const [key, title] of Object.entries(names)) {
    if (!state.vocab.datasets[key]) continue;
    const o = document.createElement('option');
    o.value = key;
    o.textContent = title;
    $('preset').append(o);
  }
}

function wire() {
  $('model-url').value = DEFAULT_MODEL;
  const backend = params.get('backend');
  if (backend && ['auto', 'webgpu', 'cpu'].includes(backend)) $('backend').value = backend;
  const reload = (source) => loadModel(source).catch((e) => { showMessage(e.message); setStatus(); });
  $('load-model').onclick = () => reload($('model-url').value.trim());
  $('backend').onchange = () => reload(state.modelUrl || $('model-url').value.trim());
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
    const absolute = (u) => new URL(u, location.href).href;
    if (wanted && (!state.modelUrl || absolute(wanted) !== absolute(state.modelUrl))) await reload(wanted);
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
  await loadVocab();
  const examples = await loadDemo();
  // A shared segmentation shows before any model loads.
  if (location.hash.length > 1) await openLink(location.href);
  if (!state.result) await setPicture(examples[0].url);
  try {
    await loadModel($('model-url').value.trim(), false);
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
