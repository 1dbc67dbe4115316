// The rules the model crate sets for every front end (ovseg_model::segmentation): the request
// limits, the name of label 0 when there is a background, and the PASCAL VOC palette. Asked of
// the worker's wasm once, before the page shows anything (main.js), so the page keeps no copy.

import { call } from './rpc.js';

/** {limits: {maxLabels, maxPixels, maxLinkPixels, background}, palette: Uint8Array(768)} */
export const rules = { limits: null, palette: null };

export async function loadRules() {
  Object.assign(rules, await call('rules'));
}
