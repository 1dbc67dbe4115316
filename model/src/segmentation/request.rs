//! One segmentation request, parsed and validated once for every front end: the command line
//! (`ovseg segment`), the page's engine (`web/src/engine.rs`) and share links
//! (`crate::share`). The limits every front end shares are here too.

use thiserror::Error;

use super::{parse_labels, RgbImage, TemplateSet};
use crate::error::OvsegError;

/// Most words of a request whose label map has one byte a pixel (the page, share links, the
/// vocabularies `ovseg export-web` precomputes): with the background they are the 255 indices
/// 0..=254.
pub const MAX_BYTE_LABELS: usize = 254;
/// Most words the command line takes (its label maps become 16-bit PNGs beyond 255 classes):
/// more is almost certainly a mistake (ADE20K, the largest benchmark, has 150).
pub const MAX_LABELS: usize = 1000;
/// Pictures larger than this (width x height) are refused before any work: the command line's
/// decoder and the page's engine (a 16k x 16k photo is 268 MP).
pub const MAX_PIXELS: usize = 100_000_000;
/// The name of class 0 when a request has a background.
pub const BACKGROUND: &str = "background";

/// What is wrong with a request, in one line; [`RequestError::field`] says which input.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum RequestError {
    #[error("{0}")]
    Labels(String),
    #[error("background threshold {0} is not between 0 and 1")]
    BgThresh(f64),
    #[error("{0}")]
    Template(String),
    #[error("picture size {width}x{height} is out of range (1 to {max} pixels)")]
    PictureSize {
        width: usize,
        height: usize,
        max: usize,
    },
    #[error("{bytes} RGBA bytes for a {width}x{height} picture")]
    Rgba {
        bytes: usize,
        width: usize,
        height: usize,
    },
}

impl RequestError {
    /// The input at fault: `labels`, `bg_thresh`, `template` or `picture`.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Labels(_) => "labels",
            Self::BgThresh(_) => "bg_thresh",
            Self::Template(_) => "template",
            Self::PictureSize { .. } | Self::Rgba { .. } => "picture",
        }
    }
}

impl From<RequestError> for OvsegError {
    fn from(e: RequestError) -> Self {
        OvsegError::Input(e.to_string())
    }
}

/// The message of an input error, without its "invalid input" prefix.
fn message(e: OvsegError) -> String {
    match e {
        OvsegError::Input(m) => m,
        other => other.to_string(),
    }
}

/// The words to label pixels with and how; valid by construction ([`Request::parse`],
/// [`Request::from_list`]), so whoever holds one need not check it again.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    labels: Vec<String>,
    background: bool,
    bg_thresh: f64,
    template: TemplateSet,
}

impl Request {
    /// From the words as typed, comma separated (`"cat, sofa ,window"`), at most `max_labels`
    /// of them ([`MAX_BYTE_LABELS`] or [`MAX_LABELS`]), and a template set's name.
    pub fn parse(
        labels: &str,
        background: bool,
        bg_thresh: f64,
        template: &str,
        max_labels: usize,
    ) -> Result<Self, RequestError> {
        let (labels, template) = parse_words(labels, template, max_labels)?;
        check_bg_thresh(bg_thresh)?;
        Ok(Self {
            labels,
            background,
            bg_thresh,
            template,
        })
    }

    /// From a list of words (a share link's), which must be as [`Request::parse`] leaves them:
    /// trimmed, free of commas, distinct.
    pub fn from_list(
        labels: &[String],
        background: bool,
        bg_thresh: f64,
        template: &str,
        max_labels: usize,
    ) -> Result<Self, RequestError> {
        let request = Self::parse(
            &labels.join(","),
            background,
            bg_thresh,
            template,
            max_labels,
        )?;
        if request.labels != labels {
            return Err(RequestError::Labels(
                "labels must be trimmed and free of commas".into(),
            ));
        }
        Ok(request)
    }

    /// The words, trimmed and distinct, without the background.
    pub fn labels(&self) -> &[String] {
        &self.labels
    }

    /// Whether class 0 is [`BACKGROUND`] (pixels no word matches well enough).
    pub fn background(&self) -> bool {
        self.background
    }

    /// A pixel whose best score is below it is background (with a background); in [0, 1].
    pub fn bg_thresh(&self) -> f64 {
        self.bg_thresh
    }

    pub fn template(&self) -> TemplateSet {
        self.template
    }

    /// Label names by index: [`BACKGROUND`] first when there is one, then the words.
    pub fn names(&self) -> Vec<String> {
        let background = self.background.then(|| BACKGROUND.to_string());
        background
            .into_iter()
            .chain(self.labels.iter().cloned())
            .collect()
    }

    /// How many label indices the label map may hold.
    pub fn classes(&self) -> usize {
        self.labels.len() + usize::from(self.background)
    }

    /// The background threshold segmentation applies (`SegmentOptions::bg_thresh`): none
    /// without a background.
    pub fn threshold(&self) -> Option<f64> {
        self.background.then_some(self.bg_thresh)
    }
}

/// The words (comma separated, at most `max_labels`) and the template set's name: what class
/// embeddings are computed from, and cached by.
pub fn parse_words(
    labels: &str,
    template: &str,
    max_labels: usize,
) -> Result<(Vec<String>, TemplateSet), RequestError> {
    let labels = parse_labels(labels, max_labels).map_err(|e| RequestError::Labels(message(e)))?;
    let template = TemplateSet::parse(template).map_err(|e| RequestError::Template(message(e)))?;
    Ok((labels, template))
}

/// A background threshold must lie in [0, 1].
pub fn check_bg_thresh(bg_thresh: f64) -> Result<(), RequestError> {
    if (0.0..=1.0).contains(&bg_thresh) {
        Ok(())
    } else {
        Err(RequestError::BgThresh(bg_thresh))
    }
}

