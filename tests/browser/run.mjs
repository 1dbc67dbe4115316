// Browser tests of the page (www/, built by trunk) in Debian's headless Chromium, driven by
// playwright-core (never a downloaded browser). scripts/test-browser.sh prepares everything:
// it serves the build with the fixture model exported by `ovseg export-web` in demo/ (int8
// image pack, text pack, presets; the single file of `ovseg convert` as demo/model.ovseg), and
// computes the native CLI's label maps and share link for the same pictures and words.
//
// node run.mjs --base URL --reference mask.png --reference-words mask.png --reference-f32 mask.png
//   --reference-roberta mask.png --cli-link LINK --hostile-link LINK --artifacts DIR
//   [--bench out.json]   also time a 512x512 segmentation on each backend
//   [--bench-model URL]  and, for that model (an export-web image pack on the site), count the
//                        bytes fetched before the page's first segmentation and time 512x512
//   [--only REGEX]       only the tests whose names match
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import zlib from 'node:zlib';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((acc, a, i, all) => (a.startsWith('--') ? [...acc, [a.slice(2), all[i + 1]]] : acc), []),
);
const BASE = args.base;
const ARTIFACTS = args.artifacts || 'artifacts';
const VOC = 'aeroplane,bicycle,bird,boat,bottle,bus,car,cat,chair,cow,table,dog,horse,motorbike,person,plant,sheep,sofa,train,monitor';
fs.mkdirSync(ARTIFACTS, { recursive: true });

const results = [];
// --only REGEX: run only the tests whose names match (while working on some of them).
const ONLY = args.only ? new RegExp(args.only) : null;
async function test(name, fn) {
  if (ONLY && !ONLY.test(name)) return;
  const t0 = Date.now();
  try {
    await fn();
    results.push([name, true]);
    console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (e) {
    results.push([name, false]);
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}
function assert(cond, message) {
  if (!cond) throw new Error(message);
}

/** An 8-bit grey PNG (what `ovseg segment --out-mask` writes) -> {width, height, data}. */
function readGreyPng(file) {
  const buf = fs.readFileSync(file);
  let at = 8;
  let width = 0, height = 0;
  const idat = [];
  while (at < buf.length) {
    const len = buf.readUInt32BE(at);
    const type = buf.toString('ascii', at + 4, at + 8);
    const data = buf.subarray(at + 8, at + 8 + len);
    if (type === 'IHDR') {
      width = data.readUInt32BE(0);
      height = data.readUInt32BE(4);
      assert(data[8] === 8 && data[9] === 0 && data[12] === 0, `${file}: not an 8-bit grey non-interlaced PNG`);
    } else if (type === 'IDAT') idat.push(data);
    at += 12 + len;
  }
  const raw = zlib.inflateSync(Buffer.concat(idat));
  const out = new Uint8Array(width * height);
  const prev = new Uint8Array(width);
  for (let y = 0; y < height; y++) {
    const f = raw[y * (width + 1)];
    const row = raw.subarray(y * (width + 1) + 1, (y + 1) * (width + 1));
    const cur = new Uint8Array(width);
    for (let x = 0; x < width; x++) {
      const a = x > 0 ? cur[x - 1] : 0;
      const b = prev[x];
      const c = x > 0 ? prev[x - 1] : 0;
      let p = 0;
      if (f === 1) p = a;
      else if (f === 2) p = b;
      else if (f === 3) p = (a + b) >> 1;
      else if (f === 4) {
        const pa = Math.abs(b - c), pb = Math.abs(a - c), pc = Math.abs(a + b - 2 * c);
        p = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
      }
      cur[x] = (row[x] + p) & 255;
    }
    out.set(cur, y * width);
    prev.set(cur);
  }
  return { width, height, data: out };
}

/** A zlib-valid link with a hand-made header (hostile content the encoder would refuse). */
function forge(fields) {
  const header = Buffer.from(JSON.stringify({
    labels: ['cat'], background: true, bg_thresh: 0.5, template: 'simple', model: '', width: 2, height: 1,
    image_url: null, jpeg_bytes: 0, ...fields,
  }));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  return `ovseg1.${zlib.deflateSync(Buffer.concat([len, header, Buffer.from([1, 2])])).toString('base64url')}`;
}

function agreement(a, b) {
  assert(a.length === b.length, `sizes differ: ${a.length} vs ${b.length}`);
  let same = 0;
  for (let i = 0; i < a.length; i++) same += a[i] === b[i];
  return same / a.length;
}

/** An 8-bit grey PNG of `width` x `height` zeros (a few kB however large). */
function greyPng(width, height) {
  const chunk = (type, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(type, 4, 'ascii');
    data.copy(out, 8);
    out.writeUInt32BE(zlib.crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr.set([8, 0, 0, 0, 0], 8);
  const raw = Buffer.alloc((width + 1) * height);
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw, { level: 9 })), chunk('IEND', Buffer.alloc(0))]);
}

/**
 * A second server, on another port of 127.0.0.1: another origin than BASE. It serves BASE's files
 * (with CORS headers, so the page on BASE may fetch from it as from any other site) and, for the
 * tests of downloads and the model cache:
 *   /huge/image.ovsegpack   a Content-Length of 2 GiB (the page's limit is 1 GiB), then silence
 *   /bomb/image.ovsegpack   1 GiB + 1 MiB of zeros gzipped (a Content-Length of about 1 MB): the
 *                           page has to count what it reads
 *   /big.png                a 4097x4096 picture (16.8 MP, over the page's 16 MP)
 *   /reexport/{image.ovsegpack,text.ovsegpack,classes.json}
 *                           the export of demo/ (tiny) while `version` is 1, of demo-roberta/
 *                           while it is 2, with ETags that say so and 304s for If-None-Match;
 *                           `classesVersion` changes classes.json's ETag alone; `offline` drops
 *                           every connection to /reexport/
 */
