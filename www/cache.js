// Model files through Cache Storage. An export (`ovseg export-web`: image.ovsegpack,
// classes.json, text.ovsegpack) is cached as one set: every piece carries the image pack's
// validator (its ETag, else Last-Modified), a cached copy is revalidated with a conditional
// request on each use, and a piece of another export is never paired with the image pack in use.

import { readCapped, MAX_DOWNLOAD_BYTES } from './download.js';
import { $, formatBytes } from './ui.js';
import { absolute, beside } from './urls.js';

const MODEL_CACHE = 'ovseg-models-v2';

async function modelCache() {
  try {
    return await caches.open(MODEL_CACHE);
  } catch (_) {
    return null; // no Cache Storage (insecure origin)
  }
}

/** Earlier versions' caches: keyed by URL alone, without the validators a revalidation needs. */
export async function dropOldCaches() {
  try {
    for (const name of await caches.keys()) if (name.startsWith('ovseg-models-') && name !== MODEL_CACHE) await caches.delete(name);
  } catch (_) { /* no Cache Storage */ }
}

/** What a server said identifies a file's version (sent back in a conditional request). */
function validatorsOf(headers) {
  return { etag: headers.get('etag') || '', lastModified: headers.get('last-modified') || '' };
}
export function sameVersion(a, b) {
  const weak = (e) => e.replace(/^W\//, '');
  if (a.etag && b.etag) return weak(a.etag) === weak(b.etag);
  if (a.lastModified && b.lastModified) return a.lastModified === b.lastModified;
  return false;
}
/** The id of an export: its image pack's version ('' when the server gives none: not cached). */
export function exportIdOf(v) {
  return v.etag ? `etag ${v.etag}` : v.lastModified ? `date ${v.lastModified}` : '';
}

/** The cached pieces of the export whose image pack (or single model file) is `model`. */
export async function dropExport(model) {
  const cache = await modelCache();
  if (!cache) return;
  for (const name of [absolute(model), beside(model, 'classes.json'), beside(model, 'text.ovsegpack')]) await cache.delete(name);
}
export async function isKept(model) {
  const cache = await modelCache();
  return !!(cache && (await cache.match(absolute(model))));
}

/** Asks the server whether `url` is still the version `v`: true (304, the same validators, or no
 * answer: offline keeps the copy) or the new response, whose body is not read yet. */
export async function revalidate(url, v) {
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
export async function fetchPiece(url, { model = url, exportId = null, keep = false, optional = false, before = 0, what = 'the model', current = null } = {}) {
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


/** The image pack (or single file) at `url` with its classes.json, pieces of one export. */
export async function fetchModel(url, keep) {
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
