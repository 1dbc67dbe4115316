// The model runs here, off the page's thread. Messages {id, op, ...} are answered with
// {id, ok: true, result} or {id, ok: false, error}; requests are handled one at a time.
//
// The model code comes in two builds of one surface (web/src/lib.rs): the full one with WebGPU
// and the CPU, and a CPU-only one (web-cpu/) a fraction of the size. Each is fetched the first
// time it is needed: a page on the CPU never downloads the WebGPU code.
const builds = {};
let loaded = null; // { build, wasm, segmenter } of the model in use
let queue = Promise.resolve();

function buildFor(backend) {
  // A full build already here also runs the CPU (the same Flex code): no second download.
  if (backend !== 'webgpu' && !builds.full) return 'cpu';
  return 'full';
}

function wasmBuild(build) {
  if (!builds[build]) {
    const name = build === 'full' ? 'ovseg-web' : 'ovseg-web-cpu';
    builds[build] = import(`./${name}.js`).then(async (wasm) => {
      await wasm.default({ module_or_path: new URL(`./${name}_bg.wasm`, import.meta.url) });
      return wasm;
    });
    // A failed download can be retried.
    builds[build].catch(() => delete builds[build]);
  }
  return builds[build];
}

// Links are read and made by whichever build is here, else the small one.
function anyWasm() {
  return loaded ? Promise.resolve(loaded.wasm) : wasmBuild(buildFor('cpu'));
}

function segmenter() {
  if (!loaded) throw new Error('no model loaded');
  return loaded.segmenter;
}

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

  // Starts fetching the code a backend needs, before its model arrives.
  async prepare({ backend }) {
    await wasmBuild(buildFor(backend));
    return true;
  },

  async load({ model, tokenizer, backend }) {
    if (backend === 'webgpu' && !(await gpuAdapter())) {
      throw new Error('WebGPU has no adapter in this browser; use the CPU backend');
    }
    const build = buildFor(backend);
    const wasm = await wasmBuild(build);
    // Timed from here: the code download is not the model's load.
    const t0 = performance.now();
    // The previous model stays usable if this one fails to load.
    const next = await wasm.load(new Uint8Array(model), tokenizer ? new Uint8Array(tokenizer) : undefined, backend);
    if (loaded) loaded.segmenter.free();
    loaded = { build, wasm, segmenter: next };
    return { backend: next.backend(), build, ms: performance.now() - t0, hasText: next.has_text() };
  },

  // The text part of an image pack, added when words without embeddings are asked for.
  async text({ weights, tokenizer }) {
    const t0 = performance.now();
    segmenter().add_text_weights(new Uint8Array(weights), tokenizer ? new Uint8Array(tokenizer) : undefined);
    return { ms: performance.now() - t0 };
  },

  async needsText({ labels, template }) {
    return segmenter().needs_text(labels, template);
  },

  async classes({ labels, template, values }) {
    segmenter().add_class_embeddings(labels, template, new Float32Array(values));
    return true;
  },

  async segment({ rgba, width, height, labels, background, bgThresh, template }) {
    const t0 = performance.now();
    const s = segmenter();
    const queued = s.start({ rgba: new Uint8Array(rgba), width, height, labels, background, bgThresh, template });
    const names = queued.names();
    const encodedText = queued.encoded_text();
    const mask = await loaded.wasm.read_labels(queued);
    return { mask, names, encodedText, ms: performance.now() - t0, textRuns: s.text_encoder_runs() };
  },

  async groups({ rgba, width, height }) {
    const queued = segmenter().start_groups(new Uint8Array(rgba), width, height);
    const names = queued.names();
    const mask = await loaded.wasm.read_labels(queued);
    return { mask, names, side: Math.round(Math.sqrt(mask.length)) };
  },

  async shareLink({ base, labels, background, bgThresh, template, model, width, height, mask, imageUrl, jpeg }) {
    const wasm = await anyWasm();
    return wasm.share_link({
      base, labels, background, bgThresh, template, model, width, height, mask, imageUrl: imageUrl || null, jpeg: jpeg || null,
    });
  },

  async shareRead({ link }) {
    return (await anyWasm()).share_read(link);
  },

  // The model crate's rules for the page (www/rules.js), from the build in use or on its way
  // (no second download).
  async rules() {
    let wasm;
    try {
      wasm = loaded ? loaded.wasm : await (builds.full || builds.cpu || wasmBuild('cpu'));
    } catch (_) {
      wasm = await wasmBuild('cpu');
    }
    return { limits: wasm.request_limits(), palette: wasm.voc_palette() };
  },

  // Which kind of model file bytes begin: 'model', 'image-pack', 'text-pack' or 'checkpoint'
  // (ovseg_model::formats), asked of the build that will load it.
  async kind({ prefix, backend }) {
    return (await wasmBuild(buildFor(backend))).model_file_kind(new Uint8Array(prefix));
  },
};

self.onmessage = (event) => {
  const { id, op, ...args } = event.data;
  queue = queue.then(async () => {
    try {
      if (!ops[op]) throw new Error(`unknown operation ${op}`);
      const result = await ops[op](args);
      const transfer = result && result.mask instanceof Uint8Array ? [result.mask.buffer] : [];
      self.postMessage({ id, ok: true, result }, transfer);
    } catch (e) {
      self.postMessage({ id, ok: false, error: String(e && e.message ? e.message : e) });
    }
  });
};
