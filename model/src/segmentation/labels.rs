use crate::error::OvsegError;

const MAX_LABEL_CHARS: usize = 200;

/// "cat, sofa ,window" -> ["cat", "sofa", "window"]: comma separated, trimmed, non-empty,
/// distinct (ignoring case), at most `max` of them.
pub fn parse_labels(text: &str, max: usize) -> Result<Vec<String>, OvsegError> {
    let fail = |m: String| Err(OvsegError::Input(m));
    let labels: Vec<String> = text.split(',').map(|l| l.trim().to_string()).collect();
    if labels.iter().all(|l| l.is_empty()) {
        return fail(
            "no labels given (expected comma separated words, e.g. \"cat,sofa,window\")".into(),
        );
    }
    if let Some(i) = labels.iter().position(|l| l.is_empty()) {
        return fail(format!(
            "label {} is empty (two commas in a row or a trailing comma?)",
            i + 1
        ));
    }
    if labels.len() > max {
        return fail(format!(
            "{} labels given; at most {max} are supported",
            labels.len()
        ));
    }
    if let Some(l) = labels.iter().find(|l| l.chars().count() > MAX_LABEL_CHARS) {
        return fail(format!(
            "label '{}...' is longer than {MAX_LABEL_CHARS} characters",
            l.chars().take(20).collect::<String>()
        ));
    }
    for (i, l) in labels.iter().enumerate() {
        if labels[..i].iter().any(|o| o.eq_ignore_ascii_case(l)) {
            return fail(format!("label '{l}' is given twice"));
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
            parse_labels(" cat, sofa ,window", 10).unwrap(),
            vec!["cat", "sofa", "window"]
        );
        assert_eq!(
            parse_labels("traffic light", 10).unwrap(),
            vec!["traffic light"]
        );
    }

    #[test]
    fn rejects_bad_lists() {
        for bad in ["", " , ", "cat,,dog", "cat,", "cat,Cat"] {
            assert!(parse_labels(bad, 10).is_err(), "{bad:?}");
        }
        let many = (0..300)
            .map(|i| format!("w{i}"))
            .collect::<Vec<_>>()
            .join(",");
        assert!(parse_labels(&many, 255).is_err());
        assert!(parse_labels(&"x".repeat(300), 10).is_err());
    }
}
