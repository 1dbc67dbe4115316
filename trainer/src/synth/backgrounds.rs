//! Textured background surfaces (sky, grass, water, walls, floors...) and how a caption names
//! them. Backgrounds are label 0 in the ground truth.

use rand::seq::IndexedRandom;
use rand::Rng;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Surface {
    Sky,
    Sunset,
    Grass,
    Water,
    Sand,
    Snow,
    BrickWall,
    PaintedWall([f32; 3]),
    WoodFloor,
    Tiles([f32; 3]),
    /// One flat colour, the index of a [`PLAIN`] colour.
    Plain(usize),
}

/// Flat backdrop colours, each far from every object colour (`scene::COLOURS`), with the
/// phrases captions name them by (no colour word of an object, no entity word).
pub const PLAIN: [([f32; 3], [&str; 2]); 3] = [
    (
        [70.0, 160.0, 160.0],
        ["on a teal background", "against a teal backdrop"],
    ),
    (
        [220.0, 200.0, 160.0],
        ["on a beige background", "against a beige backdrop"],
    ),
    (
        [95.0, 120.0, 75.0],
        ["on an olive background", "against an olive backdrop"],
    ),
];

impl Surface {
    /// Phrases a caption may end with when the picture shows this surface.
    pub fn phrases(self) -> &'static [&'static str] {
        match self {
            Surface::Sky => &["against the blue sky", "under a blue sky", "in the sky"],
            Surface::Sunset => &["at sunset", "under an evening sky"],
            Surface::Grass => &[
                "on the grass",
                "on a lawn",
                "in a grassy field",
                "on green grass",
            ],
            Surface::Water => &["on the water", "by the lake", "on the sea"],
            Surface::Sand => &["on the beach", "on the sand", "on a sandy beach"],
            Surface::Snow => &["in the snow", "on snowy ground"],
            Surface::BrickWall => &["in front of a brick wall", "against a red brick wall"],
            Surface::PaintedWall(_) => &["in front of a wall", "against a painted wall"],
            Surface::WoodFloor => &["on a wooden floor", "on the floor"],
            Surface::Tiles(_) => &["on a tiled floor", "on the tiles"],
            Surface::Plain(i) => &PLAIN[i].1,
        }
    }
}

/// The picture behind the objects: an upper surface, and a lower one below a wavy horizon.
#[derive(Debug, Clone, Copy)]
pub struct Backdrop {
    pub upper: Surface,
    pub lower: Option<Surface>,
    /// Horizon height as a fraction of the picture.
    pub horizon: f32,
    pub wave: f32,
    pub seed: u32,
}

const WALL_PAINT: [[f32; 3]; 5] = [
    [225.0, 215.0, 190.0],
    [180.0, 200.0, 215.0],
    [200.0, 220.0, 190.0],
    [235.0, 225.0, 225.0],
    [170.0, 160.0, 150.0],
];

fn paint<R: Rng>(rng: &mut R) -> [f32; 3] {
    *WALL_PAINT.choose(rng).expect("colours")
}

impl Backdrop {
    /// One flat colour of [`PLAIN`] over the whole picture.
    pub fn plain(rng: &mut impl Rng) -> Self {
        Self {
            upper: Surface::Plain(rng.random_range(0..PLAIN.len())),
            lower: None,
            horizon: 1.0,
            wave: 0.0,
            seed: rng.random(),
        }
    }

    pub fn random(rng: &mut impl Rng) -> Self {
        let seed = rng.random();
        let horizon = rng.random_range(0.3..0.65);
        let wave = rng.random_range(0.0..0.03);
        let roll: f32 = rng.random();
        let (upper, lower) = if roll < 0.5 {
            let upper = if rng.random_bool(0.75) {
                Surface::Sky
            } else {
                Surface::Sunset
            };
            let lower = *[Surface::Grass, Surface::Water, Surface::Sand, Surface::Snow]
                .choose(rng)
                .expect("surfaces");
            (upper, Some(lower))
        } else if roll < 0.8 {
            let upper = if rng.random_bool(0.5) {
                Surface::BrickWall
            } else {
                Surface::PaintedWall(paint(rng))
            };
            let lower = if rng.random_bool(0.6) {
                Surface::WoodFloor
            } else {
                Surface::Tiles(paint(rng))
            };
            (upper, Some(lower))
        } else {
            let only = [
                Surface::Sky,
                Surface::Grass,
                Surface::Water,
                Surface::Sand,
                Surface::BrickWall,
                Surface::PaintedWall(paint(rng)),
                Surface::WoodFloor,
            ];
            (*only.choose(rng).expect("surfaces"), None)
        };
        Self {
            upper,
            lower,
            horizon,
            wave,
            seed,
        }
    }

