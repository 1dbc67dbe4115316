// The model runs here, off the page's thread. Messages {id, op, ...} are answered with
// {id, ok: true, result} or {id, ok: false, error}; requests are handled one at a time.
import init, * as wasm from './ovseg-web.js';

const ready = init({ module_or_path: new URL('./ovseg-web_bg.wasm', import.meta.url) });
let segmenter = null;
let queue = Promise.resolve();

async function gpuAdapter() {
  if (!self.navigator || !navigator.gpu) return null;
  try {
    return await navigator.gpu.requestAdapter();
  } catch (_) {
    return null;
  }
}

const ops = {
  // Which backends this browser offers.
  async probe() {
    const adapter = await gpuAdapter();
    let info = null;
    if (adapter) {
      const i = adapter.info || {};
      info = [i.vendor, i.architecture, i.description].filter(Boolean).join(' ') || 'WebGPU adapter';
      if (adapter.isFallbackAdapter) info += ' (software fallback)';
    }
    return { webgpu: !!adapter, adapter: info };
  },

  async load({ model, tokenizer, backend }) {
    if (backend === 'webgpu' && !(await gpuAdapter())) {
      throw new Error('WebGPU has no adapter in this browser; use the CPU backend');
    }
    const t0 = performance.now();
    // The previous model stays usable if this one fails to load.
    const next = await wasm.load(new Uint8Array(model), tokenizer ? new Uint8Array(tokenizer) : undefined, backend);
    if (segmenter) segmenter.free();
    segmenter = next;
    return { backend: segmenter.backend(), ms: performance.now() - t0, hasText: segmenter.has_text() };
  },

  // The text part of an image pack, added when words without embeddings are asked for.
  async text({ weights, tokenizer }) {
    if (!segmenter) throw new Error('no model loaded');
    const t0 = performance.now();
    segmenter.add_text_weights(new Uint8Array(weights), tokenizer ? new Uint8Array(tokenizer) : undefined);
    return { ms: performance.now() - t0 };
  },

  async needsText({ labels, template }) {
    if (!segmenter) throw new Error('no model loaded');
    return segmenter.needs_text(labels, template);
  },

  async classes({ labels, template, values }) {
    if (!segmenter) throw new Error('no model loaded');
    segmenter.add_class_embeddings(labels, template, new Float32Array(values));
    return true;
  },

  async segment({ rgba, width, height, labels, background, bgThresh, template }) {
    if (!segmenter) throw new Error('no model loaded');
    const t0 = performance.now();
    const queued = segmenter.start(new Uint8Array(rgba), width, height, labels, background, bgThresh, template);
    const names = queued.names();
    const encodedText = queued.encoded_text();
    const mask = await wasm.read_labels(queued);
    return { mask, names, encodedText, ms: performance.now() - t0, textRuns: segmenter.text_encoder_runs() };
  },

  async groups({ rgba, width, height }) {
    if (!segmenter) throw new Error('no model loaded');
    const queued = segmenter.start_groups(new Uint8Array(rgba), width, height);
    const names = queued.names();
    const mask = await wasm.read_labels(queued);
    return { mask, names, side: Math.round(Math.sqrt(mask.length)) };
  },

  async shareLink(a) {
    return wasm.share_link(a.base, a.labels, a.background, a.bgThresh, a.template, a.model,
      a.width, a.height, a.mask, a.imageUrl || undefined, a.jpeg || undefined);
  },

  async shareRead({ link }) {
    return wasm.share_read(link);
  },
};

self.onmessage = (event) => {
  const { id, op, ...args } = event.data;
  queue = queue.then(async () => {
    try {
      await ready;
      if (!ops[op]) throw new Error(`unknown operation ${op}`);
      const result = await ops[op](args);
      const transfer = result && result.mask instanceof Uint8Array ? [result.mask.buffer] : [];
      self.postMessage({ id, ok: true, result }, transfer);
    } catch (e) {
      self.postMessage({ id, ok: false, error: String(e && e.message ? e.message : e) });
    }
  });
};