async function otherServer() {
  const files = new Map();
  const baseFile = async (path_) => {
    if (!files.has(path_)) files.set(path_, Buffer.from(await (await fetch(`${BASE}${path_}`)).arrayBuffer()));
    return files.get(path_);
  };
  const bigPng = greyPng(4097, 4096);
  let bomb = null;
  const gzipBomb = () => {
    bomb ??= new Promise((resolve, reject) => {
      const gz = zlib.createGzip({ level: 1 });
      const out = [];
      gz.on('data', (c) => out.push(c));
      gz.on('end', () => resolve(Buffer.concat(out)));
      gz.on('error', reject);
      const zeros = Buffer.alloc(1 << 20);
      let left = 1025;
      const more = () => {
        while (left > 0) {
          left--;
          if (!gz.write(zeros)) return gz.once('drain', more);
        }
        gz.end();
      };
      more();
    });
    return bomb;
  };
  const cors = {
    'access-control-allow-origin': '*',
    'access-control-allow-headers': 'If-None-Match, If-Modified-Since',
    'access-control-expose-headers': 'ETag, Last-Modified, Content-Length',
  };
  const control = { version: 1, classesVersion: 0, offline: false, log: [] };
  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://x');
      control.log.push({ method: req.method, path: url.pathname, ifNoneMatch: req.headers['if-none-match'] || null, status: null });
      const entry = control.log[control.log.length - 1];
      const send = (status, headers, body) => {
        entry.status = status;
        res.writeHead(status, { ...cors, ...headers });
        res.end(body);
      };
      if (req.method === 'OPTIONS') return send(204, {});
      if (url.pathname === '/huge/image.ovsegpack') {
        entry.status = 200;
        res.writeHead(200, { ...cors, 'content-type': 'application/octet-stream', 'content-length': String(2 ** 31) });
        res.write(Buffer.alloc(4096));
        return; // and nothing more: the page has to give up on the header alone
      }
      if (url.pathname === '/bomb/image.ovsegpack') {
        const body = await gzipBomb();
        return send(200, { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip', 'content-length': body.length }, body);
      }
      if (url.pathname === '/big.png') return send(200, { 'content-type': 'image/png', 'content-length': bigPng.length }, bigPng);
      const piece = /^\/reexport\/(image\.ovsegpack|text\.ovsegpack|classes\.json)$/.exec(url.pathname);
      if (piece) {
        if (control.offline) {
          entry.status = 'dropped';
          req.socket.destroy();
          return;
        }
        const name = piece[1];
        const body = await baseFile(`${control.version === 1 ? 'demo' : 'demo-roberta'}/${name}`);
        const etag = `"v${control.version}${name === 'classes.json' ? `.${control.classesVersion}` : ''}-${name}"`;
        if (req.headers['if-none-match'] === etag) return send(304, { etag });
        return send(200, { etag, 'content-type': name.endsWith('.json') ? 'application/json' : 'application/octet-stream', 'content-length': body.length }, body);
      }
      // Everything else: BASE's answer, conditional requests included.
      const forward = {};
      for (const h of ['if-modified-since', 'if-none-match']) if (req.headers[h]) forward[h] = req.headers[h];
      const r = await fetch(`${BASE}${url.pathname.slice(1)}${url.search}`, { headers: forward });
      const headers = {};
      for (const h of ['content-type', 'last-modified', 'etag']) if (r.headers.get(h)) headers[h] = r.headers.get(h);
      const body = Buffer.from(await r.arrayBuffer());
      if (r.status !== 304) headers['content-length'] = body.length;
      return send(r.status, headers, r.status === 304 ? undefined : body);
    } catch (e) {
      res.destroy();
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  control.base = `http://127.0.0.1:${server.address().port}/`;
  control.close = () => { server.closeAllConnections(); server.close(); };
  return control;
}

/** The model files each Cache Storage cache holds: {path: the export they belong to}. */
async function cachedModels(page) {
  return page.evaluate(async () => {
    const out = {};
    for (const name of await caches.keys()) {
      const c = await caches.open(name);
      for (const r of await c.keys()) out[new URL(r.url).pathname] = (await c.match(r)).headers.get('x-ovseg-export');
    }
    return out;
  });
}

const FLAGS = ['--no-sandbox', '--disable-gpu-sandbox', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic',
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1'];

async function browser(webgpu) {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: webgpu ? [...FLAGS, '--enable-unsafe-webgpu'] : FLAGS,
  });
}

/** A fresh page; records page errors and dialogs (an alert would mean injected script). */
async function open(b, url, { blockModel = false } = {}) {
  const context = await b.newContext({ viewport: { width: 1100, height: 900 } });
  const page = await visit(context, url, { blockModel });
  return { page, context };
}

/** A new page in `context` (which keeps its Cache Storage between pages), instrumented as open's. */
async function visit(context, url, { blockModel = false } = {}) {
  const page = await context.newPage();
  page.errors = [];
  page.dialogs = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('dialog', (d) => { page.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  // An optional file the page probes for (classes.json) may 404: not an error.
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) page.errors.push(`console: ${m.text()}`); });
  if (blockModel) await page.route(/\.ovseg(pack)?$/, (r) => r.abort());
  page.requested = [];
  page.urls = [];
  page.on('request', (r) => { page.requested.push(new URL(r.url()).pathname); page.urls.push(r.url()); });
  page.setDefaultTimeout(600_000);
  await page.goto(url);
  return page;
}