    /// The surface at picture point (x, y), both 0..1.
    pub fn surface_at(&self, x: f32, y: f32) -> Surface {
        match self.lower {
            Some(lower) if y >= self.horizon_at(x) => lower,
            _ => self.upper,
        }
    }

    fn horizon_at(&self, x: f32) -> f32 {
        self.horizon + self.wave * (x * 9.0 + self.seed as f32).sin()
    }

    /// Paints the whole picture (RGB, f32 0..255, row-major).
    pub fn paint(&self, size: usize, rgb: &mut [[f32; 3]]) {
        let s = size as f32;
        for y in 0..size {
            for x in 0..size {
                let (fx, fy) = ((x as f32 + 0.5) / s, (y as f32 + 0.5) / s);
                let horizon = self.horizon_at(fx);
                rgb[y * size + x] = match self.lower {
                    Some(lower) if fy >= horizon => {
                        surface_colour(lower, fx, (fy - horizon) / (1.0 - horizon), fy, self.seed)
                    }
                    Some(_) => surface_colour(self.upper, fx, fy / horizon, fy, self.seed),
                    None => surface_colour(self.upper, fx, fy, fy, self.seed),
                };
            }
        }
    }
}

fn hash(x: i32, y: i32, seed: u32) -> f32 {
    let mut h = (x as u32).wrapping_mul(0x8da6_b343)
        ^ (y as u32).wrapping_mul(0xd816_3841)
        ^ seed.wrapping_mul(0xcb1a_b31f);
    h ^= h >> 13;
    h = h.wrapping_mul(0x5bd1_e995);
    h ^= h >> 15;
    (h & 0x00ff_ffff) as f32 / 16_777_216.0
}

/// Smooth value noise in [0, 1).
pub fn noise(x: f32, y: f32, seed: u32) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (tx, ty) = (x - x0, y - y0);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let (i, j) = (x0 as i32, y0 as i32);
    let a = hash(i, j, seed) + sx * (hash(i + 1, j, seed) - hash(i, j, seed));
    let b = hash(i, j + 1, seed) + sx * (hash(i + 1, j + 1, seed) - hash(i, j + 1, seed));
    a + sy * (b - a)
}

/// Three octaves of value noise, in [0, 1).
pub fn fbm(x: f32, y: f32, seed: u32) -> f32 {
    (noise(x, y, seed) * 4.0
        + noise(x * 2.0, y * 2.0, seed ^ 1) * 2.0
        + noise(x * 4.0, y * 4.0, seed ^ 2))
        / 7.0
}

fn mix(a: [f32; 3], b: [f32; 3], t: f32) -> [f32; 3] {
    [
        a[0] + (b[0] - a[0]) * t,
        a[1] + (b[1] - a[1]) * t,
        a[2] + (b[2] - a[2]) * t,
    ]
}

fn scale(c: [f32; 3], k: f32) -> [f32; 3] {
    [c[0] * k, c[1] * k, c[2] * k]
}

