//! The JavaScript surface of ovseg (wasm-bindgen), kept to this file: load a model file on
//! WebGPU or the CPU (Flex), segment RGBA pixels with comma-separated words, read back the label
//! map asynchronously, and make / read segmentation links. The work happens in [`engine`] and in
//! the model crate (`ovseg_model::share`). `www/worker.js` is the only caller. Functions with
//! many inputs take one object of named fields, read by `args.rs`.

#[cfg(target_arch = "wasm32")]
mod args;
pub mod engine;

#[cfg(target_arch = "wasm32")]
pub use bindings::*;

#[cfg(target_arch = "wasm32")]
mod bindings {
    #[cfg(feature = "webgpu")]
    use std::cell::Cell;

    use burn::backend::Flex;
    #[cfg(feature = "webgpu")]
    use burn::backend::{
        wgpu::{graphics, init_setup_async, WgpuDevice},
        Wgpu,
    };
    use js_sys::{Array, Object, Reflect, Uint8Array};
    use ovseg_model::share::{LinkPicture, ShareLink};
    use wasm_bindgen::prelude::*;

    use crate::args::{share_args, StartArgs};
    use crate::engine::{label_bytes, Engine, LabelsOnDevice, Request};
    use ovseg_model::segmentation::MAX_BYTE_LABELS;

    #[wasm_bindgen]
    extern "C" {
        #[wasm_bindgen(js_namespace = console, js_name = error)]
        fn console_error(message: &str);
    }

    #[cfg(feature = "webgpu")]
    thread_local! {
        static GPU_READY: Cell<bool> = const { Cell::new(false) };
    }

    fn js_err(e: impl std::fmt::Display) -> JsError {
        JsError::new(&e.to_string())
    }

    /// Panics reach the console (and the worker's error handler) with their message.
    #[wasm_bindgen(start)]
    pub fn start() {
        std::panic::set_hook(Box::new(|info| {
            console_error(&format!("ovseg panicked: {info}"))
        }));
    }

    /// The engine on the backend the page chose.
    enum BackendEngine {
        #[cfg(feature = "webgpu")]
        Gpu(Engine<Wgpu>),
        Cpu(Engine<Flex>),
    }

    /// A loaded model, its tokenizer and the class embeddings computed so far.
    #[wasm_bindgen]
    pub struct Segmenter {
        engine: BackendEngine,
    }

    /// A segmentation queued on the device; [`read_labels`] waits for it.
    #[wasm_bindgen]
    pub struct QueuedLabelMap {
        labels: LabelsOnBackend,
        names: Vec<String>,
        encoded_text: bool,
    }

    /// A label map on the device of the backend that computed it.
    enum LabelsOnBackend {
        #[cfg(feature = "webgpu")]
        Gpu(LabelsOnDevice<Wgpu>),
        Cpu(LabelsOnDevice<Flex>),
    }

    /// Runs `$body` on the engine, whichever backend holds it, with `$queue` naming the
    /// matching `LabelsOnBackend` variant (the WebGPU arm exists only in the full build).
    macro_rules! on_engine {
        ($backed:expr, |$e:ident, $queue:ident| $body:expr) => {
            match $backed {
                #[cfg(feature = "webgpu")]
                BackendEngine::Gpu($e) => {
                    let $queue = LabelsOnBackend::Gpu;
                    $body
                }
                BackendEngine::Cpu($e) => {
                    let $queue = LabelsOnBackend::Cpu;
                    $body
                }
            }
        };
        ($backed:expr, |$e:ident| $body:expr) => {
            on_engine!($backed, |$e, _queue| $body)
        };
    }

    /// The backends compiled into this build: the full build has WebGPU and the CPU, the
    /// CPU-only build (`web-cpu/`, a fraction of the size) only the CPU.
    const BACKENDS: &[&str] = if cfg!(feature = "webgpu") {
        &["webgpu", "cpu"]
    } else {
        &["cpu"]
    };

