//! Segmentation links: everything needed to show a segmentation again (labels, settings, model
//! URL, the label map and the picture) packed into a URL fragment, which browsers never send to
//! a server. The CLI (`ovseg segment --share-url`) and the page (through wasm) share this code.
//!
//! Format, version 1: `<base>#ovseg1.<payload>` where `<payload>` is base64url (no padding) of
//! zlib (deflate + Adler-32, so tampered bytes are detected) of:
//!
//! | bytes | what |
//! |---|---|
//! | 4 | header length `n`, u32 little-endian |
//! | n | header, UTF-8 JSON: `{"labels": [..], "background": bool, "bg_thresh": f64, "template": "simple", "model": "url", "width": w, "height": h, "image_url": "url" or null, "jpeg_bytes": m}` |
//! | .. | label map, run-length coded row-major: (label u8, run length LEB128) pairs, runs summing to w*h |
//! | m | the picture as JPEG when it is embedded (`jpeg_bytes` > 0) |
//!
//! Decoding is defensive: the text, the inflated size, the picture size, the number and length
//! of labels and URLs are bounded; every run and label index is checked; URLs must be relative
//! or http(s). Any violation is a [`ShareError`], never a panic.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::segmentation::{check_picture_size, Request, MAX_BYTE_LABELS};

/// The fragment prefix, naming the format version.
pub const PREFIX: &str = "ovseg1.";
/// Longest link text accepted (characters after `#`; Chromium's whole-URL limit is 2 MiB).
pub const MAX_LINK_CHARS: usize = 2 << 20;
/// Largest inflated payload accepted.
pub const MAX_PAYLOAD_BYTES: usize = 8 << 20;
/// Largest label map accepted (width x height): smaller than the pictures segmentation takes
/// (`segmentation::MAX_PIXELS`), so a link stays a few MB at most.
pub const MAX_PIXELS: usize = 4096 * 4096;
/// Longest URL accepted (model or picture).
pub const MAX_URL_CHARS: usize = 8192;

#[derive(Debug, Error, PartialEq)]
pub enum ShareError {
    #[error("not an ovseg segmentation link (expected '#{PREFIX}...')")]
    NotALink,
    #[error("this link uses format version {0}; this page reads version 1")]
    Version(String),
    #[error("the link is too long ({0} characters; at most {MAX_LINK_CHARS})")]
    TooLong(usize),
    #[error("the link is damaged or truncated ({0})")]
    Corrupt(String),
    #[error("the link holds invalid data: {0}")]
    Invalid(String),
    #[error("cannot make a link: {0}")]
    Encode(String),
}

/// Where the picture of a shared segmentation comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum LinkPicture {
    /// Not included: the label map is shown alone.
    None,
    /// The URL the picture was loaded from.
    Url(String),
    /// A small JPEG embedded in the link.
    Jpeg(Vec<u8>),
}

/// One segmentation as a link holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareLink {
    pub labels: Vec<String>,
    pub background: bool,
    pub bg_thresh: f64,
    pub template: String,
    /// URL of the model that computed it ("" when unknown).
    pub model: String,
    pub width: usize,
    pub height: usize,
    /// Label indices, row-major, background 0 when `background`.
    pub mask: Vec<u8>,
    pub picture: LinkPicture,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkHeader {
    labels: Vec<String>,
    background: bool,
    bg_thresh: f64,
    template: String,
    model: String,
    width: usize,
    height: usize,
    image_url: Option<String>,
    jpeg_bytes: usize,
}

impl ShareLink {
    /// The segmentation request the link records: its words (at most
    /// [`MAX_BYTE_LABELS`], the mask having one byte a pixel), background and template.
    pub fn request(&self) -> Result<Request, String> {
        Request::from_list(
            &self.labels,
            self.background,
            self.bg_thresh,
            &self.template,
            MAX_BYTE_LABELS,
        )
        .map_err(|e| e.to_string())
    }

    /// Number of label indices the mask may hold.
    pub fn classes(&self) -> usize {
        self.labels.len() + usize::from(self.background)
    }

