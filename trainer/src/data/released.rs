//! The original project's released cross-image sampling files, read as an alternative to the
//! partners `ovseg index` computes from captions (its README: "We offer the pre-processed
//! class_label.json and sample_list.json"):
//! - `class_label.json`: one JSON object, picture file name (the last path component) -> its
//!   entity class as an index into the 73 entity classes, written as a string ("48") or a number;
//! - `sample_list.json`: one JSON object, class index -> the candidate partners showing that
//!   class, each `[filename, caption]`.
//!
//! The reference draws a picture's partner uniformly from its class's list (its own picture may
//! be drawn) and asks for the entity "A photo of CLASS"; `feed_meta` does the same with these.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use ovseg_model::segmentation::Vocab;

/// Partners from the released files, stored in the entity index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleasedPartners {
    /// The files they came from, as given.
    pub class_labels: String,
    pub sample_list: String,
    /// Entity class -> partner file names (relative to the pictures folder).
    pub partners: BTreeMap<String, Vec<String>>,
    /// Indexed pairs whose picture has no class label: they keep their caption's entities.
    pub unlabelled: usize,
}

/// A class index as the released files write it: a string ("48") or a number.
#[derive(Deserialize)]
#[serde(untagged)]
enum ClassIndex {
    Text(String),
    Number(u64),
}

/// The entity class an index names, or an error naming the file and the key.
fn class_name(index: &ClassIndex, file: &Path, key: &str) -> Result<String> {
    let classes = &Vocab::get().entity_classes;
    let parsed = match index {
        ClassIndex::Text(t) => t.trim().parse::<usize>().ok(),
        ClassIndex::Number(n) => usize::try_from(*n).ok(),
    };
    match parsed.and_then(|i| classes.get(i)) {
        Some(class) => Ok(class.clone()),
        None => {
            let shown = match index {
                ClassIndex::Text(t) => format!("\"{t}\""),
                ClassIndex::Number(n) => n.to_string(),
            };
            bail!(
                "{}: '{key}' has class {shown}, not an index below {}",
                file.display(),
                classes.len()
            )
        }
    }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path, what: &str) -> Result<T> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open {what} {}", path.display()))?;
    serde_json::from_reader(std::io::BufReader::new(file))
        .with_context(|| format!("{} is not a {what}", path.display()))
}

/// `class_label.json`: picture file name -> entity class.
pub fn read_class_labels(path: &Path) -> Result<HashMap<String, String>> {
    let raw: HashMap<String, ClassIndex> = read_json(path, "class label file")?;
    raw.iter()
        .map(|(name, index)| Ok((name.clone(), class_name(index, path, name)?)))
        .collect()
}

/// `sample_list.json`: entity class -> partner file names.
pub fn read_sample_list(path: &Path) -> Result<BTreeMap<String, Vec<String>>> {
    let raw: HashMap<String, Vec<Vec<String>>> = read_json(path, "sample list")?;
    let mut partners: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (key, entries) in raw {
        let class = class_name(&ClassIndex::Text(key.clone()), path, &key)?;
        let list = partners.entry(class).or_default();
        for (i, entry) in entries.into_iter().enumerate() {
            match <[String; 2]>::try_from(entry) {
                Ok([filename, _caption]) => list.push(filename),
                Err(entry) => bail!(
                    "{}: entry {i} of class '{key}' has {} fields, not [filename, caption]",
                    path.display(),
                    entry.len()
                ),
            }
        }
    }
    Ok(partners)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn reads_both_files_in_the_released_shape() {
        let dir = std::env::temp_dir().join(format!("ovseg-released-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // Index 48 is "cat" and 49 "dog" in the reference's TOP_UNIQUE_CLASSES.
        let labels = write(&dir, "class_label.json", r#"{"a.jpg": "48", "b.jpg": 49}"#);
        let labels = read_class_labels(&labels).unwrap();
        assert_eq!(labels["a.jpg"], "cat");
        assert_eq!(labels["b.jpg"], "dog");
        let list = write(
            &dir,
            "sample_list.json",
            r#"{"48": [["a.jpg", "a cat"], ["c.jpg", "cats"]], "49": []}"#,
        );
        let list = read_sample_list(&list).unwrap();
        assert_eq!(list["cat"], vec!["a.jpg", "c.jpg"]);
        assert!(list["dog"].is_empty());

        for (name, text, want) in [
            ("l1.json", r#"{"a.jpg": "73"}"#, "'a.jpg' has class \"73\""),
            ("l2.json", r#"{"a.jpg": "cat"}"#, "not an index below 73"),
            ("l3.json", r#"["a.jpg"]"#, "is not a class label file"),
        ] {
            let err = format!(
                "{:#}",
                read_class_labels(&write(&dir, name, text)).unwrap_err()
            );
            assert!(err.contains(want) && err.contains(name), "{err}");
        }
        for (name, text, want) in [
            (
                "s1.json",
                r#"{"48": [["a.jpg"]]}"#,
                "entry 0 of class '48' has 1 fields",
            ),
            ("s2.json", r#"{"x": []}"#, "'x' has class \"x\""),
            ("s3.json", r#"{"48": "a.jpg"}"#, "is not a sample list"),
        ] {
            let err = format!(
                "{:#}",
                read_sample_list(&write(&dir, name, text)).unwrap_err()
            );
            assert!(err.contains(want) && err.contains(name), "{err}");
        }
        let err = format!(
            "{:#}",
            read_sample_list(&dir.join("none.json")).unwrap_err()
        );
        assert!(err.contains("cannot open sample list") && err.contains("none.json"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