/// `x`, `y`: position in the picture (0..1); `t`: 0 at the top of the surface's region, 1 at its
/// bottom (for gradients and perspective).
fn surface_colour(surface: Surface, x: f32, t: f32, y: f32, seed: u32) -> [f32; 3] {
    match surface {
        Surface::Sky => {
            let base = mix(
                [70.0, 125.0, 210.0],
                [175.0, 210.0, 240.0],
                t.clamp(0.0, 1.0),
            );
            let cloud = ((fbm(x * 4.0, y * 9.0, seed) - 0.55) * 5.0).clamp(0.0, 1.0);
            mix(base, [245.0, 245.0, 250.0], cloud)
        }
        Surface::Sunset => {
            let t = t.clamp(0.0, 1.0);
            let base = if t < 0.5 {
                mix([70.0, 60.0, 130.0], [220.0, 110.0, 120.0], t * 2.0)
            } else {
                mix([220.0, 110.0, 120.0], [250.0, 180.0, 90.0], t * 2.0 - 1.0)
            };
            let cloud = ((fbm(x * 3.0, y * 12.0, seed) - 0.6) * 4.0).clamp(0.0, 0.6);
            mix(base, [120.0, 70.0, 90.0], cloud)
        }
        Surface::Grass => {
            let patch = fbm(x * 6.0, y * 6.0, seed);
            let blade = noise(x * 90.0, y * 14.0, seed ^ 7);
            let k = 0.65 + 0.45 * patch + 0.25 * (blade - 0.5);
            scale([70.0, 150.0, 55.0], k * (0.85 + 0.25 * t))
        }
        Surface::Water => {
            let ripple = ((y * (60.0 + 60.0 * t)) + fbm(x * 5.0, y * 5.0, seed) * 8.0).sin();
            let base = mix([30.0, 80.0, 150.0], [50.0, 120.0, 180.0], t.clamp(0.0, 1.0));
            mix(
                base,
                [190.0, 215.0, 235.0],
                ((ripple - 0.7) * 2.0).clamp(0.0, 0.6),
            )
        }
        Surface::Sand => {
            let dune = 0.9 + 0.1 * (x * 12.0 + fbm(x * 3.0, y * 3.0, seed) * 6.0).sin();
            let grain = 0.92 + 0.16 * noise(x * 150.0, y * 150.0, seed ^ 3);
            scale([222.0, 196.0, 145.0], dune * grain)
        }
        Surface::Snow => {
            let shade = fbm(x * 5.0, y * 5.0, seed);
            mix([242.0, 245.0, 250.0], [185.0, 200.0, 225.0], shade * 0.6)
        }
        Surface::BrickWall => brick_wall_colour(x, y, seed),
        Surface::PaintedWall(paint) => scale(paint, 0.9 + 0.12 * fbm(x * 3.0, y * 3.0, seed)),
        Surface::Plain(i) => PLAIN[i].0,
        Surface::WoodFloor => wood_floor_colour(x, t, y, seed),
        Surface::Tiles(paint) => tiles_colour(paint, x, t),
    }
}

/// Bricks in offset rows with mortar joints, each brick its own shade.
fn brick_wall_colour(x: f32, y: f32, seed: u32) -> [f32; 3] {
    let (bw, bh) = (0.13, 0.055);
    let row = (y / bh).floor();
    let bx = x / bw + if row as i32 % 2 == 0 { 0.0 } else { 0.5 };
    let (fx, fy) = (bx.fract(), (y / bh).fract());
    if fx < 0.06 || fy < 0.12 {
        [195.0, 190.0, 180.0]
    } else {
        let k = 0.8 + 0.35 * hash(bx.floor() as i32, row as i32, seed);
        scale(
            [165.0, 70.0, 50.0],
            k * (0.9 + 0.15 * noise(x * 80.0, y * 80.0, seed)),
        )
    }
}

/// Planks across the floor, wider towards the viewer, each its own shade, with grain.
fn wood_floor_colour(x: f32, t: f32, y: f32, seed: u32) -> [f32; 3] {
    let ph = 0.05 + 0.05 * t;
    let plank = (y / ph).floor();
    let k = 0.75 + 0.35 * hash(plank as i32, 0, seed);
    let grain = 0.9 + 0.1 * (x * 60.0 + fbm(x * 4.0, y * 20.0, seed) * 10.0).sin();
    if (y / ph).fract() < 0.08 {
        [70.0, 45.0, 30.0]
    } else {
        scale([160.0, 110.0, 65.0], k * grain)
    }
}

/// A checkerboard of two shades of `paint` with grout lines, in perspective.
fn tiles_colour(paint: [f32; 3], x: f32, t: f32) -> [f32; 3] {
    let n = 6.0 + 6.0 * (1.0 - t);
    let (tx, ty) = (x * n, t * 5.0);
    if tx.fract() < 0.05 || ty.fract() < 0.06 {
        [120.0, 120.0, 115.0]
    } else if (tx.floor() + ty.floor()) as i32 % 2 == 0 {
        scale(paint, 0.95)
    } else {
        scale(paint, 0.75)
    }
}
