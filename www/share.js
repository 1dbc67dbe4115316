// Share links: made (with the picture's URL or a small embedded JPEG) and opened, drawing the
// shared segmentation before any model loads. The codec is Rust (the worker's shareLink and
// shareRead).

import { drawResult } from './draw.js';
import { pictureBitmap, showPicture } from './pictures.js';
import { call } from './rpc.js';
import { rules } from './rules.js';
import { state } from './state.js';
import { $ } from './ui.js';

const EMBED_SIDE = 256; // longest side of the JPEG embedded in share links

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
export async function shareLink() {
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

export async function openLink(link) {
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
  const names = s.background ? [rules.limits.background, ...s.labels] : [...s.labels];
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
