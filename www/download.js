// Downloads with a cap: a model's files together may not pass MAX_DOWNLOAD_BYTES, checked on the
// Content-Length and counted while the bytes stream, with the progress bar.

import { $, formatBytes } from './ui.js';

/** Most bytes one model may download: each file, and all the files of one model together. */
export const MAX_DOWNLOAD_BYTES = 1 << 30;
const MAX_DOWNLOAD_TEXT = `${MAX_DOWNLOAD_BYTES / 2 ** 30} GiB`;

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
export async function readCapped(response, url, limit, before) {
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