async function segmentIn(page, image, labels, extra = {}) {
  return page.evaluate(async ({ image, labels, extra }) => {
    await window.ovseg.ready;
    const t0 = performance.now();
    const r = await window.ovseg.segment({ image, labels, background: true, bgThresh: 0.95, template: 'simple', ...extra });
    return { width: r.width, height: r.height, labels: r.labels, mask: Array.from(r.mask), ms: performance.now() - t0, backend: window.ovseg.backend };
  }, { image, labels, extra });
}

const reference = readGreyPng(args.reference);
const referenceWords = readGreyPng(args['reference-words']);
const referenceF32 = readGreyPng(args['reference-f32']);
const referenceRoberta = readGreyPng(args['reference-roberta']);
const fetched = (page, file) => page.requested.filter((p) => p.endsWith(`/${file}`)).length;
const other = await otherServer();
const bench = {};
let cpuLink = null;
let cpuMask = null;

for (const path_ of ['cpu', 'webgpu']) {
  const webgpu = path_ === 'webgpu';
  const b = await browser(webgpu);
  await test(`${path_}: page loads the fixture model on ${path_} automatically`, async () => {
    const { page, context } = await open(b, BASE);
    const backend = await page.evaluate(() => window.ovseg.ready);
    assert(backend === path_, `backend ${backend}, expected ${path_}`);
    assert(await page.evaluate(() => window.ovseg.backend) === path_, 'window.ovseg.backend');
    const legend = await page.locator('#legend li').count();
    assert(legend > 0, 'the bundled picture was segmented on load (legend shown)');
    // The CPU path downloads only the CPU-only build of the code, WebGPU only the full one.
    const full = fetched(page, 'ovseg-web_bg.wasm');
    const cpuOnly = fetched(page, 'ovseg-web-cpu_bg.wasm');
    assert(webgpu ? full === 1 && cpuOnly === 0 : cpuOnly === 1 && full === 0, `code fetched: full build ${full}, CPU-only build ${cpuOnly}`);
    if (!webgpu) assert(/CPU-only build/.test(await page.textContent('#status')), 'status names the CPU-only build');
    await page.screenshot({ path: path.join(ARTIFACTS, `${path_}-start.png`), fullPage: true });
    await context.close();
  });
  if (!webgpu) {
    await test('cpu: demo.json beside the model gives the examples, the words and the first picture', async () => {
      // scripts/test-browser.sh writes demo-world/: the model, and demo.json naming cat.png.
      const { page, context } = await open(b, `${BASE}?model=demo-world/model.ovseg`);
      await page.evaluate(() => window.ovseg.ready);
      const buttons = await page.locator('#examples button').allTextContents();
      assert(JSON.stringify(buttons) === JSON.stringify(['a cat', 'coffee <b>']), `examples ${buttons}`);
      assert(await page.inputValue('#labels') === 'cat, dog', 'labels from demo.json');
      const shown = await page.evaluate(() => window.ovseg.current());
      assert(shown && shown.width === 224 && shown.labels.join() === 'background,cat,dog', `first result ${JSON.stringify(shown && shown.labels)}`);
      assert(page.errors.length === 0, `page errors: ${page.errors.join('; ')}`);
      await context.close();
    });
  }
  await test(`${path_}: label map of the bundled picture matches the native CLI`, async () => {
    const { page, context } = await open(b, BASE);
    const r = await segmentIn(page, 'examples/astronaut.png', VOC);
    assert(r.width === reference.width && r.height === reference.height, `size ${r.width}x${r.height}`);
    assert(r.labels[0] === 'background' && r.labels.length === 21, `labels ${r.labels}`);
    const agree = agreement(r.mask, reference.data);
    console.log(`     ${path_}: ${(agree * 100).toFixed(4)}% of pixels equal to the CLI's, ${(r.ms / 1000).toFixed(2)} s`);
    if (webgpu) assert(agree >= 0.999, `only ${(agree * 100).toFixed(3)}% equal on WebGPU`);
    else assert(agree === 1, `CPU path differs from the CLI on ${Math.round((1 - agree) * r.mask.length)} pixels`);
    // Same words again: the text encoder does not run.
    const again = await segmentIn(page, 'examples/cat.png', VOC);
    const t = await page.evaluate(() => window.ovseg.timings);
    assert(again.width === 224 && t.encodedText === false, `words re-encoded: ${JSON.stringify(t)}`);
    await page.evaluate(async () => { await window.ovseg.segment({ image: 'examples/astronaut.png', labels: 'aeroplane,bicycle,bird,boat,bottle,bus,car,cat,chair,cow,table,dog,horse,motorbike,person,plant,sheep,sofa,train,monitor' }); });
    await page.screenshot({ path: path.join(ARTIFACTS, `${path_}-voc.png`), fullPage: true });
    if (!webgpu) {
      cpuLink = await page.evaluate(() => window.ovseg.shareLink());
      cpuMask = r.mask;
    }
    assert(page.errors.length === 0, `page errors: ${page.errors.join('; ')}`);
    await context.close();
  });
  if (!webgpu) {
    await test('cpu: the image pack segments the page\'s words alone; other words fetch the text pack once, as the CLI', async () => {
      const { page, context } = await open(b, BASE);
      await page.evaluate(() => window.ovseg.ready);
      assert(fetched(page, 'image.ovsegpack') === 1, `image pack fetched ${fetched(page, 'image.ovsegpack')} times`);
      assert(fetched(page, 'text.ovsegpack') === 0, 'the text pack was fetched for preset words');
      assert(/text encoder not needed yet/.test(await page.textContent('#status')), 'status says the text encoder is not needed');
      const r = await segmentIn(page, 'examples/cat.png', 'cat, sky, grass');
      assert(r.width === referenceWords.width && r.labels.join() === 'background,cat,sky,grass', `result ${r.width} ${r.labels}`);
      const agree = agreement(r.mask, referenceWords.data);
      assert(agree === 1, `differs from the CLI on ${Math.round((1 - agree) * r.mask.length)} pixels`);
      assert(fetched(page, 'text.ovsegpack') === 1, 'text pack fetched once');
      await segmentIn(page, 'examples/cat.png', 'dog, cat');
      assert(fetched(page, 'text.ovsegpack') === 1, 'text pack fetched again');
      const t = await page.evaluate(() => window.ovseg.timings);
      assert(t.textBytes > 0 && t.encodedText === true, `timings ${JSON.stringify(t)}`);
      assert(/text encoder .* downloaded/.test(await page.textContent('#status')), 'status shows the text download');
      assert(page.errors.length === 0, `page errors: ${page.errors.join('; ')}`);
      await context.close();
    });
    await test('cpu: a RoBERTa export segments words outside its presets with the tokenizer in its text pack, as the CLI', async () => {
      const { page, context } = await open(b, `${BASE}?model=demo-roberta/image.ovsegpack`);
      await page.evaluate(() => window.ovseg.ready);
      const r = await segmentIn(page, 'examples/cat.png', 'cat, sky, grass');
      assert(r.width === referenceRoberta.width && r.labels.join() === 'background,cat,sky,grass', `result ${r.width} ${r.labels}`);
      const agree = agreement(r.mask, referenceRoberta.data);
      assert(agree === 1, `differs from the CLI on ${Math.round((1 - agree) * r.mask.length)} pixels`);
      assert(fetched(page, 'text.ovsegpack') === 1, 'text pack fetched once');
      assert(fetched(page, 'tokenizer.json') === 0, 'no separate tokenizer.json is fetched');
      const t = await page.evaluate(() => window.ovseg.timings);
      assert(t.encodedText === true, `timings ${JSON.stringify(t)}`);
      assert(page.errors.length === 0, `page errors: ${page.errors.join('; ')}`);
      await context.close();
    });
    await test('cpu: the single file of ovseg convert still loads, and chosen pack files work without a URL', async () => {
      const { page, context } = await open(b, `${BASE}?model=demo/model.ovseg`);
      const r = await segmentIn(page, 'examples/astronaut.png', VOC);
      const agree = agreement(r.mask, referenceF32.data);
      assert(agree === 1, `single file differs from the CLI on ${Math.round((1 - agree) * r.mask.length)} pixels`);
      const file = async (name) => ({ name, mimeType: 'application/octet-stream', buffer: Buffer.from(await (await fetch(`${BASE}demo/${name}`)).arrayBuffer()) });
      // The image pack alone: words it has no embeddings for need its text pack.
      await page.setInputFiles('#model-file', [await file('image.ovsegpack')]);
      await page.waitForFunction(() => window.ovseg.loaded);
      const alone = await page.evaluate(async () => {
        try { await window.ovseg.segment({ image: 'examples/cat.png', labels: 'cat, sky, grass' }); return 'no error'; } catch (e) { return e.message; }
      });
      assert(/text\.ovsegpack too/.test(alone), `image pack alone: ${alone}`);
      await page.setInputFiles('#model-file', [await file('image.ovsegpack'), await file('text.ovsegpack'), await file('classes.json')]);
      await page.waitForFunction(() => window.ovseg.loaded);
      const w = await segmentIn(page, 'examples/cat.png', 'cat, sky, grass');
      const agreeWords = agreement(w.mask, referenceWords.data);
      assert(agreeWords === 1, `chosen files differ from the CLI on ${Math.round((1 - agreeWords) * w.mask.length)} pixels`);
      assert(page.errors.length === 0, `page errors: ${page.errors.join('; ')}`);
      await context.close();
    });
  }
  if (args.bench) {
    await test(`${path_}: 512x512 segmentation time`, async () => {
      const { page, context } = await open(b, BASE);
      const times = await page.evaluate(async (labels) => {
        // eslint-disable-next-line no-unused-vars
        await window.ovseg.ready;
        const c = new OffscreenCanvas(512, 512);
        const ctx = c.getContext('2d');
        const bmp = await createImageBitmap(await (await fetch('examples/astronaut.png')).blob());
        ctx.drawImage(bmp, 0, 0, 512, 512);
        const blob = await c.convertToBlob({ type: 'image/png' });
        await window.ovseg.segment({ image: blob, labels }); // warm-up, encodes the words
        const out = [];
        for (let i = 0; i < 3; i++) {
          const t0 = performance.now();
          await window.ovseg.segment({ image: blob, labels });
          out.push(performance.now() - t0);
        }
        // The share link of a 512x512 picture with 5 labels (picture embedded as a JPEG).
        await window.ovseg.segment({ image: blob, labels: 'person, rocket, flag, sky, wall' });
        const link = await window.ovseg.shareLink();
        return { out, link: link.length - link.indexOf('#') };
      }, VOC);
      const t = times.out.sort((a, b) => a - b);
      bench[path_] = t[1];
      bench.share_512_5 = times.link;
      await context.close();
    });
  }
  if (args.bench && args['bench-model']) {
    await test(`${path_}: bench model: bytes before the first segmentation, 512x512 time`, async () => {
      const { page, context } = await open(b, `${BASE}?model=${args['bench-model']}&backend=${path_}`);
      const sizes = new Map();
      page.on('requestfinished', async (r) => {
        const s = await r.sizes().catch(() => null);
        if (s) sizes.set(new URL(r.url()).pathname, s.responseBodySize);
      });
      await page.evaluate(() => window.ovseg.ready);
      await new Promise((r) => setTimeout(r, 500)); // the last requestfinished events
      const first = [...sizes.entries()];
      const ms = await page.evaluate(async () => {
        const c = new OffscreenCanvas(512, 512);
        c.getContext('2d').drawImage(await createImageBitmap(await (await fetch('examples/astronaut.png')).blob()), 0, 0, 512, 512);
        const blob = await c.convertToBlob({ type: 'image/png' });
        const labels = document.getElementById('labels').value;
        const out = [];
        for (let i = 0; i < 3; i++) {
          const t0 = performance.now();
          await window.ovseg.segment({ image: blob, labels });
          out.push(performance.now() - t0);
        }
        return out.sort((a, x) => a - x)[1];
      });
      assert(fetched(page, 'text.ovsegpack') === 0, 'the text pack was fetched for the page\'s words');
      bench[`model_${path_}`] = { ms, requests: Object.fromEntries(first) };
      await context.close();
    });
  }
  await b.close();
}

