// What the page knows: the settings from its URL, the model, picture and result in use, and
// the promises scripts wait on. Every other module reads and writes this one `state`.

export const params = new URLSearchParams(location.search);
export const DEFAULT_MODEL = params.get('model') || 'demo/image.ovsegpack';

export const state = {
  backend: null, // 'webgpu' | 'cpu' once a model is loaded
  adapter: null,
  modelUrl: '', // '' when the model came from a file
  keep: false, // whether the model from modelUrl is kept in Cache Storage
  export: null, // {validators, bytes} of the image pack (or single file) from modelUrl
  textFromUrl: false, // whether its text pack was downloaded
  modelReady: false,
  // An image pack (`ovseg export-web`) segments preset words at once; its text part is fetched
  // (or taken from the chosen files) the first time other words are asked for.
  hasText: false,
  textFile: null,
  picture: null, // {width, height, rgba, url|null, bitmap}
  result: null, // {width, height, names, mask, labels, background, bgThresh, template}
  vocab: null,
  timings: {},
};

let readyResolve;
/** Resolved (with the backend) once a model is loaded and the first picture segmented. */
export const ready = new Promise((res) => { readyResolve = res; });
export const resolveReady = (backend) => readyResolve(backend);
// Resolved by every successful model load (`ready` waits for the first picture's result too).
let modelResolve;
export const modelLoaded = new Promise((res) => { modelResolve = res; });
export const resolveModel = (backend) => modelResolve(backend);
