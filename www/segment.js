// Segmentation: the one path the page's controls and window.ovseg.segment share, and a new
// picture (segmented at once when a model is loaded).

import { drawResult } from './draw.js';
import { loadText } from './models.js';
import { pictureFrom, showPicture } from './pictures.js';
import { call } from './rpc.js';
import { modelLoaded, state } from './state.js';
import { $, setStatus, showMessage, updateButtons } from './ui.js';

/** A new picture (a URL or a Blob): shown, and segmented with the controls' words once a model
 * is loaded; a picture refused is a message. */
export async function setPicture(image) {
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

/** The one segmentation path: the page's button and window.ovseg.segment both come here. */
export async function segment({ image, labels, background = true, bgThresh = 0.95, template = 'simple' } = {}) {
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

export async function runFromControls() {
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
