//! Caption entities (docs/architecture.md, "Training"): words of the 100-word entity vocabulary,
//! found after stripping possessives, lower-casing and reducing plurals to the vocabulary's
//! singular, then mapped through the synonyms onto the 73 entity classes. From them: the question
//! (entity words replaced by [`MASK_PLACEHOLDER`]) and the answer (a template prefix and the
//! entities).

use std::collections::HashMap;

use crate::segmentation::Vocab;

/// Where a question hides an entity. The reference writes this literal for every text encoder;
/// `TextTokenizer::encode_questions` puts the tokenizer's own mask token in its place (RoBERTa's
/// `<mask>`), as a RoBERTa port must.
pub const MASK_PLACEHOLDER: &str = "[MASK]";

pub struct EntityVocab {
    /// Lower-cased vocabulary word -> entity class.
    class_of: HashMap<String, String>,
}

/// A caption's entities and the texts made from them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptionEntities {
    /// Unique entity classes, in order of first appearance.
    pub classes: Vec<String>,
    /// The caption with every entity word replaced by [`MASK_PLACEHOLDER`].
    pub question: String,
}

impl Default for EntityVocab {
    fn default() -> Self {
        let vocab = Vocab::get();
        let mut class_of = HashMap::new();
        for word in &vocab.entity_words {
            let class = vocab
                .entity_synonyms
                .get(word)
                .cloned()
                .unwrap_or_else(|| word.clone());
            class_of.insert(word.to_lowercase(), class.to_lowercase());
        }
        for (word, class) in &vocab.entity_synonyms {
            class_of.insert(word.to_lowercase(), class.to_lowercase());
        }
        Self { class_of }
    }
}

impl EntityVocab {
    /// The entity class a caption word stands for, if any ("Cats" -> cat, "man's" -> people,
    /// "knives" -> knife).
    pub fn class_of(&self, word: &str) -> Option<&str> {
        let w = word.to_lowercase();
        let w = w
            .strip_suffix("'s")
            .or_else(|| w.strip_suffix("\u{2019}s"))
            .or_else(|| w.strip_suffix('\''))
            .unwrap_or(&w);
        if let Some(c) = self.class_of.get(w) {
            return Some(c);
        }
        singular_candidates(w)
            .into_iter()
            .find_map(|s| self.class_of.get(&s))
            .map(String::as_str)
    }

    pub fn extract(&self, caption: &str) -> CaptionEntities {
        let mut classes: Vec<String> = Vec::new();
        let mut question = String::with_capacity(caption.len());
        for piece in split_words(caption) {
            match piece {
                Piece::Word(w) => match self.class_of(w) {
                    Some(class) => {
                        if !classes.iter().any(|c| c == class) {
                            classes.push(class.to_string());
                        }
                        question.push_str(MASK_PLACEHOLDER);
                    }
                    None => question.push_str(w),
                },
                Piece::Other(o) => question.push_str(o),
            }
        }
        CaptionEntities { classes, question }
    }
}

/// The answer: a template's text before "{}" and the entities joined with " and ".
pub fn answer(template: &str, classes: &[String]) -> String {
    let prefix = template.split("{}").next().unwrap_or("");
    format!("{prefix}{}", classes.join(" and "))
}

/// Cross-image text for a shared entity.
pub fn cross_entity_text(class: &str) -> String {
    format!("A photo of {class}")
}

fn singular_candidates(w: &str) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(stem) = w.strip_suffix("ies") {
        out.push(format!("{stem}y"));
    }
    if let Some(stem) = w.strip_suffix("ves") {
        out.push(format!("{stem}fe"));
        out.push(format!("{stem}f"));
    }
    if let Some(stem) = w.strip_suffix("es") {
        out.push(stem.to_string());
    }
    if let Some(stem) = w.strip_suffix('s') {
        out.push(stem.to_string());
    }
    out
}

enum Piece<'a> {
    Word(&'a str),
    Other(&'a str),
}

/// Words (letters, digits, inner hyphens and apostrophes: "T-shirt", "man's") and the text
/// between them, which is kept as it is.
fn split_words(text: &str) -> Vec<Piece<'_>> {
    let is_word = |c: char| c.is_alphanumeric() || c == '-' || c == '\'' || c == '\u{2019}';
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut in_word = false;
    for (i, c) in text.char_indices() {
        if is_word(c) != in_word {
            if i > start {
                let s = &text[start..i];
                pieces.push(if in_word {
                    Piece::Word(s)
                } else {
                    Piece::Other(s)
                });
            }
            start = i;
            in_word = !in_word;
        }
    }
    if start < text.len() {
        let s = &text[start..];
        pieces.push(if in_word {
            Piece::Word(s)
        } else {
            Piece::Other(s)
        });
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_examples() {
        // From the reference fixture's meta.json.
        let v = EntityVocab::default();
        let e = v.extract("a cat lying on a blanket next to a remote");
        assert_eq!(e.question, "a [MASK] lying on a blanket next to a [MASK]");
        assert_eq!(e.classes, vec!["cat", "remote"]);
        assert_eq!(
            answer("a photo of a {}.", &e.classes),
            "a photo of a cat and remote"
        );
        let e = v.extract("a cup of coffee on a table");
        assert_eq!(e.question, "a [MASK] of coffee on a [MASK]");
        assert_eq!(
            answer("a bad photo of the {}.", &e.classes),
            "a bad photo of the cup and table"
        );
        assert_eq!(cross_entity_text("people"), "A photo of people");
    }

    #[test]
    fn plurals_possessives_synonyms_and_case() {
        let v = EntityVocab::default();
        let e = v.extract("Two Women's bikes, knives and boxes near the TV; a T-shirt.");
        assert_eq!(
            e.classes,
            vec!["people", "bicycle", "knife", "box", "tv", "shirt"]
        );
        assert_eq!(
            e.question,
            "Two [MASK] [MASK], [MASK] and [MASK] near the [MASK]; a [MASK]."
        );
        assert_eq!(v.class_of("ladies"), Some("people"));
        assert_eq!(v.class_of("buses"), Some("bus"));
        assert_eq!(v.class_of("glasses"), Some("glass"));
        assert_eq!(v.class_of("dogs'"), Some("dog"));
        assert_eq!(v.class_of("couches"), Some("sofa"));
        assert_eq!(v.class_of("sky"), None);
        // Repeated entities appear once in the answer.
        assert_eq!(v.extract("a dog and another dog").classes, vec!["dog"]);
        assert!(v.extract("a sunset over the sea").classes.is_empty());
    }
}
