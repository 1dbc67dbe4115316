// Drawing a label map over the picture, in the PASCAL VOC colours, with its legend; and the raw
// groups instead of the labels.

import { call } from './rpc.js';
import { rules } from './rules.js';
import { state } from './state.js';
import { $, updateButtons } from './ui.js';

/** The colour of label `i`: PASCAL VOC's, as the command line's overlays use, and none for
 * the background. */
export function palette(i, names) {
  if (i === 0 && names[0] === rules.limits.background) return [0, 0, 0, 0];
  const p = rules.palette;
  return [p[3 * i], p[3 * i + 1], p[3 * i + 2], 255];
}

/** The raw groups of the current picture, drawn instead of the labels (nearest-neighbour). */
export async function drawGroups() {
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

export function drawResult() {
  if ($('groups').checked) $('groups').checked = false;
  drawMap(state.result, (i, names) => palette(i, names));
}

export function drawMap(r, colourOf) {
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

