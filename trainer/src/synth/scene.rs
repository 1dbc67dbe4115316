//! A scene: a backdrop and 1-4 objects in drawing order (later ones cover earlier ones), and
//! its rendering into a picture and a label map of the topmost object at every pixel centre.

use rand::seq::IndexedRandom;
use rand::Rng;

use super::backgrounds::{fbm, Backdrop};
use super::shapes::{part_at, Kind, Part, Pattern};
use super::Style;

/// Named colours for objects. No "orange" (an entity class: the fruit) and no "light" (also an
/// entity class), so colour words never add entities to a caption.
pub const COLOURS: [(&str, [f32; 3]); 10] = [
    ("red", [205.0, 40.0, 40.0]),
    ("blue", [40.0, 85.0, 205.0]),
    ("green", [45.0, 165.0, 65.0]),
    ("yellow", [240.0, 210.0, 40.0]),
    ("purple", [135.0, 60.0, 175.0]),
    ("pink", [245.0, 135.0, 185.0]),
    ("white", [245.0, 245.0, 245.0]),
    ("black", [30.0, 30.0, 35.0]),
    ("brown", [125.0, 78.0, 40.0]),
    ("grey", [130.0, 130.0, 138.0]),
];

#[derive(Debug, Clone)]
pub struct Object {
    pub kind: Kind,
    /// Centre, pixels.
    pub cx: f32,
    pub cy: f32,
    /// Half the side of the object's unit frame, pixels.
    pub scale: f32,
    /// Horizontal stretch of the frame (varied proportions).
    pub stretch: f32,
    pub tilt: f32,
    pub mirror: bool,
    pub colour: &'static str,
    pub main: [f32; 3],
    pub second: [f32; 3],
    pub pattern: Pattern,
    pub params: [f32; 4],
}

#[derive(Debug, Clone)]
pub struct Scene {
    pub size: usize,
    pub backdrop: Backdrop,
    pub objects: Vec<Object>,
}

fn jitter(rng: &mut impl Rng, c: [f32; 3], amount: f32) -> [f32; 3] {
    c.map(|v| (v + rng.random_range(-amount..=amount)).clamp(0.0, 255.0))
}

/// The object's colour name and value: its kind's own colour, one of its kind's two typical
/// colours (with probability `style.typical_colours`) or any colour.
fn main_colour(rng: &mut impl Rng, kind: Kind, style: &Style) -> (&'static str, [f32; 3]) {
    let typical = style.typical_colours;
    // No draw at all when `typical` is 0, so such worlds are the generator's first ones.
    let &(colour, main) = if style.own_colours {
        let name = kind.own_colour();
        COLOURS
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a named colour")
    } else if typical > 0.0 && rng.random_bool(typical) {
        let name = *kind.typical_colours().choose(rng).expect("two colours");
        COLOURS
            .iter()
            .find(|(n, _)| *n == name)
            .expect("a named colour")
    } else {
        COLOURS.choose(rng).expect("colours")
    };
    (colour, main)
}

/// The object's second colour: another named colour, or its kind's usual one (sails, flower
/// centres, roofs).
fn second_colour(rng: &mut impl Rng, kind: Kind, colour: &str) -> [f32; 3] {
    let second = loop {
        let &(name, c) = COLOURS.choose(rng).expect("colours");
        if name != colour {
            break c;
        }
    };
    match kind {
        // Sails and flower centres look best in their own usual colours.
        Kind::Boat if rng.random_bool(0.6) => [245.0, 245.0, 240.0],
        Kind::Flower if rng.random_bool(0.7) => [235.0, 190.0, 40.0],
        Kind::House => *[
            [165.0, 50.0, 40.0],
            [90.0, 60.0, 45.0],
            [80.0, 80.0, 90.0],
            [40.0, 40.0, 45.0],
        ]
        .choose(rng)
        .expect("roofs"),
        _ => second,
    }
}

/// The pattern of the object's main colour (plain for kinds that do not show one).
fn random_pattern(rng: &mut impl Rng, kind: Kind, style: &Style) -> Pattern {
    if style.own_colours {
        Pattern::Plain
    } else if kind.shows_pattern() || kind == Kind::House {
        match rng.random_range(0..5) {
            0 | 1 => Pattern::Plain,
            2 => Pattern::Stripes {
                freq: rng.random_range(6.0..14.0),
                angle: rng.random_range(0.0..std::f32::consts::PI),
            },
            3 => Pattern::Dots {
                freq: rng.random_range(2.5..5.0),
            },
            _ => Pattern::Checks {
                freq: rng.random_range(2.0..4.0),
            },
        }
    } else {
        Pattern::Plain
    }
}

