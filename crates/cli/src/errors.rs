//! How the binary prints an error: the chain of causes, each once.
//!
//! Library errors that write their source into their own message *and* return it from
//! `source()` would otherwise print the same words twice with `{:#}` (`Address already in use
//! (os error 98): Address already in use (os error 98)`); this drops every cause whose text the
//! message before it already ends with, so that it holds for errors of crates we do not own.

/// `outer: cause: root`, each distinct text once.
pub fn describe(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let text = cause.to_string();
        let repeated = parts
            .last()
            .is_some_and(|last| last.ends_with(text.trim()) || text.trim().is_empty());
        if !repeated {
            parts.push(text);
        }
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cause_repeated_by_its_parent_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::AddrInUse, "Address already in use");
        let err = anyhow::Error::new(io)
            .context("cannot listen on 127.0.0.1:8080: Address already in use")
            .context("switchboard serve");
        assert_eq!(
            describe(&err),
            "switchboard serve: cannot listen on 127.0.0.1:8080: Address already in use"
        );
    }

    #[test]
    fn distinct_causes_are_all_kept() {
        let err = anyhow::anyhow!("bad signature").context("invalid token");
        assert_eq!(describe(&err), "invalid token: bad signature");
    }
}