    /// Loads a model file (`ovseg convert` output, or `ovseg export-web`'s image pack) on `backend`
    /// ("webgpu" or "cpu"). The caller checks that WebGPU has an adapter first. `tokenizer`: a
    /// `tokenizer.json` the user chose instead of the one the model carries.
    #[wasm_bindgen]
    pub async fn load(
        model: Vec<u8>,
        tokenizer: Option<Vec<u8>>,
        backend: String,
    ) -> Result<Segmenter, JsError> {
        let tokenizer = tokenizer.as_deref();
        let engine = match backend.as_str() {
            #[cfg(feature = "webgpu")]
            "webgpu" => {
                let device = WgpuDevice::default();
                if !GPU_READY.get() {
                    init_setup_async::<graphics::WebGpu>(&device, Default::default()).await;
                    GPU_READY.set(true);
                }
                BackendEngine::Gpu(Engine::new(model, tokenizer, &device).map_err(js_err)?)
            }
            "cpu" => BackendEngine::Cpu(
                Engine::new(model, tokenizer, &Default::default()).map_err(js_err)?,
            ),
            other => {
                return Err(JsError::new(&format!(
                    "backend '{other}' is not in this build (it has: {})",
                    BACKENDS.join(", ")
                )))
            }
        };
        Ok(Segmenter { engine })
    }

    #[wasm_bindgen]
    impl Segmenter {
        pub fn backend(&self) -> String {
            match self.engine {
                #[cfg(feature = "webgpu")]
                BackendEngine::Gpu(_) => "webgpu".into(),
                BackendEngine::Cpu(_) => "cpu".into(),
            }
        }

        /// Queues the segmentation of a picture: `{rgba, width, height, labels, background,
        /// bgThresh, template}`, `rgba` its RGBA pixels (e.g. `ImageData.data`), `labels` the
        /// comma-separated words.
        pub fn start(&mut self, args: JsValue) -> Result<QueuedLabelMap, JsError> {
            let a = StartArgs::read(&args)?;
            let (rgba, width, height) = (a.rgba.as_slice(), a.width, a.height);
            let request = Request::parse(
                &a.labels,
                a.background,
                a.bg_thresh,
                &a.template,
                MAX_BYTE_LABELS,
            )
            .map_err(js_err)?;
            on_engine!(&mut self.engine, |e, queue| {
                let p = e.start(rgba, width, height, &request).map_err(js_err)?;
                Ok(QueuedLabelMap {
                    names: p.names.clone(),
                    encoded_text: p.encoded_text,
                    labels: queue(p),
                })
            })
        }

        /// Queues the raw group map of a picture (see `Engine::start_groups`); its names are
        /// "group 1".."group G" and its label map is window-sized (448x448).
        pub fn start_groups(
            &self,
            rgba: &[u8],
            width: usize,
            height: usize,
        ) -> Result<QueuedLabelMap, JsError> {
            let (labels, groups) = on_engine!(&self.engine, |e, queue| {
                let (labels, groups) = e.start_groups(rgba, width, height).map_err(js_err)?;
                let pending = LabelsOnDevice {
                    labels,
                    names: vec![],
                    encoded_text: false,
                };
                (queue(pending), groups)
            });
            Ok(QueuedLabelMap {
                labels,
                names: (1..=groups).map(|g| format!("group {g}")).collect(),
                encoded_text: false,
            })
        }

        /// Precomputed class embeddings ([labels x output_dim] f32) for a label list.
        pub fn add_class_embeddings(
            &mut self,
            labels: &str,
            template: &str,
            values: Vec<f32>,
        ) -> Result<(), JsError> {
            on_engine!(&mut self.engine, |e| e
                .add_class_embeddings(labels, template, values))
            .map_err(js_err)
        }

        /// Adds the text weights of an image pack (`ovseg export-web`'s `text.ovsegpack`, which
        /// carries the model's tokenizer; `tokenizer`: one the user chose instead).
        pub fn add_text_weights(
            &mut self,
            text_pack: Vec<u8>,
            tokenizer: Option<Vec<u8>>,
        ) -> Result<(), JsError> {
            let tokenizer = tokenizer.as_deref();
            on_engine!(&mut self.engine, |e| e
                .add_text_weights(text_pack, tokenizer))
            .map_err(js_err)
        }

        /// Whether the text encoder is loaded (false for an image pack without its text part).
        pub fn has_text(&self) -> bool {
            on_engine!(&self.engine, |e| e.has_text())
        }

        /// Whether these words need the text weights first.
        pub fn needs_text(&self, labels: &str, template: &str) -> Result<bool, JsError> {
            on_engine!(&self.engine, |e| e.needs_text(labels, template)).map_err(js_err)
        }

        pub fn text_encoder_runs(&self) -> usize {
            on_engine!(&self.engine, |e| e.text_encoder_runs())
        }
    }

    #[wasm_bindgen]
    impl QueuedLabelMap {
        /// Label names by index ("background" first when enabled).
        pub fn names(&self) -> Vec<String> {
            self.names.clone()
        }

        /// Whether the text encoder ran (false: embeddings were cached or precomputed).
        pub fn encoded_text(&self) -> bool {
            self.encoded_text
        }
    }

