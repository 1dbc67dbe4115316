//! The object kinds: each is a set of parts drawn in its own unit frame ([-1, 1]², y down), so
//! one membership test serves every position, size, rotation and mirror image.

use std::f32::consts::PI;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Ball,
    Kite,
    House,
    Umbrella,
    Clock,
    Cup,
    Bottle,
    Boat,
    Car,
    Flower,
}

impl Kind {
    pub const ALL: [Kind; 10] = [
        Kind::Ball,
        Kind::Kite,
        Kind::House,
        Kind::Umbrella,
        Kind::Clock,
        Kind::Cup,
        Kind::Bottle,
        Kind::Boat,
        Kind::Car,
        Kind::Flower,
    ];

    /// Ground-truth value (0 is the background).
    pub fn label(self) -> u8 {
        Kind::ALL.iter().position(|&k| k == self).expect("listed") as u8 + 1
    }

    /// The two colours most objects of the kind come in (each colour is typical of two kinds),
    /// as bananas tend to be yellow: the colour narrows down what an object is, its shape
    /// decides. `synth --typical-colours` sets how often an object takes one of them.
    /// The kind's colour of its own (no two kinds share one), for worlds where colour tells
    /// the kind.
    pub fn own_colour(self) -> &'static str {
        match self {
            Kind::Ball => "red",
            Kind::Kite => "yellow",
            Kind::House => "white",
            Kind::Umbrella => "purple",
            Kind::Clock => "black",
            Kind::Cup => "blue",
            Kind::Bottle => "green",
            Kind::Boat => "brown",
            Kind::Car => "grey",
            Kind::Flower => "pink",
        }
    }

    pub fn typical_colours(self) -> [&'static str; 2] {
        match self {
            Kind::Ball => ["red", "white"],
            Kind::Kite => ["yellow", "pink"],
            Kind::House => ["white", "brown"],
            Kind::Umbrella => ["black", "purple"],
            Kind::Clock => ["grey", "black"],
            Kind::Cup => ["blue", "pink"],
            Kind::Bottle => ["green", "brown"],
            Kind::Boat => ["blue", "green"],
            Kind::Car => ["grey", "yellow"],
            Kind::Flower => ["purple", "red"],
        }
    }

    /// The entity class captions use.
    pub fn entity(self) -> &'static str {
        match self {
            Kind::Ball => "ball",
            Kind::Kite => "kite",
            Kind::House => "house",
            Kind::Umbrella => "umbrella",
            Kind::Clock => "clock",
            Kind::Cup => "cup",
            Kind::Bottle => "bottle",
            Kind::Boat => "boat",
            Kind::Car => "car",
            Kind::Flower => "flower",
        }
    }

    /// Words a caption may use for the kind: the entity class and its synonyms in the entity
    /// vocabulary (they all reduce to `entity()`).
    pub fn caption_words(self) -> &'static [&'static str] {
        match self {
            Kind::Ball => &["ball"],
            Kind::Kite => &["kite"],
            Kind::House => &["house", "building"],
            Kind::Umbrella => &["umbrella"],
            Kind::Clock => &["clock"],
            Kind::Cup => &["cup"],
            Kind::Bottle => &["bottle"],
            Kind::Boat => &["boat"],
            Kind::Car => &["car"],
            Kind::Flower => &["flower"],
        }
    }

    /// The evaluation class name: half the kinds get a synonym that no caption ever uses and
    /// that is outside the entity vocabulary, so only the pretrained text encoder can tie it to
    /// what was learned.
    pub fn eval_name(self) -> &'static str {
        match self {
            Kind::House => "cottage",
            Kind::Umbrella => "parasol",
            Kind::Cup => "mug",
            Kind::Boat => "sailboat",
            Kind::Car => "automobile",
            other => other.entity(),
        }
    }

    /// Largest tilt, radians, that still looks natural.
    pub fn max_tilt(self) -> f32 {
        match self {
            Kind::Ball | Kind::Clock => 0.0,
            Kind::Kite => 0.6,
            Kind::Umbrella => 0.45,
            Kind::Bottle => 0.3,
            Kind::Flower => 0.25,
            Kind::Boat | Kind::Car | Kind::Cup => 0.12,
            Kind::House => 0.0,
        }
    }

    /// Whether a pattern on the main colour is visible enough to be named in a caption.
    pub fn shows_pattern(self) -> bool {
        matches!(self, Kind::Ball | Kind::Cup | Kind::Umbrella)
    }
}

