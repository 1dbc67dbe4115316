//! Natural, varied captions that name every kind of object in the picture with entity
//! vocabulary words (sometimes a synonym), with counts, colours, patterns, where the objects are
//! relative to each other and what they stand on. Every other word is chosen so that it is not
//! in the entity vocabulary (no "orange", "light", "glass", "couple"...).

use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;

use super::scene::{Object, Scene};
use super::shapes::Kind;

struct Group<'a> {
    kind: Kind,
    objects: Vec<&'a Object>,
}

fn count_word(rng: &mut impl Rng, n: usize) -> &'static str {
    match n {
        2 if rng.random_bool(0.15) => "a pair of",
        _ if rng.random_bool(0.12) => "some",
        2 => "two",
        3 => "three",
        _ => "four",
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// "a red striped ball", "two buildings", "some yellow flowers".
fn noun_phrase(rng: &mut impl Rng, group: &Group, detail: f64) -> String {
    let n = group.objects.len();
    let noun = *group.kind.caption_words().choose(rng).expect("words");
    let mut words: Vec<&str> = Vec::new();
    let first = group.objects[0];
    if group.objects.iter().all(|o| o.colour == first.colour) && rng.random_bool(0.65 * detail) {
        words.push(first.colour);
    }
    if n == 1 && group.kind.shows_pattern() && rng.random_bool(0.6 * detail) {
        if let Some(adjective) = first.pattern.adjective() {
            words.push(adjective);
        }
    }
    let noun = if n == 1 {
        noun.to_string()
    } else {
        format!("{noun}s")
    };
    words.push(&noun);
    let body = words.join(" ");
    if n == 1 {
        let lead = if rng.random_bool(0.1) {
            "one"
        } else {
            article(&body)
        };
        format!("{lead} {body}")
    } else {
        format!("{} {body}", count_word(rng, n))
    }
}

/// Where single object `a` is relative to single object `b`.
fn relation(rng: &mut impl Rng, scene: &Scene, a: &Object, b: &Object) -> &'static str {
    let pa = scene.objects.iter().position(|o| std::ptr::eq(o, a));
    let pb = scene.objects.iter().position(|o| std::ptr::eq(o, b));
    let reach = (a.scale + b.scale) * 0.8;
    let (dx, dy) = (a.cx - b.cx, a.cy - b.cy);
    let overlap = dx.abs() < reach && dy.abs() < reach;
    let pick = |rng: &mut dyn rand::RngCore, options: &[&'static str]| {
        *options.choose(rng).expect("options")
    };
    if overlap && pa > pb {
        pick(rng, &["in front of", "partly hiding"])
    } else if overlap && pa < pb {
        pick(rng, &["behind", "partly hidden behind"])
    } else if dy < -(scene.size as f32) * 0.15 && dy.abs() > dx.abs() * 0.6 {
        pick(rng, &["above", "over"])
    } else if dy > (scene.size as f32) * 0.15 && dy.abs() > dx.abs() * 0.6 {
        pick(rng, &["below", "under"])
    } else if dx < 0.0 {
        pick(rng, &["to the left of", "next to", "beside"])
    } else {
        pick(rng, &["to the right of", "next to", "beside"])
    }
}

fn join_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// The scene's objects, one group per kind, in drawing order of each kind's first object.
fn groups_by_kind(scene: &Scene) -> Vec<Group<'_>> {
    let mut groups: Vec<Group> = Vec::new();
    for o in &scene.objects {
        match groups.iter_mut().find(|g| g.kind == o.kind) {
            Some(g) => g.objects.push(o),
            None => groups.push(Group {
                kind: o.kind,
                objects: vec![o],
            }),
        }
    }
    groups
}

/// The caption's sentence around the noun `phrases` of `groups` and the `place` phrase.
fn sentence(
    rng: &mut impl Rng,
    scene: &Scene,
    groups: &[Group],
    phrases: &[String],
    place: &str,
) -> String {
    let plural = groups.len() > 1 || groups[0].objects.len() > 1;
    let singles = groups.len() >= 2 && groups[..2].iter().all(|g| g.objects.len() == 1);

    match groups.len() {
        1 => {
            let a = &phrases[0];
            let there = if plural { "there are" } else { "there is" };
            match rng.random_range(0..6) {
                0 => format!("{a}{place}"),
                1 => format!("a photo of {a}{place}"),
                2 => format!("{there} {a}{place}"),
                3 => format!("a picture showing {a}{place}"),
                4 => format!("an image of {a}{place}"),
                _ => format!("{a}{place}, seen up close"),
            }
        }
        2 => {
            let (a, b) = (&phrases[0], &phrases[1]);
            let rel = if singles {
                relation(rng, scene, groups[0].objects[0], groups[1].objects[0])
            } else {
                "and"
            };
            match rng.random_range(0..5) {
                0 | 1 => format!("{a} {rel} {b}{place}"),
                2 => format!("a photo of {a} and {b}{place}"),
                3 => format!("{a} with {b}{place}"),
                _ => format!("there are {a} and {b}{place}"),
            }
        }
        _ => {
            let list = join_list(phrases);
            match rng.random_range(0..4) {
                0 if singles => {
                    let rel = relation(rng, scene, groups[0].objects[0], groups[1].objects[0]);
                    let rest = join_list(&phrases[2..]);
                    format!(
                        "{} {rel} {}{place}, with {rest} nearby",
                        phrases[0], phrases[1]
                    )
                }
                0 | 1 => format!("a scene with {list}{place}"),
                2 => format!("a photo of {list}{place}"),
                _ => format!("{list}{place}"),
            }
        }
    }
}

/// `detail` (0-1) scales how often colours, patterns and the place are said: 1 for the
/// world's usual captions; lower leaves more captions naming only the objects, so that matching
/// a caption takes knowing the objects rather than their colours and backdrop. `place`, when
/// given, is how often the place is said instead (0.7 * `detail` otherwise).
pub fn caption(rng: &mut impl Rng, scene: &Scene, detail: f64, place: Option<f64>) -> String {
    let mut groups = groups_by_kind(scene);
    groups.shuffle(rng);
    let phrases: Vec<String> = groups.iter().map(|g| noun_phrase(rng, g, detail)).collect();
    // The place is what the first-named object stands on or in front of (kites in the sky,
    // boats on the water, when the picture has them there).
    let place = if rng.random_bool(place.unwrap_or(0.7 * detail)) {
        let first = groups[0].objects[0];
        let base = (first.cy + first.scale * 0.6) / scene.size as f32;
        let surface = scene
            .backdrop
            .surface_at(first.cx / scene.size as f32, base.min(1.0));
        format!(" {}", surface.phrases().choose(rng).expect("phrases"))
    } else {
        String::new()
    };
    let mut text = sentence(rng, scene, &groups, &phrases, &place);
    if rng.random_bool(0.5) {
        let mut chars = text.chars();
        if let Some(first) = chars.next() {
            text = first.to_uppercase().chain(chars).collect();
        }
    }
    if rng.random_bool(0.3) {
        text.push('.');
    }
    text
}