/// A picture (or label map) of `width` x `height` must have pixels, at most `max_pixels`
/// ([`MAX_PIXELS`], or a share link's smaller bound).
pub fn check_picture_size(
    width: usize,
    height: usize,
    max_pixels: usize,
) -> Result<(), RequestError> {
    if width == 0 || height == 0 || width.saturating_mul(height) > max_pixels {
        return Err(RequestError::PictureSize {
            width,
            height,
            max: max_pixels,
        });
    }
    Ok(())
}

/// An RGBA picture (the page's `ImageData`) as RGB, alpha ignored; its size is checked against
/// [`MAX_PIXELS`] and its byte count against its size.
pub fn rgba_picture(rgba: &[u8], width: usize, height: usize) -> Result<RgbImage, RequestError> {
    check_picture_size(width, height, MAX_PIXELS)?;
    if rgba.len() != width * height * 4 {
        return Err(RequestError::Rgba {
            bytes: rgba.len(),
            width,
            height,
        });
    }
    let rgb = rgba
        .chunks_exact(4)
        .flat_map(|p| [p[0], p[1], p[2]])
        .collect();
    Ok(RgbImage::new(width, height, rgb).expect("the size was checked"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOC: &str = "aeroplane, bicycle, bird, boat, bottle, bus, car, cat, chair, cow, \
                       diningtable, dog, horse, motorbike, person, pottedplant, sheep, sofa, \
                       train, tvmonitor";

    #[test]
    fn parses_words_and_names_background_first() {
        let r = Request::parse(VOC, true, 0.95, "simple", MAX_BYTE_LABELS).unwrap();
        assert_eq!(r.labels().len(), 20);
        assert_eq!(
            (r.labels()[0].as_str(), r.labels()[19].as_str()),
            ("aeroplane", "tvmonitor")
        );
        assert_eq!(r.template(), TemplateSet::Simple);
        let names = r.names();
        assert_eq!(names.len(), 21);
        assert_eq!(r.classes(), 21);
        assert_eq!(
            (names[0].as_str(), names[1].as_str()),
            ("background", "aeroplane")
        );
        assert_eq!(r.threshold(), Some(0.95));

        let r = Request::parse(" cat, sofa ,window", false, 0.5, "full", MAX_LABELS).unwrap();
        assert_eq!(r.names(), vec!["cat", "sofa", "window"]);
        assert_eq!((r.classes(), r.threshold()), (3, None));
        assert_eq!(r.template(), TemplateSet::Full);
        assert_eq!((r.background(), r.bg_thresh()), (false, 0.5));
    }

    #[test]
    fn refuses_bad_requests_naming_the_input() {
        let field = |labels: &str, bg: f64, template: &str, max: usize| {
            Request::parse(labels, true, bg, template, max)
                .unwrap_err()
                .field()
        };
        assert_eq!(field("cat,,dog", 0.95, "simple", MAX_LABELS), "labels");
        assert_eq!(field("cat", 3.0, "simple", MAX_LABELS), "bg_thresh");
        assert_eq!(field("cat", f64::NAN, "simple", MAX_LABELS), "bg_thresh");
        assert_eq!(field("cat", 0.95, "fancy", MAX_LABELS), "template");
        // 255 words do not fit a one-byte label map beside the background; the CLI takes them.
        let many: Vec<String> = (0..255).map(|i| format!("w{i}")).collect();
        assert_eq!(
            field(&many.join(","), 0.95, "simple", MAX_BYTE_LABELS),
            "labels"
        );
        assert!(Request::parse(&many.join(","), true, 0.95, "simple", MAX_LABELS).is_ok());
        assert!(Request::parse(&many[..254].join(","), true, 0.95, "simple", 254).is_ok());
        let e = Request::parse("cat", true, 3.0, "simple", MAX_LABELS).unwrap_err();
        assert_eq!(
            e.to_string(),
            "background threshold 3 is not between 0 and 1"
        );
        assert_eq!(
            OvsegError::from(e).to_string(),
            "invalid input: background threshold 3 is not between 0 and 1"
        );
    }

    #[test]
    fn a_list_must_be_as_parsing_leaves_it() {
        let list = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
        let r = Request::from_list(&list(&["cat", "sofa"]), false, 0.95, "simple", 254).unwrap();
        assert_eq!(r.names(), vec!["cat", "sofa"]);
        for bad in [&["a,b"][..], &[" cat"], &[], &["cat", "Cat"]] {
            let e = Request::from_list(&list(bad), true, 0.95, "simple", 254).unwrap_err();
            assert_eq!(e.field(), "labels", "{bad:?}");
        }
    }

    #[test]
    fn pictures_are_bounded_and_rgba_becomes_rgb() {
        let rgba = [10, 20, 30, 255, 40, 50, 60, 0];
        let picture = rgba_picture(&rgba, 2, 1).unwrap();
        assert_eq!(picture.pixels, vec![10, 20, 30, 40, 50, 60]);
        assert_eq!((picture.width, picture.height), (2, 1));
        assert_eq!(
            rgba_picture(&rgba[..7], 2, 1).unwrap_err().to_string(),
            "7 RGBA bytes for a 2x1 picture"
        );
        assert_eq!(
            rgba_picture(&[], 0, 1).unwrap_err().to_string(),
            "picture size 0x1 is out of range (1 to 100000000 pixels)"
        );
        assert!(check_picture_size(10_000, 10_000, MAX_PIXELS).is_ok());
        assert!(check_picture_size(10_001, 10_000, MAX_PIXELS).is_err());
        assert!(check_picture_size(usize::MAX, 2, MAX_PIXELS).is_err());
        assert!(check_picture_size(4096, 4097, 4096 * 4096).is_err());
    }
}