    fn validate(&self) -> Result<(), String> {
        self.request()?;
        if !self.model.is_empty() {
            check_url(&self.model, "model")?;
        }
        if let LinkPicture::Url(url) = &self.picture {
            check_url(url, "picture")?;
        }
        check_picture_size(self.width, self.height, MAX_PIXELS).map_err(|e| e.to_string())?;
        if self.mask.len() != self.width * self.height {
            return Err(format!(
                "{} mask values for {}x{}",
                self.mask.len(),
                self.width,
                self.height
            ));
        }
        let classes = self.classes();
        if let Some(v) = self.mask.iter().find(|&&v| v as usize >= classes) {
            return Err(format!("label index {v} but only {classes} classes"));
        }
        Ok(())
    }

    /// The link: `base` (anything before `#` is kept) followed by the fragment.
    pub fn to_link(&self, base: &str) -> Result<String, ShareError> {
        let base = base.split('#').next().unwrap_or("");
        Ok(format!("{base}#{}", self.to_fragment()?))
    }

    /// The fragment text, without `#`.
    pub fn to_fragment(&self) -> Result<String, ShareError> {
        self.validate().map_err(ShareError::Encode)?;
        let (image_url, jpeg) = match &self.picture {
            LinkPicture::None => (None, &[][..]),
            LinkPicture::Url(u) => (Some(u.clone()), &[][..]),
            LinkPicture::Jpeg(bytes) => (None, bytes.as_slice()),
        };
        let header = LinkHeader {
            labels: self.labels.clone(),
            background: self.background,
            bg_thresh: self.bg_thresh,
            template: self.template.clone(),
            model: self.model.clone(),
            width: self.width,
            height: self.height,
            image_url,
            jpeg_bytes: jpeg.len(),
        };
        let header = serde_json::to_vec(&header).map_err(|e| ShareError::Encode(e.to_string()))?;
        let mut payload = Vec::with_capacity(header.len() + jpeg.len() + 1024);
        payload.extend_from_slice(&(header.len() as u32).to_le_bytes());
        payload.extend_from_slice(&header);
        encode_runs(&self.mask, &mut payload);
        payload.extend_from_slice(jpeg);
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(ShareError::Encode(format!(
                "{} bytes before compression (at most {MAX_PAYLOAD_BYTES})",
                payload.len()
            )));
        }
        let packed = miniz_oxide::deflate::compress_to_vec_zlib(&payload, 9);
        let text = format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(packed)
        );
        if text.len() > MAX_LINK_CHARS {
            return Err(ShareError::Encode(format!(
                "the link would have {} characters (at most {MAX_LINK_CHARS})",
                text.len()
            )));
        }
        Ok(text)
    }

    /// Reads a whole link, a fragment with or without `#`, or the payload after the prefix.
    pub fn from_link(text: &str) -> Result<Self, ShareError> {
        let fragment = match text.find('#') {
            Some(i) => &text[i + 1..],
            None => text,
        };
        let fragment = fragment.trim();
        if fragment.len() > MAX_LINK_CHARS {
            return Err(ShareError::TooLong(fragment.len()));
        }
        let Some(body) = fragment.strip_prefix(PREFIX) else {
            if let Some(rest) = fragment.strip_prefix("ovseg") {
                let version: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
                let dotless = PREFIX
                    .strip_suffix('.')
                    .and_then(|p| p.strip_prefix("ovseg"));
                if Some(version.as_str()) == dotless {
                    return Err(ShareError::Corrupt(format!("'#{PREFIX}' lost its '.'")));
                }
                if !version.is_empty() {
                    return Err(ShareError::Version(version));
                }
            }
            return Err(ShareError::NotALink);
        };
        let packed = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| ShareError::Corrupt(format!("base64: {e}")))?;
        let payload =
            miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(&packed, MAX_PAYLOAD_BYTES)
                .map_err(|e| match e.status {
                    miniz_oxide::inflate::TINFLStatus::HasMoreOutput => ShareError::Invalid(
                        format!("more than {MAX_PAYLOAD_BYTES} bytes once inflated"),
                    ),
                    status => ShareError::Corrupt(format!("inflate: {status:?}")),
                })?;
        Self::from_payload(&payload)
    }

    fn from_payload(payload: &[u8]) -> Result<Self, ShareError> {
        let corrupt = |m: &str| ShareError::Corrupt(m.to_string());
        let len = payload
            .get(..4)
            .ok_or_else(|| corrupt("no header"))?
            .try_into()
            .map(u32::from_le_bytes)
            .map_err(|_| corrupt("no header"))? as usize;
        let header = payload
            .get(4..4usize.saturating_add(len))
            .ok_or_else(|| corrupt("header cut short"))?;
        let header: LinkHeader = serde_json::from_slice(header)
            .map_err(|e| ShareError::Invalid(format!("header: {e}")))?;
        check_picture_size(header.width, header.height, MAX_PIXELS)
            .map_err(|e| ShareError::Invalid(e.to_string()))?;
        let pixels = header.width * header.height;
        let rest = &payload[4 + len..];
        let (mask, used) = decode_runs(rest, pixels).map_err(ShareError::Invalid)?;
        let jpeg = &rest[used..];
        if jpeg.len() != header.jpeg_bytes {
            return Err(ShareError::Invalid(format!(
                "{} picture bytes, the header says {}",
                jpeg.len(),
                header.jpeg_bytes
            )));
        }
        let picture = match (header.image_url, header.jpeg_bytes) {
            (Some(_), n) if n > 0 => {
                return Err(ShareError::Invalid(
                    "both a picture URL and an embedded picture".into(),
                ))
            }
            (Some(url), _) => LinkPicture::Url(url),
            (None, 0) => LinkPicture::None,
            (None, _) => {
                if !jpeg.starts_with(&[0xFF, 0xD8]) {
                    return Err(ShareError::Invalid(
                        "the embedded picture is not a JPEG".into(),
                    ));
                }
                LinkPicture::Jpeg(jpeg.to_vec())
            }
        };
        let shared = Self {
            labels: header.labels,
            background: header.background,
            bg_thresh: header.bg_thresh,
            template: header.template,
            model: header.model,
            width: header.width,
            height: header.height,
            mask,
            picture,
        };
        shared.validate().map_err(ShareError::Invalid)?;
        Ok(shared)
    }
}

