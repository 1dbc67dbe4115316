// The page's lines of text and its buttons: the status line, the message, byte and time
// formats, and which buttons are enabled.

import { state } from './state.js';

export const $ = (id) => document.getElementById(id);

export function showMessage(text) {
  const m = $('message');
  m.textContent = text;
  m.hidden = !text;
}
export function setStatus() {
  const parts = [];
  if (state.backend) {
    parts.push(state.backend === 'webgpu' ? `WebGPU${state.adapter ? ` (${state.adapter})` : ''}`
      : `CPU (WebAssembly${state.build === 'cpu' ? ', CPU-only build' : ''})`);
  }
  if (state.timings.download != null) parts.push(`model ${formatBytes(state.timings.bytes)} ${state.timings.cached ? 'from the browser cache' : 'downloaded'} in ${secs(state.timings.download)}`);
  if (state.timings.load != null) parts.push(`loaded in ${secs(state.timings.load)}`);
  if (state.modelReady) {
    parts.push(state.timings.textBytes != null
      ? `text encoder ${formatBytes(state.timings.textBytes)} ${state.timings.textCached ? 'from the browser cache' : 'downloaded'} in ${secs(state.timings.textDownload)}`
      : state.hasText ? 'text encoder included' : 'text encoder not needed yet (these words are precomputed)');
  }
  if (state.timings.segment != null) parts.push(`last segmentation ${secs(state.timings.segment)}${state.timings.encodedText ? ' (words encoded)' : ' (words cached)'}`);
  $('status').textContent = parts.join(' · ') || 'No model loaded yet.';
}
const secs = (ms) => `${(ms / 1000).toFixed(2)} s`;
export function formatBytes(n) {
  if (n == null) return '?';
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} kB`;
  if (n < 1 << 30) return `${(n / (1 << 20)).toFixed(1)} MB`;
  return `${(n / (1 << 30)).toFixed(1)} GB`;
}
export function updateButtons() {
  $('segment').disabled = !(state.modelReady && state.picture);
  $('share').disabled = !state.result;
  $('download').disabled = !state.result;
  $('groups').disabled = !(state.modelReady && state.picture);
}
