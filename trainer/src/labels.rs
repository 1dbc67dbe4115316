use anyhow::{bail, Result};

/// More labels than this is almost certainly a mistake (ADE20K, the largest benchmark, has 150).
pub const MAX_LABELS: usize = 1000;
const MAX_LABEL_CHARS: usize = 200;

/// "cat, sofa ,window" -> ["cat", "sofa", "window"]: comma separated, trimmed, all distinct.
pub fn parse_labels(text: &str) -> Result<Vec<String>> {
    let labels: Vec<String> = text.split(',').map(|l| l.trim().to_string()).collect();
    if labels.iter().all(|l| l.is_empty()) {
        bail!("no labels given (expected comma separated words, e.g. \"cat,sofa,window\")");
    }
    if let Some(i) = labels.iter().position(|l| l.is_empty()) {
        bail!(
            "label {} is empty (two commas in a row or a trailing comma?)",
            i + 1
        );
    }
    if labels.len() > MAX_LABELS {
        bail!(
            "{} labels given; at most {MAX_LABELS} are supported",
            labels.len()
        );
    }
    if let Some(l) = labels.iter().find(|l| l.chars().count() > MAX_LABEL_CHARS) {
        bail!(
            "label '{}...' is longer than {MAX_LABEL_CHARS} characters",
            l.chars().take(20).collect::<String>()
        );
    }
    for (i, l) in labels.iter().enumerate() {
        if labels[..i].iter().any(|o| o.eq_ignore_ascii_case(l)) {
            bail!("label '{l}' is given twice");
        }
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_trims() {
        assert_eq!(
            parse_labels(" cat, sofa ,window").unwrap(),
            vec!["cat", "sofa", "window"]
        );
        assert_eq!(
            parse_labels("traffic light").unwrap(),
            vec!["traffic light"]
        );
    }

    #[test]
    fn rejects_bad_lists() {
        for bad in ["", " , ", "cat,,dog", "cat,", "cat,Cat"] {
            assert!(parse_labels(bad).is_err(), "{bad:?}");
        }
        assert!(parse_labels(
            &vec!["x"; 2000]
                .iter()
                .enumerate()
                .map(|(i, _)| format!("w{i}"))
                .collect::<Vec<_>>()
                .join(",")
        )
        .is_err());
    }
}