const b = await browser(false);
await test('share link: a fresh page shows the same segmentation before any model loads', async () => {
  assert(cpuLink && cpuLink.includes('#ovseg1.'), `link ${cpuLink && cpuLink.slice(0, 80)}`);
  console.log(`     share link for 672x448, 20 VOC labels, picture by URL: ${cpuLink.length} characters`);
  const { page, context } = await open(b, cpuLink, { blockModel: true });
  await page.waitForFunction(() => window.ovseg.current() !== null);
  const shown = await page.evaluate(() => window.ovseg.current());
  assert(agreement(shown.mask, cpuMask) === 1, 'the link shows a different label map');
  assert(await page.isVisible('#shared'), 'the "opened from a link" notice is shown');
  assert(await page.evaluate(() => window.ovseg.backend) === null, 'no model was loaded');
  assert(fetched(page, 'ovseg-web_bg.wasm') === 0, 'a link is read by the CPU-only build');
  await page.screenshot({ path: path.join(ARTIFACTS, 'share-opened.png'), fullPage: true });
  await context.close();
});
await test('share link: the CLI\'s link (ovseg segment --share-url) shows the CLI\'s label map', async () => {
  const { page, context } = await open(b, args['cli-link'], { blockModel: true });
  await page.waitForFunction(() => window.ovseg.current() !== null);
  const shown = await page.evaluate(() => window.ovseg.current());
  assert(agreement(shown.mask, reference.data) === 1, 'differs from the CLI mask');
  await page.screenshot({ path: path.join(ARTIFACTS, 'share-cli.png'), fullPage: true });
  await context.close();
});
await test('share link: run again recomputes it with the model', async () => {
  const { page, context } = await open(b, cpuLink);
  await page.evaluate(() => window.ovseg.ready);
  await page.click('#rerun');
  await page.waitForFunction(() => document.getElementById('shared').hidden);
  const shown = await page.evaluate(() => window.ovseg.current());
  assert(agreement(shown.mask, cpuMask) === 1, 'rerun differs');
  await context.close();
});
await test('share link: truncated, tampered and hostile links give a message, never a crash or script', async () => {
  const hash = cpuLink.indexOf('#');
  const body = cpuLink.slice(hash + 1);
  const flip = (s, i) => s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
  const cases = {
    truncated: cpuLink.slice(0, hash + 1 + Math.floor(body.length / 2)),
    tampered: cpuLink.slice(0, hash + 1) + flip(body, Math.floor(body.length * 0.6)),
    markup: `${cpuLink.slice(0, hash)}#ovseg1.<img src=x onerror=alert(1)>`,
    version: `${cpuLink.slice(0, hash)}#ovseg9.AAAA`,
    // 9 MB of zeros deflate to a few kB: refused by the inflate limit.
    bomb: `${cpuLink.slice(0, hash)}#ovseg1.${zlib.deflateSync(Buffer.alloc(9 << 20)).toString('base64url')}`,
    huge: `${cpuLink.slice(0, hash)}#${forge({ width: 100000, height: 100000 })}`,
    script_url: `${cpuLink.slice(0, hash)}#${forge({ image_url: 'javascript:alert(1)' })}`,
    long: `${cpuLink.slice(0, hash)}#ovseg1.${'A'.repeat((2 << 20) - 200)}`,
  };
  for (const [name, link] of Object.entries(cases)) {
    const { page, context } = await open(b, link, { blockModel: true });
    await page.waitForFunction(() => document.getElementById('shared').classList.contains('broken'), null, { timeout: 60_000 });
    const text = await page.textContent('#shared-text');
    console.log(`     ${name}: ${text}`);
    assert(/cannot be shown/.test(text), `${name}: message ${text}`);
    assert(page.dialogs.length === 0 && (await page.locator('img').count()) === 0, `${name}: injected content`);
    assert(page.errors.filter((e) => !e.includes('ERR_FAILED') && !e.includes('Failed to load')).length === 0, `${name}: ${page.errors}`);
    if (name === 'tampered') await page.screenshot({ path: path.join(ARTIFACTS, 'share-tampered.png'), fullPage: true });
    await context.close();
  }
  // A valid link whose label is markup: shown as text.
  const { page, context } = await open(b, args['hostile-link'], { blockModel: true });
  await page.waitForFunction(() => window.ovseg.current() !== null);
  const legend = await page.textContent('#legend');
  assert(legend.includes('<img src=x onerror=alert(1)>'), `legend: ${legend}`);
  assert(page.dialogs.length === 0 && (await page.locator('#legend img, #legend script').count()) === 0, 'markup was rendered');
  await page.screenshot({ path: path.join(ARTIFACTS, 'share-markup-label.png'), fullPage: true });
  await context.close();
});
await test('page: a phone-sized screen, a second visit from the browser cache, bad input messages', async () => {
  const context = await b.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
  const page = await context.newPage();
  page.setDefaultTimeout(600_000);
  await page.goto(BASE);
  await page.evaluate(() => window.ovseg.ready);
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert(overflow <= 0, `the page is ${overflow}px wider than the phone`);
  await page.screenshot({ path: path.join(ARTIFACTS, 'phone.png'), fullPage: true });
  await page.reload();
  await page.evaluate(() => window.ovseg.ready);
  const status = await page.textContent('#status');
  assert(status.includes('from the browser cache'), `second visit: ${status}`);
  const bad = await page.evaluate(async () => {
    try { await window.ovseg.segment({ image: 'examples/cat.png', labels: 'cat,,dog' }); return 'no error'; } catch (e) { return e.message; }
  });
  assert(/empty/.test(bad), `bad labels: ${bad}`);
  await page.fill('#labels', 'cat,,dog');
  await page.click('#segment');
  await page.waitForFunction(() => !document.getElementById('message').hidden);
  assert(/empty/.test(await page.textContent('#message')), 'message shown for bad labels');
  // Keyboard: the main controls are reachable with Tab.
  const reached = new Set();
  await page.focus('body');
  for (let i = 0; i < 30; i++) {
    await page.keyboard.press('Tab');
    reached.add(await page.evaluate(() => document.activeElement && document.activeElement.id));
  }
  for (const id of ['labels', 'segment', 'preset', 'picture-file', 'opacity']) assert(reached.has(id), `Tab never reaches #${id}`);
  await context.close();
});
await test('links: a model on another site loads only after Load in the page; Cancel loads nothing; same-site models load at once', async () => {
  const foreign = `${other.base}demo/image.ovsegpack`;
  const fromOther = (page) => page.urls.filter((u) => u.startsWith(other.base));
  const noErrors = (page) => page.errors.filter((e) => !e.includes('Failed to load'));
  // ?model= on another origin: a question naming that origin, and nothing asked of it yet.
  {
    const { page, context } = await open(b, `${BASE}?model=${encodeURIComponent(foreign)}&backend=cpu`);
    await page.waitForSelector('#confirm-model', { state: 'visible' });
    const origin = await page.textContent('#confirm-origin');
    assert(origin === other.base.slice(0, -1), `the question names ${origin}`);
    assert(await page.textContent('#confirm-url') === foreign, 'the question names the URL');
    await new Promise((r) => setTimeout(r, 1000));
    assert(fromOther(page).length === 0, `fetched from the other site before Load: ${fromOther(page)}`);
    assert(!(await page.evaluate(() => window.ovseg.loaded)), 'a model loaded before Load');
    assert(page.dialogs.length === 0, 'a browser dialog was used');
    await page.screenshot({ path: path.join(ARTIFACTS, 'confirm-model.png'), fullPage: true });
    await page.click('#confirm-load');
    assert(await page.evaluate(() => window.ovseg.ready) === 'cpu', 'no model after Load');
    assert(await page.isHidden('#confirm-model'), 'the question stays after Load');
    assert(fromOther(page).includes(foreign), `the model did not come from the other site: ${fromOther(page)}`);
    assert(await page.locator('#legend li').count() > 0, 'the first picture was not segmented');
    assert(!(await page.isChecked('#keep-model')), 'a link\'s model is kept unasked');
    const kept = await cachedModels(page);
    assert(Object.keys(kept).length === 0, `stored without being kept: ${JSON.stringify(kept)}`);
    assert(noErrors(page).length === 0, `page errors: ${noErrors(page).join('; ')}`);
    await context.close();
  }
  // Cancel: nothing is fetched from there, no model loads.
  {
    const { page, context } = await open(b, `${BASE}?model=${encodeURIComponent(foreign)}&backend=cpu`);
    await page.waitForSelector('#confirm-model', { state: 'visible' });
    await page.click('#confirm-cancel');
    await new Promise((r) => setTimeout(r, 1500));
    assert(await page.isHidden('#confirm-model'), 'the question stays after Cancel');
    assert(fromOther(page).length === 0, `fetched from the other site after Cancel: ${fromOther(page)}`);
    assert(!(await page.evaluate(() => window.ovseg.loaded)), 'a model loaded after Cancel');
    assert(/not loaded/.test(await page.textContent('#status')), `status: ${await page.textContent('#status')}`);
    assert(noErrors(page).length === 0, `page errors: ${noErrors(page).join('; ')}`);
    await context.close();
  }
  // A share link naming a model on another site: its segmentation shows, the model waits.
  {
    const { page, context } = await open(b, `${BASE}#${forge({ model: foreign })}`);
    await page.waitForSelector('#confirm-model', { state: 'visible' });
    assert(await page.evaluate(() => window.ovseg.current()) !== null, 'the link\'s segmentation is not shown');
    assert(await page.textContent('#confirm-url') === foreign, 'the question names the link\'s model');
    await page.click('#confirm-cancel');
    await new Promise((r) => setTimeout(r, 1000));
    assert(fromOther(page).length === 0, `fetched from the other site: ${fromOther(page)}`);
    await context.close();
  }
  // The same site's model by ?model=: no question (the demo-world and RoBERTa tests load them).
  {
    const { page, context } = await open(b, `${BASE}?model=demo/image.ovsegpack&backend=cpu`);
    await page.evaluate(() => window.ovseg.ready);
    assert(await page.isHidden('#confirm-model'), 'asked about the page\'s own site');
    await context.close();
  }
});
await test('links: a link\'s model is stored only when kept (the demo model always), and forgotten when unticked', async () => {
  const { page, context } = await open(b, `${BASE}?model=demo-roberta/image.ovsegpack&backend=cpu`);
  await page.evaluate(() => window.ovseg.ready);
  assert(!(await page.isChecked('#keep-model')), 'kept unasked');
  assert(Object.keys(await cachedModels(page)).length === 0, 'stored unasked');
  await page.check('#keep-model');
  await page.waitForFunction(() => /kept in this browser/.test(document.getElementById('progress-text').textContent));
  let kept = await cachedModels(page);
  assert(kept['/demo-roberta/image.ovsegpack'] && kept['/demo-roberta/classes.json'] === kept['/demo-roberta/image.ovsegpack'], `kept: ${JSON.stringify(kept)}`);
  // Its text pack, fetched for other words, joins the same export in the cache.
  await segmentIn(page, 'examples/cat.png', 'cat, sky, grass');
  kept = await cachedModels(page);
  assert(kept['/demo-roberta/text.ovsegpack'] === kept['/demo-roberta/image.ovsegpack'], `kept: ${JSON.stringify(kept)}`);
  await page.reload();
  await page.evaluate(() => window.ovseg.ready);
  assert((await page.textContent('#status')).includes('from the browser cache'), `second visit: ${await page.textContent('#status')}`);
  assert(await page.isChecked('#keep-model'), 'a kept model is not shown as kept');
  await page.uncheck('#keep-model');
  await page.waitForFunction(() => /not kept/.test(document.getElementById('progress-text').textContent));
  kept = await cachedModels(page);
  assert(Object.keys(kept).length === 0, `still stored: ${JSON.stringify(kept)}`);
  // The site's demo model is stored without asking.
  await page.goto(BASE);
  await page.evaluate(() => window.ovseg.ready);
  assert(await page.isChecked('#keep-model'), 'the demo model is not kept');
  kept = await cachedModels(page);
  assert(kept['/demo/image.ovsegpack'] && kept['/demo/classes.json'] === kept['/demo/image.ovsegpack'], `demo: ${JSON.stringify(kept)}`);
  assert(page.errors.length === 0, `page errors: ${page.errors.join('; ')}`);
  await context.close();
});
await test('downloads: a model over 1 GiB (by its Content-Length, or counted as it streams) gives a message naming it and the limit; nothing is stored', async () => {
  const { page, context } = await open(b, `${other.base}?model=huge/image.ovsegpack&backend=cpu`);
  const t0 = Date.now();
  await page.waitForFunction(() => /limit/.test(document.getElementById('message').textContent), null, { timeout: 60_000 });
  const text = await page.textContent('#message');
  console.log(`     ${text} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  assert(text.includes(`${other.base}huge/image.ovsegpack`) && text.includes('1 GiB'), `message: ${text}`);
  assert(await page.isVisible('#message'), 'the message is not shown');
  assert(!(await page.evaluate(() => window.ovseg.loaded)), 'a model loaded');
  const kept = await cachedModels(page);
  assert(Object.keys(kept).length === 0, `stored: ${JSON.stringify(kept)}`);
  // A small Content-Length, but more than 1 GiB once decompressed: stopped by the count.
  await page.evaluate(() => window.ovseg.loadModel('bomb/image.ovsegpack').catch((e) => { document.getElementById('message').textContent = e.message; }));
  const counted = await page.textContent('#message');
  console.log(`     ${counted}`);
  assert(counted.includes(`${other.base}bomb/image.ovsegpack`) && counted.includes('1 GiB') && counted.includes('stopped after'), `message: ${counted}`);
  const keptAfter = await cachedModels(page);
  assert(Object.keys(keptAfter).length === 0, `stored: ${JSON.stringify(keptAfter)}`);
  await context.close();
});
await test('share link: its picture over 16 MP is refused with the message a dropped picture gets', async () => {
  const big = `${other.base}big.png`;
  const { page, context } = await open(b, `${BASE}#${forge({ image_url: big })}`);
  await page.waitForFunction(() => window.ovseg.current() !== null);
  const notice = await page.textContent('#shared-text');
  await page.evaluate(() => window.ovseg.ready);
  assert(await page.isHidden('#rerun'), 'the refused picture can be run again');
  // The same picture dropped on the page.
  await page.evaluate(async (url) => {
    const blob = await (await fetch(url)).blob();
    const dt = new DataTransfer();
    dt.items.add(new File([blob], 'big.png', { type: 'image/png' }));
    document.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));
  }, big);
  await page.waitForFunction(() => !document.getElementById('message').hidden);
  const dropped = await page.textContent('#message');
  console.log(`     link: ${notice}\n     dropped: ${dropped}`);
  assert(/^the picture is 4097x4096; at most 16777216 pixels$/.test(dropped), `dropped: ${dropped}`);
  assert(notice.includes(dropped), `link: ${notice}`);
  assert(page.errors.length === 0, `page errors: ${page.errors.join('; ')}`);
  await context.close();
});
await test('model cache: a re-exported model is seen on the next visit, its classes.json and text pack with it; offline uses the copy', async () => {
  // The RoBERTa export's label map for the VOC words (its classes.json), for comparison.
  const ref = await open(b, `${BASE}?model=demo-roberta/image.ovsegpack&backend=cpu`);
  const robertaVoc = (await segmentIn(ref.page, 'examples/astronaut.png', VOC)).mask;
  await ref.context.close();
  assert(agreement(robertaVoc, reference.data) < 1 && agreement(referenceRoberta.data, referenceWords.data) < 1,
    'the two exports give the same label maps: this test could not tell them apart');
  const url = `${other.base}?model=reexport/image.ovsegpack&backend=cpu`;
  const context = await b.newContext({ viewport: { width: 1100, height: 900 } });
  const pieces = (since) => other.log.slice(since).filter((e) => /^\/reexport\/(image\.ovsegpack|text\.ovsegpack|classes\.json)$/.test(e.path));
  const exportsKept = async (page) => new Set(Object.entries(await cachedModels(page)).filter(([p]) => p.startsWith('/reexport/')).map(([, id]) => id));
  const check = async (page, voc, words, what) => {
    const v = await segmentIn(page, 'examples/astronaut.png', VOC);
    assert(agreement(v.mask, voc) === 1, `${what}: the VOC words (classes.json) differ on ${v.mask.filter((x, i) => x !== voc[i]).length} pixels`);
    const w = await segmentIn(page, 'examples/cat.png', 'cat, sky, grass');
    assert(agreement(w.mask, words) === 1, `${what}: words outside the presets (text pack) differ`);
  };
  other.version = 1;
  other.classesVersion = 0;
  // 1. The tiny export, kept.
  let page = await visit(context, url);
  await page.evaluate(() => window.ovseg.ready);
  await page.check('#keep-model');
  await page.waitForFunction(() => /kept in this browser/.test(document.getElementById('progress-text').textContent));
  await check(page, reference.data, referenceWords.data, 'first export');
  let ids = await exportsKept(page);
  assert(ids.size === 1 && ids.has('etag "v1-image.ovsegpack"') && Object.keys(await cachedModels(page)).filter((p) => p.startsWith('/reexport/')).length === 3, `kept: ${JSON.stringify(await cachedModels(page))}`);
  await page.close();
  // 2. Exported again (the RoBERTa model): the next visit asks, gets it, and every piece with it.
  other.version = 2;
  let since = other.log.length;
  page = await visit(context, url);
  await page.evaluate(() => window.ovseg.ready);
  const status = await page.textContent('#status');
  assert(/downloaded/.test(status) && !status.includes('from the browser cache'), `the old copy was used: ${status}`);
  const asked = pieces(since).find((e) => e.path === '/reexport/image.ovsegpack');
  assert(asked && asked.ifNoneMatch === '"v1-image.ovsegpack"' && asked.status === 200, `image pack request: ${JSON.stringify(asked)}`);
  assert(await page.isChecked('#keep-model'), 'no longer kept');
  await check(page, robertaVoc, referenceRoberta.data, 'second export');
  ids = await exportsKept(page);
  assert(ids.size === 1 && ids.has('etag "v2-image.ovsegpack"'), `kept pieces of several exports: ${JSON.stringify(await cachedModels(page))}`);
  await page.close();
  // 3. Unchanged: every piece from the cache after a 304.
  since = other.log.length;
  page = await visit(context, url);
  await page.evaluate(() => window.ovseg.ready);
  assert((await page.textContent('#status')).includes('from the browser cache'), `unchanged: ${await page.textContent('#status')}`);
  await check(page, robertaVoc, referenceRoberta.data, 'unchanged');
  const answers = pieces(since).map((e) => `${e.path.slice(10)} ${e.status}`);
  assert(answers.length === 3 && answers.every((a) => a.endsWith(' 304')), `unchanged: ${answers}`);
  assert((await page.evaluate(() => window.ovseg.timings)).textCached === true, 'the text pack was downloaded again');
  await page.close();
  // 4. classes.json changed but not its image pack: the whole export is fetched again.
  other.classesVersion = 1;
  since = other.log.length;
  page = await visit(context, url);
  await page.evaluate(() => window.ovseg.ready);
  const images = pieces(since).filter((e) => e.path === '/reexport/image.ovsegpack');
  assert(images.length === 2, `image pack requests: ${JSON.stringify(images)}`);
  await check(page, robertaVoc, referenceRoberta.data, 'classes.json changed');
  const kept = await cachedModels(page);
  assert(Object.keys(kept).filter((p) => p.startsWith('/reexport/')).length === 3 && new Set(Object.values(kept)).size === 1, `kept: ${JSON.stringify(kept)}`);
  await page.close();
  // 5. Offline: the kept copy.
  other.offline = true;
  page = await visit(context, url);
  await page.evaluate(() => window.ovseg.ready);
  const offline = `${await page.textContent('#status')} / ${await page.textContent('#progress-text')}`;
  assert(/model [^·]* from the browser cache/.test(offline) && offline.includes('(offline)'), `offline: ${offline}`);
  await check(page, robertaVoc, referenceRoberta.data, 'offline');
  other.offline = false;
  await page.close();
  // 6. Exported again while a page has it open: the text pack fetched later brings the whole
  // new export, never a new text pack beside the old image pack.
  page = await visit(context, url);
  await page.evaluate(() => window.ovseg.ready);
  other.version = 1;
  const w = await segmentIn(page, 'examples/cat.png', 'cat, sky, grass');
  assert(agreement(w.mask, referenceWords.data) === 1, 'the text pack of one export met the image pack of another');
  const v = await segmentIn(page, 'examples/astronaut.png', VOC);
  assert(agreement(v.mask, reference.data) === 1, 'the classes.json of one export met the image pack of another');
  ids = await exportsKept(page);
  assert(ids.size === 1 && ids.has('etag "v1-image.ovsegpack"'), `kept: ${JSON.stringify(await cachedModels(page))}`);
  const errors = page.errors.filter((e) => !e.includes('Failed to load') && !e.includes('ERR_'));
  assert(errors.length === 0, `page errors: ${errors.join('; ')}`);
  await context.close();
});
await b.close();
other.close();

if (args.bench) fs.writeFileSync(args.bench, JSON.stringify(bench, null, 2));
const passed = results.filter((r) => r[1]).length;
console.log(`browser tests: ${passed} passed, ${results.length - passed} failed`);
process.exit(results.length === passed ? 0 : 1);