/// What a point of an object is made of; each part has its own colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The object's colour, with its pattern.
    Main,
    /// The object's second colour (roof, sail, flower centre, bottle cap...).
    Second,
    Dark,
    Light,
    Glass,
    Lamp,
    Leaf,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pattern {
    Plain,
    Stripes { freq: f32, angle: f32 },
    Dots { freq: f32 },
    Checks { freq: f32 },
}

impl Pattern {
    /// True where the pattern shows the second colour.
    pub fn second_at(self, u: f32, v: f32) -> bool {
        match self {
            Pattern::Plain => false,
            Pattern::Stripes { freq, angle } => {
                ((u * angle.cos() + v * angle.sin()) * freq).sin() > 0.0
            }
            Pattern::Dots { freq } => {
                let (fu, fv) = ((u * freq).rem_euclid(1.0), (v * freq).rem_euclid(1.0));
                (fu - 0.5).powi(2) + (fv - 0.5).powi(2) < 0.06
            }
            Pattern::Checks { freq } => {
                ((u * freq).floor() + (v * freq).floor()).rem_euclid(2.0) > 0.5
            }
        }
    }

    /// The caption adjective, if the pattern has one.
    pub fn adjective(self) -> Option<&'static str> {
        match self {
            Pattern::Plain => None,
            Pattern::Stripes { .. } => Some("striped"),
            Pattern::Dots { .. } => Some("spotted"),
            Pattern::Checks { .. } => Some("checkered"),
        }
    }
}

fn circle(u: f32, v: f32, cu: f32, cv: f32, r: f32) -> bool {
    (u - cu).powi(2) + (v - cv).powi(2) <= r * r
}

fn ellipse(u: f32, v: f32, cu: f32, cv: f32, ru: f32, rv: f32, angle: f32) -> bool {
    let (du, dv) = (u - cu, v - cv);
    let (c, s) = (angle.cos(), angle.sin());
    let (a, b) = (du * c + dv * s, -du * s + dv * c);
    (a / ru).powi(2) + (b / rv).powi(2) <= 1.0
}

fn rect(u: f32, v: f32, u0: f32, v0: f32, u1: f32, v1: f32) -> bool {
    u >= u0 && u <= u1 && v >= v0 && v <= v1
}

fn polygon(u: f32, v: f32, points: &[(f32, f32)]) -> bool {
    let mut inside = false;
    let mut j = points.len() - 1;
    for i in 0..points.len() {
        let (ui, vi) = points[i];
        let (uj, vj) = points[j];
        if (vi > v) != (vj > v) && u < (uj - ui) * (v - vi) / (vj - vi) + ui {
            inside = !inside;
        }
        j = i;
    }
    inside
}

fn segment(u: f32, v: f32, a: (f32, f32), b: (f32, f32), half_width: f32) -> bool {
    let (du, dv) = (b.0 - a.0, b.1 - a.1);
    let t = (((u - a.0) * du + (v - a.1) * dv) / (du * du + dv * dv)).clamp(0.0, 1.0);
    let (pu, pv) = (a.0 + t * du - u, a.1 + t * dv - v);
    pu * pu + pv * pv <= half_width * half_width
}

/// The part of `kind` at unit-frame point (u, v), or None outside the object. `p` holds the
/// object's own random choices in [0, 1) (petal count, clock hands, saucer...).
pub fn part_at(kind: Kind, p: [f32; 4], u: f32, v: f32) -> Option<Part> {
    match kind {
        Kind::Ball => circle(u, v, 0.0, 0.0, 1.0).then_some(Part::Main),
        Kind::Kite => kite_part(u, v),
        Kind::House => house_part(p, u, v),
        Kind::Umbrella => umbrella_part(p, u, v),
        Kind::Clock => clock_part(p, u, v),
        Kind::Cup => cup_part(p, u, v),
        Kind::Bottle => bottle_part(p, u, v),
        Kind::Boat => boat_part(p, u, v),
        Kind::Car => car_part(u, v),
        Kind::Flower => flower_part(p, u, v),
    }
}

fn kite_part(u: f32, v: f32) -> Option<Part> {
    let tail_u = 0.12 * ((v - 0.45) * 14.0).sin();
    if v > 0.45 && v < 1.0 {
        if ((v - 0.62) * 30.0).rem_euclid(2.0 * PI) < 0.9 && (u - tail_u).abs() < 0.1 {
            return Some(Part::Second);
        }
        if (u - tail_u).abs() < 0.035 {
            return Some(Part::Dark);
        }
    }
    let diamond = [(0.0, -1.0), (0.55, -0.35), (0.0, 0.45), (-0.55, -0.35)];
    if !polygon(u, v, &diamond) {
        return None;
    }
    if segment(u, v, (0.0, -1.0), (0.0, 0.45), 0.025)
        || segment(u, v, (-0.55, -0.35), (0.55, -0.35), 0.025)
    {
        return Some(Part::Dark);
    }
    Some(if (u > 0.0) != (v > -0.35) {
        Part::Second
    } else {
        Part::Main
    })
}

