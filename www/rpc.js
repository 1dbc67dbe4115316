// Talking to the model's worker (worker.js): `call(op, args, transfer)` posts {id, op, ...} and
// resolves with the answer's result (docs/web.md, "The worker protocol").

import { showMessage } from './ui.js';

const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
let nextId = 1;
const waiting = new Map();
worker.onmessage = (e) => {
  const { id, ok, result, error } = e.data;
  const w = waiting.get(id);
  if (!w) return;
  waiting.delete(id);
  ok ? w.resolve(result) : w.reject(new Error(error));
};
worker.onerror = (e) => {
  showMessage(`The model worker failed: ${e.message || 'unknown error'}`);
  for (const w of waiting.values()) w.reject(new Error('worker failed'));
  waiting.clear();
};
export function call(op, args = {}, transfer = []) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    worker.postMessage({ id, op, ...args }, transfer);
  });
}
