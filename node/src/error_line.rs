//! How the binaries print a fatal error: one line, each cause once, no backtrace.

/// `error` and its causes joined by ": ", skipping a cause whose text the line already holds
/// (many errors quote their source in their own message, and `{:#}` would print it twice).
pub fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("opening the store: {source}")]
    struct Quoting {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_quoted_in_its_parent_is_printed_once() {
        let io = std::io::Error::other("disk on fire");
        let e = anyhow::Error::new(Quoting { source: io }).context("starting node 3");
        assert_eq!(format!("{e:#}").matches("disk on fire").count(), 2);
        assert_eq!(
            one_line(&e),
            "starting node 3: opening the store: disk on fire"
        );
    }

    #[test]
    fn causes_not_quoted_are_all_printed() {
        let e = anyhow::anyhow!("root cause")
            .context("middle")
            .context("top");
        assert_eq!(one_line(&e), "top: middle: root cause");
    }
}