fn house_part(p: [f32; 4], u: f32, v: f32) -> Option<Part> {
    if polygon(u, v, &[(-1.0, -0.15), (1.0, -0.15), (0.0, -0.95)]) {
        return Some(Part::Second);
    }
    if p[0] > 0.4 && rect(u, v, 0.42, -0.85, 0.62, -0.3) {
        return Some(Part::Second);
    }
    if !rect(u, v, -0.8, -0.15, 0.8, 1.0) {
        return None;
    }
    let door_u = -0.45 + 0.9 * p[1];
    if rect(u, v, door_u - 0.14, 0.45, door_u + 0.14, 1.0) {
        return Some(Part::Dark);
    }
    for wu in [-0.5, 0.5] {
        if (wu - door_u).abs() > 0.35 && rect(u, v, wu - 0.17, 0.05, wu + 0.17, 0.35) {
            let frame = (u - wu).abs() < 0.02 || (v - 0.2).abs() < 0.02;
            return Some(if frame { Part::Light } else { Part::Glass });
        }
    }
    Some(Part::Main)
}

fn umbrella_part(p: [f32; 4], u: f32, v: f32) -> Option<Part> {
    if segment(u, v, (0.0, -0.05), (0.0, 0.75), 0.04) || rect(u, v, -0.03, -0.82, 0.03, -0.68) {
        return Some(Part::Dark);
    }
    let (r_in, r_out) = (0.11, 0.19);
    let d2 = (u - 0.15).powi(2) + (v - 0.75).powi(2);
    if v >= 0.75 && d2 >= r_in * r_in && d2 <= r_out * r_out {
        return Some(Part::Dark);
    }
    let scallop = 0.12 * (1.0 - (u * 2.5 * PI).cos().abs());
    if ellipse(u, v, 0.0, 0.0, 1.0, 0.7, 0.0) && v <= -scallop {
        // Alternating panels, like the ribs of a real umbrella.
        let angle = (-v).atan2(u);
        let panel = (angle / (PI / 6.0)).floor() as i32;
        return Some(if p[0] < 0.5 && panel % 2 == 1 {
            Part::Second
        } else {
            Part::Main
        });
    }
    None
}

fn clock_part(p: [f32; 4], u: f32, v: f32) -> Option<Part> {
    let r2 = u * u + v * v;
    if r2 > 1.0 {
        return None;
    }
    if r2 > 0.86 * 0.86 {
        return Some(Part::Main);
    }
    let hour = p[0] * 2.0 * PI;
    let minute = p[1] * 2.0 * PI;
    if r2 < 0.07 * 0.07
        || segment(
            u,
            v,
            (0.0, 0.0),
            (0.45 * hour.sin(), -0.45 * hour.cos()),
            0.06,
        )
        || segment(
            u,
            v,
            (0.0, 0.0),
            (0.7 * minute.sin(), -0.7 * minute.cos()),
            0.035,
        )
    {
        return Some(Part::Dark);
    }
    for k in 0..12 {
        let a = k as f32 * PI / 6.0;
        let (s, c) = a.sin_cos();
        if segment(u, v, (0.66 * s, -0.66 * c), (0.78 * s, -0.78 * c), 0.035) {
            return Some(Part::Dark);
        }
    }
    Some(Part::Light)
}

fn cup_part(p: [f32; 4], u: f32, v: f32) -> Option<Part> {
    if p[0] > 0.6 && ellipse(u, v, -0.05, 0.86, 0.95, 0.12, 0.0) {
        return Some(Part::Second);
    }
    if ellipse(u, v, -0.05, -0.72, 0.56, 0.1, 0.0) {
        return Some(Part::Dark);
    }
    if polygon(
        u,
        v,
        &[(-0.65, -0.75), (0.55, -0.75), (0.45, 0.85), (-0.55, 0.85)],
    ) {
        return Some(Part::Main);
    }
    let d2 = (u - 0.55).powi(2) + v.powi(2);
    (u > 0.5 && (0.2 * 0.2..=0.37 * 0.37).contains(&d2)).then_some(Part::Main)
}