fn check_url(url: &str, what: &str) -> Result<(), String> {
    if url.len() > MAX_URL_CHARS {
        return Err(format!("{what} URL longer than {MAX_URL_CHARS} characters"));
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{what} URL holds spaces or control characters"));
    }
    // A scheme is letters, digits, + - . before the first ':' (RFC 3986); only http(s) is
    // allowed, so `javascript:` or `data:` URLs never reach the page.
    let scheme_end = url.find(':');
    let first_slash = url.find(['/', '?', '#']);
    if let Some(end) = scheme_end {
        if first_slash.is_none_or(|s| end < s) {
            let scheme = url[..end].to_ascii_lowercase();
            if scheme != "http" && scheme != "https" {
                return Err(format!("{what} URL scheme '{scheme}' is not http or https"));
            }
        }
    }
    Ok(())
}

fn encode_runs(mask: &[u8], out: &mut Vec<u8>) {
    let mut i = 0;
    while i < mask.len() {
        let v = mask[i];
        let mut j = i + 1;
        while j < mask.len() && mask[j] == v {
            j += 1;
        }
        out.push(v);
        let mut n = (j - i) as u64;
        loop {
            let byte = (n & 0x7F) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                break;
            }
            out.push(byte | 0x80);
        }
        i = j;
    }
}

