// The controls wired to what they do: model, backend, picture, presets, segmentation, overlay,
// share, download, re-run, pointer, paste and drop.

import { approved, mayLoad } from './consent.js';
import { drawGroups, drawMap, palette } from './draw.js';
import { keepModel, loadModel } from './models.js';
import { maskPng } from './png.js';
import { runFromControls, setPicture } from './segment.js';
import { openLink, shareLink } from './share.js';
import { DEFAULT_MODEL, params, state } from './state.js';
import { $, formatBytes, setStatus, showMessage } from './ui.js';
import { absolute } from './urls.js';

function hover(e) {
  const r = state.result;
  if (!r) return;
  const rect = $('overlay').getBoundingClientRect();
  const x = Math.floor(((e.clientX - rect.left) / rect.width) * r.width);
  const y = Math.floor(((e.clientY - rect.top) / rect.height) * r.height);
  if (x < 0 || y < 0 || x >= r.width || y >= r.height) return;
  $('hover').textContent = r.names[r.mask[y * r.width + x]] ?? '—';
}

function isPicture(file) {
  return file.type.startsWith('image/') || /\.(png|jpe?g|webp|gif|bmp)$/i.test(file.name);
}

/** A model from a URL or files, its failure shown. */
const reload = (source) => loadModel(source).catch((e) => { showMessage(e.message); setStatus(); });

function wireModel() {
  $('model-url').value = DEFAULT_MODEL;
  const backend = params.get('backend');
  if (backend && ['auto', 'webgpu', 'cpu'].includes(backend)) $('backend').value = backend;
  $('load-model').onclick = () => {
    // The user typed or read the URL and asked for it: no second question.
    const url = $('model-url').value.trim();
    try { approved.add(absolute(url)); } catch (_) { /* loadModel names the bad URL */ }
    reload(url);
  };
  $('backend').onchange = async () => {
    const url = state.modelUrl || $('model-url').value.trim();
    if (await mayLoad(url)) reload(url);
  };
  $('keep-model').onchange = () => keepModel($('keep-model').checked);
  $('model-file').onchange = (e) => e.target.files.length && reload(e.target.files);
}

function wireLabels() {
  $('picture-file').onchange = (e) => e.target.files[0] && setPicture(e.target.files[0]);
  $('preset').onchange = () => {
    const d = state.vocab && state.vocab.datasets[$('preset').value];
    if (!d) return;
    const classes = (d.with_background ? d.classes.slice(1) : d.classes).map((c) => c.trim());
    $('labels').value = classes.join(', ');
    $('background').checked = d.with_background;
    if (d.bg_thresh != null) $('bg-thresh').value = String(d.bg_thresh);
  };
  $('segment').onclick = runFromControls;
}

function wireResult() {
  $('opacity').oninput = () => { $('overlay').style.opacity = $('opacity').value; };
  $('groups').onchange = async () => {
    try {
      if ($('groups').checked) await drawGroups();
      else if (state.result) drawMap(state.result, (i, names) => palette(i, names));
    } catch (e) {
      showMessage(e.message);
    }
  };
  $('share').onclick = async () => {
    try {
      const link = await shareLink();
      const out = $('share-out');
      out.hidden = false;
      out.value = link;
      try {
        await navigator.clipboard.writeText(link);
        $('share').textContent = `Copied (${formatBytes(link.length)})`;
      } catch (_) {
        out.select();
        $('share').textContent = 'Copy the link below';
      }
      setTimeout(() => { $('share').textContent = 'Copy share link'; }, 3000);
    } catch (e) {
      showMessage(e.message);
    }
  };
  $('download').onclick = async () => {
    const blob = await maskPng(state.result);
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = 'mask.png';
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 1000);
  };
  $('rerun').onclick = async () => {
    const wanted = $('model-url').value.trim();
    if (wanted && (!state.modelUrl || absolute(wanted) !== absolute(state.modelUrl))) {
      if (!(await mayLoad(wanted))) return;
      await reload(wanted);
    }
    await runFromControls();
  };
  $('stage').addEventListener('pointermove', hover);
}

function wireDocument() {
  document.addEventListener('paste', (e) => {
    const file = [...(e.clipboardData?.files || [])].find(isPicture);
    if (file) setPicture(file);
  });
  document.addEventListener('dragover', (e) => { e.preventDefault(); document.body.classList.add('dragging'); });
  document.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
  document.addEventListener('drop', (e) => {
    e.preventDefault();
    document.body.classList.remove('dragging');
    const files = [...(e.dataTransfer?.files || [])];
    if (!files.length) return;
    if (isPicture(files[0])) setPicture(files[0]);
    else reload(files);
  });
  window.addEventListener('hashchange', () => { if (location.hash.length > 1) openLink(location.href); });
}

/** Every control of the page, once at startup. */
export function wire() {
  wireModel();
  wireLabels();
  wireResult();
  wireDocument();
}
