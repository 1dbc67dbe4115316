use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use crate::error::OvsegError;

/// The reference's word lists, kept verbatim (`assets/vocab.json`): prompt templates, ImageNet
/// classes, the masked-entity vocabulary and the benchmark class lists.
#[derive(Debug, Clone, Deserialize)]
pub struct Vocab {
    pub templates: BTreeMap<String, Vec<String>>,
    pub imagenet_classes: Vec<String>,
    pub entity_words: Vec<String>,
    pub entity_synonyms: BTreeMap<String, String>,
    pub entity_classes: Vec<String>,
    pub datasets: BTreeMap<String, DatasetVocab>,
}

/// A benchmark's name as people know it, classes (background first where it has one) and
/// background threshold.
#[derive(Debug, Clone, Deserialize)]
pub struct DatasetVocab {
    pub title: String,
    pub classes: Vec<String>,
    pub with_background: bool,
    pub bg_thresh: Option<f64>,
    pub palette: Option<Vec<[u8; 3]>>,
}

impl Vocab {
    /// The embedded copy, parsed once.
    pub fn get() -> &'static Vocab {
        static VOCAB: OnceLock<Vocab> = OnceLock::new();
        VOCAB.get_or_init(|| {
            serde_json::from_str(include_str!("../../assets/vocab.json"))
                .expect("embedded vocab.json is valid")
        })
    }

    pub fn dataset(&self, name: &str) -> Result<&DatasetVocab, OvsegError> {
        self.datasets.get(name).ok_or_else(|| {
            let known: Vec<_> = self.datasets.keys().cloned().collect();
            OvsegError::Input(format!(
                "unknown dataset '{name}' (known: {})",
                known.join(", ")
            ))
        })
    }
}

impl DatasetVocab {
    /// Foreground class names (background removed).
    pub fn foreground(&self) -> &[String] {
        if self.with_background {
            &self.classes[1..]
        } else {
            &self.classes
        }
    }
}

/// Which prompt templates to ensemble per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TemplateSet {
    /// "a photo of a {}."
    #[default]
    Simple,
    /// 7 templates.
    Subset,
    /// The 80 ImageNet templates.
    Full,
    /// The class name alone.
    Identity,
}

impl TemplateSet {
    pub const ALL: [Self; 4] = [Self::Simple, Self::Subset, Self::Full, Self::Identity];

    /// The set's name on the command line, in share links and in `vocab.json`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Simple => "simple",
            Self::Subset => "subset",
            Self::Full => "full",
            Self::Identity => "identity",
        }
    }

    pub fn parse(name: &str) -> Result<Self, OvsegError> {
        Self::ALL
            .into_iter()
            .find(|set| set.name() == name)
            .ok_or_else(|| {
                let known: Vec<_> = Self::ALL.iter().map(|set| set.name()).collect();
                OvsegError::Input(format!(
                    "unknown template set '{name}' (known: {})",
                    known.join(", ")
                ))
            })
    }

    pub fn templates(self) -> &'static [String] {
        &Vocab::get().templates[self.name()]
    }

    /// Every class through every template, class-major: [class0 x T, class1 x T, ...].
    pub fn prompts(self, classes: &[String]) -> Vec<String> {
        classes
            .iter()
            .flat_map(|c| self.templates().iter().map(move |t| t.replace("{}", c)))
            .collect()
    }
}

/// `--template`, with the names of [`TemplateSet::name`].
#[cfg(feature = "clap")]
impl clap::ValueEnum for TemplateSet {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocab_is_complete() {
        let v = Vocab::get();
        assert_eq!(v.templates["full"].len(), 80);
        assert_eq!(v.templates["subset"].len(), 7);
        assert_eq!(v.imagenet_classes.len(), 1000);
        assert_eq!(v.entity_classes.len(), 73);
        let voc = v.dataset("voc").unwrap();
        assert_eq!(voc.foreground().len(), 20);
        assert_eq!(voc.bg_thresh, Some(0.95));
        assert_eq!(v.dataset("ade20k").unwrap().foreground().len(), 150);
    }

    #[test]
    fn prompts_fill_templates() {
        let p = TemplateSet::Simple.prompts(&["cat".into(), "sofa".into()]);
        assert_eq!(p, vec!["a photo of a cat.", "a photo of a sofa."]);
        assert_eq!(TemplateSet::Full.prompts(&["cat".into()]).len(), 80);
        assert!(TemplateSet::parse("fancy").is_err());
    }
}
