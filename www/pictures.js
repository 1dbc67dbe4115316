// Pictures: decoded from a URL or a Blob into RGBA pixels (refused over what a share link can
// hold: `rules.limits.maxLinkPixels`) and shown.

import { rules } from './rules.js';
import { $ } from './ui.js';

/** A picture as a bitmap, refused over what a share link can hold (`maxLinkPixels`): every
 * picture passes here, chosen, dropped, pasted, fetched or named by a share link. */
export async function pictureBitmap(blob, options = { colorSpaceConversion: 'none', premultiplyAlpha: 'none', imageOrientation: 'from-image' }) {
  const bitmap = await createImageBitmap(blob, options)
    .catch(() => { throw new Error('this file is not a picture the browser can read (JPEG, PNG, WebP, GIF)'); });
  const { width, height } = bitmap;
  const most = rules.limits.maxLinkPixels;
  if (width * height > most) {
    bitmap.close();
    throw new Error(`the picture is ${width}x${height}; at most ${most} pixels`);
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

export async function pictureFrom(image) {
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

export function showPicture(p) {
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