/// The object's tilt, radians, within what looks natural for its kind (a bottle sometimes
/// lies on its side).
fn random_tilt(rng: &mut impl Rng, kind: Kind) -> f32 {
    let max_tilt = kind.max_tilt();
    let mut tilt = if max_tilt > 0.0 {
        rng.random_range(-max_tilt..=max_tilt)
    } else {
        0.0
    };
    if kind == Kind::Bottle && rng.random_bool(0.15) {
        tilt += std::f32::consts::FRAC_PI_2;
    }
    tilt
}

impl Object {
    /// A random object of `kind` in a picture of `size` pixels holding `count` objects, its
    /// colours as `style` asks (`style.typical_colours`: the probability that it takes one of its
    /// kind's typical colours rather than any colour).
    fn random(rng: &mut impl Rng, kind: Kind, size: usize, count: usize, style: &Style) -> Self {
        let object_scale = style.object_scale;
        let s = size as f32;
        // The object's extent (twice `scale`) is 15-55% of the side, smaller when crowded,
        // times `object_scale` (at most 90%).
        let (lo, hi) = match count {
            1 => (0.3, 0.55),
            2 => (0.22, 0.45),
            _ => (0.15, 0.38),
        };
        let extent: f32 = rng.random_range(lo..hi);
        let scale = s * (extent * object_scale).min(0.9) / 2.0;
        // Most of the object stays inside the picture.
        let margin = scale * 0.6;
        let cx = rng.random_range(margin..(s - margin));
        let cy = rng.random_range(margin..(s - margin));
        let (colour, main) = main_colour(rng, kind, style);
        let second = second_colour(rng, kind, colour);
        let pattern = random_pattern(rng, kind, style);
        let tilt = random_tilt(rng, kind);
        Self {
            kind,
            cx,
            cy,
            scale,
            stretch: rng.random_range(0.85..1.15),
            tilt,
            mirror: rng.random_bool(0.5),
            colour,
            main: jitter(rng, main, 18.0),
            second: jitter(rng, second, 18.0),
            pattern,
            params: [rng.random(), rng.random(), rng.random(), rng.random()],
        }
    }

    /// The object's unit-frame point under pixel centre (x, y).
    fn local(&self, x: f32, y: f32) -> (f32, f32) {
        let (dx, dy) = ((x - self.cx) / self.scale, (y - self.cy) / self.scale);
        let (s, c) = self.tilt.sin_cos();
        let u = (dx * c + dy * s) / self.stretch;
        let v = -dx * s + dy * c;
        (if self.mirror { -u } else { u }, v)
    }

    /// Pixel bounds (x0, y0, x1, y1), exclusive end, clipped to the picture.
    fn bounds(&self, size: usize) -> (usize, usize, usize, usize) {
        let r = self.scale * self.stretch.max(1.0) * std::f32::consts::SQRT_2 + 1.0;
        let clip = |v: f32| v.clamp(0.0, size as f32) as usize;
        (
            clip(self.cx - r),
            clip(self.cy - r),
            clip((self.cx + r).ceil()),
            clip((self.cy + r).ceil()),
        )
    }

    fn colour_of(&self, part: Part, u: f32, v: f32) -> [f32; 3] {
        let base = match part {
            Part::Main if self.pattern.second_at(u, v) => self.second,
            Part::Main => self.main,
            Part::Second => self.second,
            Part::Dark => [40.0, 36.0, 36.0],
            Part::Light => [238.0, 232.0, 218.0],
            Part::Glass => [165.0, 205.0, 232.0],
            Part::Lamp => [250.0, 225.0, 100.0],
            Part::Leaf => [50.0, 135.0, 45.0],
        };
        // Light from the upper left; the ball gets a round highlight.
        let mut k = 1.08 - 0.1 * (v + 1.0);
        if self.kind == Kind::Ball {
            let d = ((u + 0.4).powi(2) + (v + 0.4).powi(2)).sqrt();
            k = 1.25 - 0.4 * d.min(1.4);
        }
        base.map(|c| c * k)
    }
}

/// Scene drawn: the picture (RGB bytes) and the label of every pixel.
pub struct Rendered {
    pub rgb: Vec<u8>,
    pub labels: Vec<u8>,
}

impl Scene {
    /// A random scene whose every object keeps at least 40% of its pixels visible and is big
    /// enough to see, so every object a caption names is really in the picture.
    /// Objects, backdrop and colours as `style` says.
    pub fn random(rng: &mut impl Rng, size: usize, style: &Style) -> Self {
        let kinds = &Kind::ALL[..style.kinds];
        let backdrop = if style.plain_backdrop {
            Backdrop::plain(rng)
        } else {
            Backdrop::random(rng)
        };
        let min_pixels = (size * size) / 150;
        loop {
            let count = *[1, 1, 2, 2, 2, 3, 3, 4].choose(rng).expect("counts");
            let mut drawn: Vec<Kind> = Vec::with_capacity(count);
            for _ in 0..count {
                let repeat = !drawn.is_empty() && rng.random_bool(0.25);
                let kind = if repeat {
                    *drawn.choose(rng).expect("non-empty")
                } else {
                    *kinds.choose(rng).expect("kinds")
                };
                drawn.push(kind);
            }
            let objects = drawn
                .into_iter()
                .map(|k| Object::random(rng, k, size, count, style))
                .collect();
            let scene = Scene {
                size,
                backdrop,
                objects,
            };
            let (drawn, visible) = scene.coverage();
            if drawn
                .iter()
                .zip(&visible)
                .all(|(&d, &v)| v >= min_pixels && v * 10 >= d * 4)
            {
                return scene;
            }
        }
    }