fn bottle_part(p: [f32; 4], u: f32, v: f32) -> Option<Part> {
    if rect(u, v, -0.15, -1.0, 0.15, -0.84) {
        return Some(Part::Second);
    }
    let body = rect(u, v, -0.12, -0.84, 0.12, -0.4)
        || ellipse(u, v, 0.0, -0.2, 0.38, 0.32, 0.0) && v <= -0.2
        || rect(u, v, -0.38, -0.2, 0.38, 1.0);
    if !body {
        return None;
    }
    if p[0] < 0.7 && rect(u, v, -0.38, 0.15, 0.38, 0.6) {
        return Some(Part::Light);
    }
    Some(if (-0.3..-0.22).contains(&u) && v > -0.3 {
        Part::Glass
    } else {
        Part::Main
    })
}

fn boat_part(p: [f32; 4], u: f32, v: f32) -> Option<Part> {
    if polygon(u, v, &[(-1.0, 0.35), (1.0, 0.35), (0.7, 0.8), (-0.65, 0.8)]) {
        return Some(if (v - 0.45).abs() < 0.03 {
            Part::Light
        } else {
            Part::Main
        });
    }
    if segment(u, v, (0.0, -0.95), (0.0, 0.35), 0.03) {
        return Some(Part::Dark);
    }
    if polygon(u, v, &[(0.06, -0.9), (0.06, 0.28), (0.75, 0.28)])
        || (p[0] > 0.35 && polygon(u, v, &[(-0.06, -0.75), (-0.06, 0.28), (-0.55, 0.28)]))
    {
        return Some(Part::Second);
    }
    None
}

fn car_part(u: f32, v: f32) -> Option<Part> {
    for wu in [-0.58, 0.58] {
        if circle(u, v, wu, 0.42, 0.24) {
            return Some(if circle(u, v, wu, 0.42, 0.1) {
                Part::Light
            } else {
                Part::Dark
            });
        }
    }
    if rect(u, v, 0.9, -0.02, 1.0, 0.12) {
        return Some(Part::Lamp);
    }
    if polygon(
        u,
        v,
        &[
            (-0.45, -0.14),
            (-0.3, -0.46),
            (-0.03, -0.46),
            (-0.03, -0.14),
        ],
    ) || polygon(
        u,
        v,
        &[(0.03, -0.14), (0.03, -0.46), (0.3, -0.46), (0.48, -0.14)],
    ) {
        return Some(Part::Glass);
    }
    let body = polygon(
        u,
        v,
        &[(-0.55, -0.08), (-0.36, -0.55), (0.36, -0.55), (0.6, -0.08)],
    ) || ellipse(u, v, 0.0, 0.17, 1.0, 0.28, 0.0) && rect(u, v, -1.0, -0.1, 1.0, 0.42);
    body.then_some(Part::Main)
}

fn flower_part(p: [f32; 4], u: f32, v: f32) -> Option<Part> {
    // Petals reach 0.34 + 0.3 beyond the centre: the top petal touches the frame.
    let (cu, cv) = (0.0, -0.36);
    if circle(u, v, cu, cv, 0.17) {
        return Some(Part::Second);
    }
    let petals = 5 + (p[0] * 4.0) as usize;
    let turn = p[1] * PI;
    for k in 0..petals {
        let a = turn + k as f32 * 2.0 * PI / petals as f32;
        let (s, c) = a.sin_cos();
        if ellipse(u, v, cu + 0.34 * c, cv + 0.34 * s, 0.3, 0.14, a) {
            return Some(Part::Main);
        }
    }
    if segment(u, v, (0.0, cv), (0.0, 0.95), 0.05)
        || ellipse(u, v, 0.2, 0.55, 0.24, 0.08, -0.5)
        || (p[2] > 0.5 && ellipse(u, v, -0.2, 0.35, 0.22, 0.08, 0.5))
    {
        return Some(Part::Leaf);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_fills_part_of_its_frame_and_stays_inside_it() {
        for kind in Kind::ALL {
            let n = 200;
            let mut inside = 0;
            for i in 0..n {
                for j in 0..n {
                    let (u, v) = (
                        -1.2 + 2.4 * (i as f32 + 0.5) / n as f32,
                        -1.2 + 2.4 * (j as f32 + 0.5) / n as f32,
                    );
                    if part_at(kind, [0.5, 0.3, 0.7, 0.1], u, v).is_some() {
                        inside += 1;
                        assert!(u.abs() <= 1.0 && v.abs() <= 1.0, "{kind:?} at ({u}, {v})");
                    }
                }
            }
            let share = inside as f32 / (n * n) as f32 * 2.4 * 2.4 / 4.0;
            assert!(share > 0.15, "{kind:?} covers only {share} of its frame");
        }
    }
}
