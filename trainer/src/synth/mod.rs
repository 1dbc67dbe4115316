//! A synthetic world of image-caption pairs with pixel-exact ground truth: ten kinds of objects
//! (entity classes of the caption vocabulary) with varied shapes, colours, patterns, sizes,
//! positions and occlusion on textured backgrounds, each picture described by a natural
//! caption. Every picture depends only on (seed, split, index), so any part of the world can be
//! made again, in any order, on any number of threads.

pub mod backgrounds;
pub mod captions;
pub mod scene;
pub mod shapes;

use anyhow::{Context, Result};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use scene::Scene;
pub use shapes::Kind;

/// Bumped whenever the same (seed, split, index) would give a different picture or caption,
/// so older worlds on disk are not mistaken for current ones.
pub const GENERATOR_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
        }
    }
}

/// One generated pair.
pub struct Sample {
    pub id: String,
    pub size: usize,
    /// RGB bytes, row-major.
    pub rgb: Vec<u8>,
    /// Class value per pixel: 0 background, `Kind::label()` for objects.
    pub labels: Vec<u8>,
    pub caption: String,
    /// The kinds in the picture, in `Kind::ALL` order.
    pub kinds: Vec<Kind>,
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How the world looks and is described, beyond its seed and size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Style {
    /// How often captions say colours, patterns and the place, as in [`captions::caption`].
    pub detail: f64,
    /// How often an object takes one of its kind's [`Kind::typical_colours`]; 0 draws every
    /// colour uniformly (the world of generator version 1).
    pub typical_colours: f64,
    /// Objects are of the first `kinds` of [`Kind::ALL`] only (all ten: the full world).
    pub kinds: usize,
    /// Objects are this many times their usual size (1: the usual 15-55 % of the side).
    pub object_scale: f32,
    /// Backdrops of one flat colour (of [`backgrounds::PLAIN`]) instead of textured surfaces.
    pub plain_backdrop: bool,
    /// Every kind in its one [`Kind::own_colour`], without patterns: colour tells the kind.
    pub own_colours: bool,
    /// How often captions say the place (the backdrop), 0-1; `None`: 0.7 * `detail`.
    pub place: Option<f64>,
}

impl Default for Style {
    fn default() -> Self {
        Self {
            detail: 1.0,
            typical_colours: 0.0,
            kinds: Kind::ALL.len(),
            object_scale: 1.0,
            plain_backdrop: false,
            own_colours: false,
            place: None,
        }
    }
}

/// Pair `index` of `split`.
pub fn sample(seed: u64, split: Split, index: usize, size: usize, style: Style) -> Sample {
    let stream = splitmix(splitmix(seed) ^ splitmix(split as u64 + 1) ^ index as u64);
    let mut rng = ChaCha8Rng::seed_from_u64(stream);
    let scene = Scene::random(&mut rng, size, &style);
    let caption = captions::caption(&mut rng, &scene, style.detail, style.place);
    let rendered = scene.render();
    let mut kinds: Vec<Kind> = scene.objects.iter().map(|o| o.kind).collect();
    kinds.sort();
    kinds.dedup();
    Sample {
        id: format!("{}_{index:06}", split.name()),
        size,
        rgb: rendered.rgb,
        labels: rendered.labels,
        caption,
        kinds,
    }
}

/// Evaluation class list of a world of the first `kinds` kinds, background first: names in the
/// order of the label values. With `caption_names` the entity classes the captions use;
/// without, the list where several kinds go by a synonym no caption contains.
pub fn class_names(caption_names: bool, kinds: usize) -> Vec<String> {
    std::iter::once("background")
        .chain(Kind::ALL[..kinds].iter().map(|k| {
            if caption_names {
                k.entity()
            } else {
                k.eval_name()
            }
        }))
        .map(String::from)
        .collect()
}

/// The PASCAL VOC colour map (256 entries), so label PNGs look like the benchmark's.
pub use ovseg_model::segmentation::voc_palette;

pub fn encode_jpeg(rgb: &[u8], size: usize, quality: u8) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, quality)
        .encode(
            rgb,
            size as u32,
            size as u32,
            image::ExtendedColorType::Rgb8,
        )
        .context("cannot encode JPEG")?;
    Ok(bytes)
}