    /// Waits for a queued segmentation: one byte a pixel, row-major.
    #[wasm_bindgen]
    pub async fn read_labels(queued: QueuedLabelMap) -> Result<Vec<u8>, JsError> {
        let data = match queued.labels {
            #[cfg(feature = "webgpu")]
            LabelsOnBackend::Gpu(p) => p.labels.into_data_async().await,
            LabelsOnBackend::Cpu(p) => p.labels.into_data_async().await,
        }
        .map_err(|e| JsError::new(&format!("reading the label map: {e:?}")))?;
        label_bytes(data).map_err(js_err)
    }

    /// A segmentation link (see `ovseg_model::share`) from `{base, labels, background, bgThresh,
    /// template, model, width, height, mask, imageUrl?, jpeg?}`: `labels` the words without
    /// background; the picture is `imageUrl` or an embedded `jpeg`, or neither.
    #[wasm_bindgen]
    pub fn share_link(args: JsValue) -> Result<String, JsError> {
        let (base, link) = share_args(&args)?;
        link.to_link(&base).map_err(js_err)
    }

    /// Reads a segmentation link into `{labels, background, bgThresh, template, model, width,
    /// height, mask, imageUrl, jpeg}`; a damaged or hostile link is an Error with a message.
    #[wasm_bindgen]
    pub fn share_read(link: &str) -> Result<Object, JsError> {
        let s = ShareLink::from_link(link).map_err(js_err)?;
        let o = Object::new();
        let set = |k: &str, v: JsValue| Reflect::set(&o, &k.into(), &v).map(|_| ());
        let labels: Array = s.labels.iter().map(|l| JsValue::from_str(l)).collect();
        let (url, jpeg) = match s.picture {
            LinkPicture::Url(u) => (JsValue::from_str(&u), JsValue::NULL),
            LinkPicture::Jpeg(b) => (JsValue::NULL, Uint8Array::from(b.as_slice()).into()),
            LinkPicture::None => (JsValue::NULL, JsValue::NULL),
        };
        (|| {
            set("labels", labels.into())?;
            set("background", s.background.into())?;
            set("bgThresh", s.bg_thresh.into())?;
            set("template", JsValue::from_str(&s.template))?;
            set("model", JsValue::from_str(&s.model))?;
            set("width", (s.width as u32).into())?;
            set("height", (s.height as u32).into())?;
            set("mask", Uint8Array::from(s.mask.as_slice()).into())?;
            set("imageUrl", url)?;
            set("jpeg", jpeg)
        })()
        .map_err(|_| JsError::new("cannot build the link's object"))?;
        Ok(o)
    }

    /// Which kind of model file `prefix` (a file's first bytes: 64 KiB are plenty, the whole
    /// file is fine) begins: "model", "image-pack", "text-pack" or "checkpoint"; anything else
    /// is an Error with a one-line message (`ovseg_model::formats::ModelFile::detect`).
    #[wasm_bindgen]
    pub fn model_file_kind(prefix: &[u8]) -> Result<String, JsError> {
        ovseg_model::formats::ModelFile::detect(prefix)
            .map(|kind| kind.name().to_string())
            .map_err(js_err)
    }

    /// The limits a segmentation request keeps (`ovseg_model::segmentation`), for the page to
    /// check before it sends one: `{maxLabels, maxPixels, maxLinkPixels, background}`: words a
    /// request may hold, pixels a picture may have, pixels a share link's label map may have,
    /// and the name of label 0 when there is a background.
    #[wasm_bindgen]
    pub fn request_limits() -> Result<Object, JsError> {
        use ovseg_model::segmentation::{BACKGROUND, MAX_BYTE_LABELS, MAX_PIXELS};
        let o = Object::new();
        let set = |k: &str, v: JsValue| Reflect::set(&o, &k.into(), &v).map(|_| ());
        (|| {
            set("maxLabels", (MAX_BYTE_LABELS as u32).into())?;
            set("maxPixels", (MAX_PIXELS as f64).into())?;
            let link_pixels = ovseg_model::share::MAX_PIXELS as f64;
            set("maxLinkPixels", link_pixels.into())?;
            set("background", JsValue::from_str(BACKGROUND))
        })()
        .map_err(|_| JsError::new("cannot build the limits object"))?;
        Ok(o)
    }

    /// PASCAL VOC's colour map, which the command line's overlays use: 256 RGB triples
    /// (768 bytes), entry `i` at `3 * i`.
    #[wasm_bindgen]
    pub fn voc_palette() -> Vec<u8> {
        ovseg_model::segmentation::voc_palette()
    }
}
