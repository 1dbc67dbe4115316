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
import { chromium } from 'playwright-core';
import fs from 'node:fs';
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
async function test(name, fn) {
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
  const page = await context.newPage();
  page.errors = [];
  page.dialogs = [];
  page.on('pageerror', (e) => page.errors.push(String(e)));
  page.on('dialog', (d) => { page.dialogs.push(d.message()); d.dismiss().catch(() => {}); });
  // An optional file the page probes for (classes.json) may 404: not an error.
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) page.errors.push(`console: ${m.text()}`); });
  if (blockModel) await page.route(/\.ovseg(pack)?$/, (r) => r.abort());
  page.requested = [];
  page.on('request', (r) => page.requested.push(new URL(r.url()).pathname));
  page.setDefaultTimeout(600_000);
  await page.goto(url);
  return { page, context };
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
await b.close();

if (args.bench) fs.writeFileSync(args.bench, JSON.stringify(bench, null, 2));
const passed = results.filter((r) => r[1]).length;
console.log(`browser tests: ${passed} passed, ${results.length - passed} failed`);
process.exit(results.length === passed ? 0 : 1);