/// An 8-bit palette PNG of class values, as PASCAL VOC stores its annotations.
pub fn encode_label_png(labels: &[u8], size: usize) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, size as u32, size as u32);
    encoder.set_color(png::ColorType::Indexed);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_palette(voc_palette());
    let mut writer = encoder.write_header().context("cannot encode label PNG")?;
    writer
        .write_image_data(labels)
        .context("cannot encode label PNG")?;
    writer.finish().context("cannot encode label PNG")?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ovseg_model::data::entities::EntityVocab;

    #[test]
    fn captions_name_exactly_the_kinds_drawn() {
        let vocab = EntityVocab::default();
        // At any level of detail: colour and place words never add or hide an entity.
        for index in 0..400 {
            let style = Style {
                detail: if index % 2 == 0 { 1.0 } else { 0.3 },
                typical_colours: if index % 3 == 0 { 0.0 } else { 0.9 },
                kinds: if index % 5 == 0 { 3 } else { Kind::ALL.len() },
                object_scale: if index % 7 == 0 { 1.6 } else { 1.0 },
                plain_backdrop: index % 4 == 0,
                own_colours: index % 6 == 0,
                place: (index % 8 == 0).then_some(1.0),
            };
            let s = sample(7, Split::Train, index, 96, style);
            assert!(style.kinds == Kind::ALL.len() || s.kinds.iter().all(|k| k.label() <= 3));
            let mut found = vocab.extract(&s.caption).classes;
            found.sort();
            let mut expected: Vec<String> =
                s.kinds.iter().map(|k| k.entity().to_string()).collect();
            expected.sort();
            assert_eq!(found, expected, "caption {:?}", s.caption);
            for kind in &s.kinds {
                assert!(
                    s.labels.contains(&kind.label()),
                    "{kind:?} not visible in {}",
                    s.id
                );
            }
        }
    }

    #[test]
    fn eval_synonyms_are_outside_the_caption_vocabulary() {
        let vocab = EntityVocab::default();
        for kind in Kind::ALL {
            if kind.eval_name() != kind.entity() {
                assert_eq!(vocab.class_of(kind.eval_name()), None, "{kind:?}");
            }
            for word in kind.caption_words() {
                assert_eq!(vocab.class_of(word), Some(kind.entity()));
            }
        }
    }

    #[test]
    fn same_seed_same_sample() {
        let (a, b) = (
            sample(3, Split::Val, 5, 64, Style::default()),
            sample(3, Split::Val, 5, 64, Style::default()),
        );
        assert_eq!((a.rgb, a.labels, a.caption), (b.rgb, b.labels, b.caption));
        let c = sample(4, Split::Val, 5, 64, Style::default());
        assert_ne!(sample(3, Split::Val, 5, 64, Style::default()).rgb, c.rgb);
    }

    #[test]
    fn the_plain_world_has_flat_backdrops_named_by_their_colour() {
        let style = Style {
            detail: 0.0,
            plain_backdrop: true,
            own_colours: true,
            place: Some(1.0),
            ..Style::default()
        };
        for index in 0..40 {
            let s = sample(5, Split::Train, index, 64, style);
            // Every backdrop pixel is the one flat colour the caption names.
            let backdrop: Vec<[u8; 3]> = s
                .labels
                .iter()
                .zip(s.rgb.chunks(3))
                .filter(|(&l, _)| l == 0)
                .map(|(_, c)| [c[0], c[1], c[2]])
                .collect();
            let (colour, phrases) = backgrounds::PLAIN
                .iter()
                .find(|(c, _)| c.map(|v| v as u8) == backdrop[0])
                .expect("a plain colour");
            assert!(backdrop.iter().all(|p| *p == colour.map(|v| v as u8)));
            assert!(
                phrases.iter().any(|p| s.caption.contains(p)),
                "{}",
                s.caption
            );
        }
        // Without --place and with detail 0 the backdrop goes unsaid.
        let quiet = Style {
            place: None,
            ..style
        };
        let s = sample(5, Split::Train, 0, 64, quiet);
        assert!(!s.caption.contains("background"), "{}", s.caption);
    }
}
