//! The one object a wasm function with many inputs takes (`Segmenter.start({rgba, width, ...})`,
//! `share_link({base, labels, ...})`), read field by field with `js_sys::Reflect`: a missing,
//! mistyped or unknown field is an Error naming the function and the field.

use js_sys::{Array, ArrayBuffer, Function, Object, Reflect, Uint8Array, Uint8ClampedArray};
use ovseg_model::share::{LinkPicture, ShareLink};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// `Segmenter.start`'s object: a picture's RGBA pixels and the words to label it with.
pub struct StartArgs {
    pub rgba: Vec<u8>,
    pub width: usize,
    pub height: usize,
    /// Comma-separated words.
    pub labels: String,
    pub background: bool,
    pub bg_thresh: f64,
    pub template: String,
}

impl StartArgs {
    const FIELDS: &'static [&'static str] = &[
        "rgba",
        "width",
        "height",
        "labels",
        "background",
        "bgThresh",
        "template",
    ];

    pub fn read(v: &JsValue) -> Result<Self, JsError> {
        let f = Fields::new("Segmenter.start", v, Self::FIELDS)?;
        Ok(StartArgs {
            rgba: f.bytes("rgba")?,
            width: f.size("width")?,
            height: f.size("height")?,
            labels: f.string("labels")?,
            background: f.boolean("background")?,
            bg_thresh: f.number("bgThresh")?,
            template: f.string("template")?,
        })
    }
}

/// `share_link`'s object: the link's `base` and what it holds. `labels` are the words without
/// background; the picture is `imageUrl` or an embedded `jpeg` (both optional, `imageUrl` first).
pub fn share_args(v: &JsValue) -> Result<(String, ShareLink), JsError> {
    const FIELDS: &[&str] = &[
        "base",
        "labels",
        "background",
        "bgThresh",
        "template",
        "model",
        "width",
        "height",
        "mask",
        "imageUrl",
        "jpeg",
    ];
    let f = Fields::new("share_link", v, FIELDS)?;
    let base = f.string("base")?;
    let mut link = ShareLink {
        labels: f.strings("labels")?,
        background: f.boolean("background")?,
        bg_thresh: f.number("bgThresh")?,
        template: f.string("template")?,
        model: f.string("model")?,
        width: f.size("width")?,
        height: f.size("height")?,
        mask: f.bytes("mask")?,
        picture: LinkPicture::None,
    };
    link.picture = match (f.optional_string("imageUrl")?, f.optional_bytes("jpeg")?) {
        (Some(url), _) => LinkPicture::Url(url),
        (None, Some(bytes)) => LinkPicture::Jpeg(bytes),
        (None, None) => LinkPicture::None,
    };
    Ok((base, link))
}

/// The named fields of the object passed to `function`, which has exactly the fields `known`.
pub struct Fields<'a> {
    function: &'static str,
    object: &'a JsValue,
}

impl<'a> Fields<'a> {
    /// Refuses anything but a plain object, and fields other than `known` (a misspelt optional
    /// field would otherwise be dropped without a word).
    pub fn new(
        function: &'static str,
        object: &'a JsValue,
        known: &[&str],
    ) -> Result<Self, JsError> {
        let list = known.join(", ");
        if !object.is_object() || Array::is_array(object) {
            return Err(JsError::new(&format!(
                "{function} takes one object {{{list}}}, not {}",
                kind(object)
            )));
        }
        for key in Object::keys(object.unchecked_ref::<Object>()).iter() {
            let key = key.as_string().unwrap_or_default();
            if !known.contains(&key.as_str()) {
                return Err(JsError::new(&format!(
                    "{function}: unknown field '{key}' (its fields: {list})"
                )));
            }
        }
        Ok(Fields { function, object })
    }

    /// The field's value; `undefined` when it is absent.
    fn value(&self, name: &str) -> Result<JsValue, JsError> {
        Reflect::get(self.object, &JsValue::from_str(name))
            .map_err(|_| JsError::new(&format!("{}: cannot read field '{name}'", self.function)))
    }

    fn required(&self, name: &str, what: &str) -> Result<JsValue, JsError> {
        let v = self.value(name)?;
        if v.is_undefined() {
            return Err(JsError::new(&format!(
                "{}: missing field '{name}' ({what})",
                self.function
            )));
        }
        Ok(v)
    }

