//! What the loader left out and why: bad meta lines, empty or entity-less captions, pictures
//! that cannot be decoded. Training goes on; these counts say how much data was lost.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// What building the entity index left out, by cause (stored in the index).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// Lines that are not a JSON object with a filename and a caption...
    pub invalid_lines: usize,
    /// ...and the first of them as (line number, reason).
    pub invalid_examples: Vec<(usize, String)>,
    pub empty_caption: usize,
    pub no_entity: usize,
    /// Shards only: members without a picture or a caption beside them.
    #[serde(default)]
    pub unpaired: usize,
    /// Shards only: shards that could not be read to the end (truncated, a corrupt header).
    #[serde(default)]
    pub damaged_shards: usize,
}

/// At most this many unreadable pictures are listed by name (all are counted).
const LISTED_IMAGES: usize = 100;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipCounts {
    /// Meta lines that are not a JSON object with a filename and a caption...
    pub invalid_lines: usize,
    /// ...and the first of their (1-based) line numbers.
    pub invalid_line_numbers: Vec<usize>,
    pub empty_captions: usize,
    /// Captions that name no entity of the vocabulary.
    pub no_entity: usize,
    /// Shard members without a picture or without a caption beside them.
    pub unpaired: usize,
    /// Shards that could not be read to the end.
    pub unreadable_shards: usize,
    /// Pictures that cannot be opened or decoded, each counted once however often it is met...
    pub unreadable_images: usize,
    /// ...and the first of them as "name: reason".
    pub unreadable_examples: Vec<String>,
}

impl fmt::Display for SkipCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plural =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        let mut parts = Vec::new();
        let mut lines = plural(
            self.invalid_lines,
            "invalid JSON line",
            "invalid JSON lines",
        );
        if !self.invalid_line_numbers.is_empty() {
            let shown: Vec<String> = self
                .invalid_line_numbers
                .iter()
                .take(5)
                .map(|n| n.to_string())
                .collect();
            let more = if self.invalid_lines > shown.len() {
                ", ..."
            } else {
                ""
            };
            lines += &format!(" (line {}{more})", shown.join(", "));
        }
        parts.push(lines);
        parts.push(plural(
            self.empty_captions,
            "empty caption",
            "empty captions",
        ));
        parts.push(plural(
            self.no_entity,
            "caption without an entity",
            "captions without an entity",
        ));
        if self.unpaired > 0 {
            parts.push(plural(
                self.unpaired,
                "unpaired shard member",
                "unpaired shard members",
            ));
        }
        if self.unreadable_shards > 0 {
            parts.push(plural(
                self.unreadable_shards,
                "unreadable shard",
                "unreadable shards",
            ));
        }
        let mut images = plural(
            self.unreadable_images,
            "unreadable image",
            "unreadable images",
        );
        if let Some(first) = self.unreadable_examples.first() {
            let more = if self.unreadable_images > 1 {
                ", ..."
            } else {
                ""
            };
            images += &format!(" ({first}{more})");
        }
        parts.push(images);
        write!(f, "skipped {}", parts.join(", "))
    }
}

/// Counts shared by the loader's threads.
#[derive(Default)]
pub(crate) struct SkipLog {
    /// From the meta-file's index (fixed) or the current pass over the shards.
    text: Mutex<SkipCounts>,
    /// Unreadable picture name -> reason.
    images: Mutex<BTreeMap<String, String>>,
}

impl SkipLog {
    pub fn from_index(skipped: &Skipped) -> Self {
        let text = SkipCounts {
            invalid_lines: skipped.invalid_lines,
            invalid_line_numbers: skipped.invalid_examples.iter().map(|(n, _)| *n).collect(),
            empty_captions: skipped.empty_caption,
            no_entity: skipped.no_entity,
            ..SkipCounts::default()
        };
        Self {
            text: Mutex::new(text),
            images: Mutex::default(),
        }
    }

    pub fn is_unreadable(&self, name: &str) -> bool {
        self.images.lock().expect("skip log").contains_key(name)
    }

    /// Records an unreadable picture; the first time a name is seen it is logged.
    pub fn unreadable(&self, name: &str, reason: &anyhow::Error) {
        let mut images = self.images.lock().expect("skip log");
        if !images.contains_key(name) {
            tracing::warn!("skipping unreadable image {name}: {reason:#}");
            images.insert(name.to_string(), format!("{reason:#}"));
        }
    }

    /// Replaces the caption-level counts (a new pass over the shards starts).
    pub fn set_text(&self, counts: SkipCounts) {
        *self.text.lock().expect("skip log") = counts;
    }

    pub fn update_text(&self, f: impl FnOnce(&mut SkipCounts)) {
        f(&mut self.text.lock().expect("skip log"));
    }

    pub fn counts(&self) -> SkipCounts {
        let mut counts = self.text.lock().expect("skip log").clone();
        let images = self.images.lock().expect("skip log");
        counts.unreadable_images = images.len();
        counts.unreadable_examples = images
            .iter()
            .take(LISTED_IMAGES)
            .map(|(name, reason)| format!("{name}: {reason}"))
            .collect();
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_report() {
        let counts = SkipCounts {
            invalid_lines: 2,
            invalid_line_numbers: vec![3, 9],
            empty_captions: 1,
            no_entity: 4,
            unreadable_images: 1,
            unreadable_examples: vec!["bad.jpg: corrupt image".into()],
            ..SkipCounts::default()
        };
        assert_eq!(
            counts.to_string(),
            "skipped 2 invalid JSON lines (line 3, 9), 1 empty caption, 4 captions without an \
             entity, 1 unreadable image (bad.jpg: corrupt image)"
        );
        let log = SkipLog::default();
        let reason = anyhow::anyhow!("corrupt image x.jpg");
        log.unreadable("x.jpg", &reason);
        log.unreadable("x.jpg", &reason);
        assert!(log.is_unreadable("x.jpg"));
        assert_eq!(log.counts().unreadable_images, 1);
    }
}