    /// Visits every pixel covered by object `i`: f(pixel index, part, u, v).
    fn each_pixel(&self, i: usize, mut f: impl FnMut(usize, Part, f32, f32)) {
        let o = &self.objects[i];
        let (x0, y0, x1, y1) = o.bounds(self.size);
        for y in y0..y1 {
            for x in x0..x1 {
                let (u, v) = o.local(x as f32 + 0.5, y as f32 + 0.5);
                if let Some(part) = part_at(o.kind, o.params, u, v) {
                    f(y * self.size + x, part, u, v);
                }
            }
        }
    }

    /// Per object: pixels it covers in the picture, and those no later object covers.
    fn coverage(&self) -> (Vec<usize>, Vec<usize>) {
        let mut owner = vec![u8::MAX; self.size * self.size];
        let drawn: Vec<usize> = (0..self.objects.len())
            .map(|i| {
                let mut count = 0;
                self.each_pixel(i, |p, _, _, _| {
                    owner[p] = i as u8;
                    count += 1;
                });
                count
            })
            .collect();
        let mut visible = vec![0; self.objects.len()];
        for &o in &owner {
            if (o as usize) < visible.len() {
                visible[o as usize] += 1;
            }
        }
        (drawn, visible)
    }

    pub fn render(&self) -> Rendered {
        let n = self.size * self.size;
        let mut rgb = vec![[0f32; 3]; n];
        self.backdrop.paint(self.size, &mut rgb);
        let mut labels = vec![0u8; n];
        for (i, o) in self.objects.iter().enumerate() {
            let seed = self.backdrop.seed.wrapping_add(i as u32 * 7919);
            self.each_pixel(i, |p, part, u, v| {
                // A little surface grain so objects are not flat paint.
                let grain = 0.93 + 0.14 * fbm(u * 6.0, v * 6.0, seed);
                rgb[p] = o.colour_of(part, u, v).map(|c| c * grain);
                labels[p] = o.kind.label();
            });
        }
        Rendered {
            rgb: rgb
                .iter()
                .flat_map(|c| c.map(|v| v.round().clamp(0.0, 255.0) as u8))
                .collect(),
            labels,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn colours_drawn(typical: f64) -> (usize, usize) {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (mut usual, mut all) = (0, 0);
        for _ in 0..300 {
            let style = Style {
                typical_colours: typical,
                ..Style::default()
            };
            for o in Scene::random(&mut rng, 96, &style).objects {
                all += 1;
                usual += o.kind.typical_colours().contains(&o.colour) as usize;
            }
        }
        (usual, all)
    }

    #[test]
    fn typical_colours_set_how_often_objects_wear_their_kinds_colours() {
        let (usual, all) = colours_drawn(1.0);
        assert_eq!(usual, all);
        // Uniform colours hit a kind's two of ten about a fifth of the time.
        let (usual, all) = colours_drawn(0.0);
        let share = usual as f64 / all as f64;
        assert!((0.15..0.25).contains(&share), "{usual} of {all}");
        let (usual, all) = colours_drawn(0.5);
        let share = usual as f64 / all as f64;
        assert!((0.5..0.7).contains(&share), "{usual} of {all}");
    }

    #[test]
    fn own_colours_give_every_kind_its_one_colour_without_patterns() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        let style = Style {
            own_colours: true,
            ..Style::default()
        };
        for _ in 0..100 {
            for o in Scene::random(&mut rng, 96, &style).objects {
                assert_eq!(o.colour, o.kind.own_colour());
                assert!(matches!(o.pattern, Pattern::Plain));
            }
        }
        let mut colours: Vec<&str> = Kind::ALL.iter().map(|k| k.own_colour()).collect();
        colours.sort_unstable();
        colours.dedup();
        assert_eq!(
            colours.len(),
            Kind::ALL.len(),
            "no two kinds share a colour"
        );
    }

    #[test]
    fn every_colour_is_typical_of_two_kinds() {
        for (name, _) in COLOURS {
            let kinds = Kind::ALL
                .iter()
                .filter(|k| k.typical_colours().contains(&name))
                .count();
            assert_eq!(kinds, 2, "{name}");
        }
    }
}