    fn mistyped(&self, name: &str, what: &str, v: &JsValue) -> JsError {
        JsError::new(&format!(
            "{}: field '{name}' must be {what}, not {}",
            self.function,
            kind(v)
        ))
    }

    pub fn string(&self, name: &str) -> Result<String, JsError> {
        let what = "a string";
        let v = self.required(name, what)?;
        v.as_string().ok_or_else(|| self.mistyped(name, what, &v))
    }

    pub fn boolean(&self, name: &str) -> Result<bool, JsError> {
        let what = "true or false";
        let v = self.required(name, what)?;
        v.as_bool().ok_or_else(|| self.mistyped(name, what, &v))
    }

    pub fn number(&self, name: &str) -> Result<f64, JsError> {
        let what = "a number";
        let v = self.required(name, what)?;
        v.as_f64().ok_or_else(|| self.mistyped(name, what, &v))
    }

    /// A picture side or similar count: a whole number from 0 to 2^32 - 1.
    pub fn size(&self, name: &str) -> Result<usize, JsError> {
        let what = "a whole number from 0 to 4294967295";
        let v = self.required(name, what)?;
        match v.as_f64() {
            Some(n) if n.fract() == 0.0 && (0.0..=u32::MAX as f64).contains(&n) => Ok(n as usize),
            _ => Err(self.mistyped(name, what, &v)),
        }
    }

    pub fn strings(&self, name: &str) -> Result<Vec<String>, JsError> {
        let what = "an array of strings";
        let v = self.required(name, what)?;
        if !Array::is_array(&v) {
            return Err(self.mistyped(name, what, &v));
        }
        Array::from(&v)
            .iter()
            .enumerate()
            .map(|(i, s)| {
                s.as_string().ok_or_else(|| {
                    JsError::new(&format!(
                        "{}: field '{name}' must be {what}; its item {i} is {}",
                        self.function,
                        kind(&s)
                    ))
                })
            })
            .collect()
    }

    const BYTES: &'static str = "a Uint8Array, Uint8ClampedArray or ArrayBuffer";

    pub fn bytes(&self, name: &str) -> Result<Vec<u8>, JsError> {
        let v = self.required(name, Self::BYTES)?;
        bytes_of(&v).ok_or_else(|| self.mistyped(name, Self::BYTES, &v))
    }

    /// Absent, `undefined` and `null` are `None`.
    pub fn optional_string(&self, name: &str) -> Result<Option<String>, JsError> {
        let v = self.value(name)?;
        if v.is_null_or_undefined() {
            return Ok(None);
        }
        v.as_string()
            .map(Some)
            .ok_or_else(|| self.mistyped(name, "a string or null", &v))
    }

    /// Absent, `undefined` and `null` are `None`.
    pub fn optional_bytes(&self, name: &str) -> Result<Option<Vec<u8>>, JsError> {
        let v = self.value(name)?;
        if v.is_null_or_undefined() {
            return Ok(None);
        }
        bytes_of(&v)
            .map(Some)
            .ok_or_else(|| self.mistyped(name, &format!("{} or null", Self::BYTES), &v))
    }
}

fn bytes_of(v: &JsValue) -> Option<Vec<u8>> {
    if let Some(a) = v.dyn_ref::<Uint8Array>() {
        Some(a.to_vec())
    } else if let Some(a) = v.dyn_ref::<Uint8ClampedArray>() {
        Some(a.to_vec())
    } else {
        v.dyn_ref::<ArrayBuffer>()
            .map(|b| Uint8Array::new(b).to_vec())
    }
}

/// What a value is, for a message: "null", "undefined", "an array", "the number 2.5", "a
/// string", "a Float32Array"...
fn kind(v: &JsValue) -> String {
    if v.is_null() {
        return "null".into();
    }
    if v.is_undefined() {
        return "undefined".into();
    }
    if Array::is_array(v) {
        return "an array".into();
    }
    if let Some(n) = v.as_f64() {
        return format!("the number {n}");
    }
    let mut name = v.js_typeof().as_string().unwrap_or_default();
    if name == "object" {
        let constructor = Reflect::get(v, &JsValue::from_str("constructor"))
            .ok()
            .and_then(|c| c.dyn_into::<Function>().ok())
            .map(|c| String::from(c.name()))
            .unwrap_or_default();
        if !constructor.is_empty() {
            name = constructor;
        }
    }
    let vowel = name.starts_with(|c: char| "aeiouAEIOU".contains(c));
    format!("{} {name}", if vowel { "an" } else { "a" })
}