/// The label map and how many bytes its runs took.
fn decode_runs(bytes: &[u8], pixels: usize) -> Result<(Vec<u8>, usize), String> {
    let mut mask = Vec::with_capacity(pixels);
    let mut at = 0;
    while mask.len() < pixels {
        let &value = bytes.get(at).ok_or("the label map is cut short")?;
        at += 1;
        let mut run: u64 = 0;
        let mut shift = 0;
        loop {
            let &byte = bytes.get(at).ok_or("the label map is cut short")?;
            at += 1;
            if shift > 35 {
                return Err("a run length is too long".into());
            }
            run |= u64::from(byte & 0x7F) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                break;
            }
        }
        if run == 0 || run as usize > pixels - mask.len() {
            return Err(format!("a run of {run} pixels does not fit the picture"));
        }
        mask.resize(mask.len() + run as usize, value);
    }
    Ok((mask, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(w: usize, h: usize, labels: usize) -> ShareLink {
        // Blobs: a few rectangles of labels over background, like a real label map.
        let mut mask = vec![0u8; w * h];
        for (k, m) in mask.iter_mut().enumerate() {
            let (x, y) = (k % w, k / w);
            let cell = (x * 3 / w) + 3 * (y * 2 / h);
            let r =
                ((x as f64 - w as f64 / 2.0).powi(2) + (y as f64 - h as f64 / 2.0).powi(2)).sqrt();
            *m = if r < w as f64 / 5.0 {
                1
            } else {
                (cell % (labels + 1)) as u8
            };
        }
        ShareLink {
            labels: (0..labels).map(|i| format!("thing {i}")).collect(),
            background: true,
            bg_thresh: 0.95,
            template: "simple".into(),
            model: "models/demo.ovseg".into(),
            width: w,
            height: h,
            mask,
            picture: LinkPicture::Url("https://example.org/cat.jpg".into()),
        }
    }

    #[test]
    fn round_trips() {
        let s = sample(512, 512, 5);
        let link = s.to_link("https://ovseg.example/app/?x=1#old").unwrap();
        assert!(
            link.starts_with("https://ovseg.example/app/?x=1#ovseg1."),
            "{link}"
        );
        assert_eq!(ShareLink::from_link(&link).unwrap(), s);
        // Fragment alone, with or without '#'.
        let frag = s.to_fragment().unwrap();
        assert_eq!(ShareLink::from_link(&frag).unwrap(), s);
        assert_eq!(ShareLink::from_link(&format!("#{frag}")).unwrap(), s);

        let mut j = sample(64, 48, 3);
        j.picture = LinkPicture::Jpeg(vec![0xFF, 0xD8, 0xFF, 0xE0, 1, 2, 3, 0xFF, 0xD9]);
        j.background = false;
        j.mask.iter_mut().for_each(|v| *v %= 3);
        j.model = String::new();
        assert_eq!(ShareLink::from_link(&j.to_fragment().unwrap()).unwrap(), j);

        let mut none = sample(7, 3, 1);
        none.picture = LinkPicture::None;
        assert_eq!(
            ShareLink::from_link(&none.to_fragment().unwrap()).unwrap(),
            none
        );
    }

    #[test]
    fn truncated_links_are_errors() {
        let frag = sample(128, 96, 4).to_fragment().unwrap();
        for cut in [
            PREFIX.len(),
            PREFIX.len() + 1,
            PREFIX.len() + 10,
            frag.len() / 2,
            frag.len() - 1,
        ] {
            let e = ShareLink::from_link(&frag[..cut]).unwrap_err();
            assert!(
                matches!(e, ShareError::Corrupt(_) | ShareError::Invalid(_)),
                "cut at {cut}: {e:?}"
            );
        }
    }

    #[test]
    fn tampered_links_are_errors() {
        let frag = sample(128, 96, 4).to_fragment().unwrap();
        let mut bytes = frag.into_bytes();
        let mut failures = 0;
        for at in (PREFIX.len() + 2..bytes.len()).step_by(7) {
            let orig = bytes[at];
            bytes[at] = if orig == b'A' { b'B' } else { b'A' };
            let e = ShareLink::from_link(std::str::from_utf8(&bytes).unwrap());
            assert!(e.is_err(), "flip at {at} went unnoticed");
            failures += 1;
            bytes[at] = orig;
        }
        assert!(failures > 10);
        assert!(matches!(
            ShareLink::from_link("#ovseg1.<script>alert(1)</script>"),
            Err(ShareError::Corrupt(m)) if m.starts_with("base64")
        ));
        assert_eq!(
            ShareLink::from_link("https://x/#hello").unwrap_err(),
            ShareError::NotALink
        );
        assert_eq!(
            ShareLink::from_link("#ovseg2.AAAA").unwrap_err(),
            ShareError::Version("2".into())
        );
        assert_eq!(
            ShareLink::from_link("#ovseg1eJwLAAAA")
                .unwrap_err()
                .to_string(),
            "the link is damaged or truncated ('#ovseg1.' lost its '.')"
        );
    }

    /// A payload built by hand, zlib-valid but with hostile content.
    fn forge(header: &str, tail: &[u8]) -> String {
        let mut payload = (header.len() as u32).to_le_bytes().to_vec();
        payload.extend_from_slice(header.as_bytes());
        payload.extend_from_slice(tail);
        let packed = miniz_oxide::deflate::compress_to_vec_zlib(&payload, 6);
        format!(
            "#{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(packed)
        )
    }

    #[test]
    fn hostile_content_is_refused() {
        let head = |labels: &str, w: usize, h: usize, url: &str, model: &str| {
            format!(
                r#"{{"labels":{labels},"background":true,"bg_thresh":0.5,"template":"simple","model":{model},"width":{w},"height":{h},"image_url":{url},"jpeg_bytes":0}}"#
            )
        };
        let ok = forge(&head(r#"["cat"]"#, 2, 1, "null", "\"m.ovseg\""), &[1, 2]);
        assert!(ShareLink::from_link(&ok).is_ok());
        let cases = [
            // Oversized picture: refused before any allocation.
            forge(
                &head(r#"["cat"]"#, 100_000, 100_000, "null", "\"\""),
                &[1, 2],
            ),
            // Runs longer than the picture, or label indices beyond the labels.
            forge(&head(r#"["cat"]"#, 2, 1, "null", "\"\""), &[1, 3]),
            forge(&head(r#"["cat"]"#, 2, 1, "null", "\"\""), &[7, 2]),
            forge(
                &head(r#"["cat"]"#, 2, 1, "null", "\"\""),
                &[1, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80],
            ),
            // Script URLs and markup-bearing labels that are not valid label lists.
            forge(
                &head(r#"["cat"]"#, 2, 1, "\"javascript:alert(1)\"", "\"\""),
                &[1, 2],
            ),
            forge(
                &head(r#"["cat"]"#, 2, 1, "null", "\"data:text/html,<script>\""),
                &[1, 2],
            ),
            forge(&head(r#"["a,b"]"#, 2, 1, "null", "\"\""), &[1, 2]),
            forge(&head(r#"[]"#, 2, 1, "null", "\"\""), &[0, 2]),
            forge(r#"{"labels":["cat"],"extra":1}"#, &[]),
            forge("not json", &[]),
        ];
        for (i, link) in cases.iter().enumerate() {
            let e = ShareLink::from_link(link);
            assert!(matches!(e, Err(ShareError::Invalid(_))), "case {i}: {e:?}");
        }
        // A zip bomb: 9 MB of zeros compress to a few kB but exceed the inflate limit.
        let bomb = miniz_oxide::deflate::compress_to_vec_zlib(&vec![0u8; 9 << 20], 9);
        let link = format!(
            "#{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bomb)
        );
        assert!(matches!(
            ShareLink::from_link(&link),
            Err(ShareError::Invalid(_))
        ));
        let long = format!("#{PREFIX}{}", "A".repeat(MAX_LINK_CHARS + 1));
        assert!(matches!(
            ShareLink::from_link(&long),
            Err(ShareError::TooLong(_))
        ));
        // Labels with markup are legal words: the page renders them as text.
        let markup = forge(
            &head(r#"["<img src=x onerror=alert(1)>"]"#, 2, 1, "null", "\"\""),
            &[1, 2],
        );
        assert_eq!(
            ShareLink::from_link(&markup).unwrap().labels[0],
            "<img src=x onerror=alert(1)>"
        );
    }

    #[test]
    fn encoding_refuses_bad_states() {
        let mut s = sample(8, 8, 2);
        s.mask[0] = 9;
        assert!(matches!(s.to_fragment(), Err(ShareError::Encode(_))));
        let mut s = sample(8, 8, 2);
        s.mask.pop();
        assert!(s.to_fragment().is_err());
    }
}
