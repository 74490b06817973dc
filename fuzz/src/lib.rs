//! Helpers shared by the fuzz targets.

use std::sync::OnceLock;

use serde_json::Value;

/// Parses `text` as JSON the way a strict receiver (serde_json, and so `switchboard-client`)
/// does.
///
/// A former finding, now fixed in the decoder: serde_json's raw-value scan accepts lone
/// surrogate escapes (`"\ud800"`) and numbers out of `f64` range (`1e400`), which its full
/// parse refuses. The targets are strict by default; with `SWITCHBOARD_FUZZ_LENIENT` set, a
/// text that parses once those are masked (`\uFFFD`, `0`) is accepted, and returned parsed
/// that way (to look past a regression of it).
pub fn parse_json(text: &[u8]) -> Result<Value, serde_json::Error> {
    match serde_json::from_slice(text) {
        Ok(value) => Ok(value),
        Err(err) if strict() => Err(err),
        Err(err) => match std::str::from_utf8(text).map(|text| (text, mask_unparseable(text))) {
            Ok((text, masked)) if masked != text => serde_json::from_str(&masked),
            _ => Err(err),
        },
    }
}

/// Whether the former findings fail the targets (the default) instead of being tolerated
/// (`SWITCHBOARD_FUZZ_LENIENT` set).
pub fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("SWITCHBOARD_FUZZ_LENIENT").is_none())
}

/// Replaces, in JSON text, every `\uXXXX` escape of a surrogate (D800–DFFF) inside a string by
/// `\uFFFD`, and every number outside strings that overflows `f64` by `0`. Everything else
/// (escaped backslashes included) stays as it is.
pub fn mask_unparseable(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut in_string = false;
    while let Some(c) = rest.chars().next() {
        let mut len = c.len_utf8();
        if in_string {
            match c {
                '"' => in_string = false,
                '\\' => {
                    let escape = rest.get(..6).unwrap_or("");
                    let unit = escape
                        .strip_prefix("\\u")
                        .and_then(|hex| u16::from_str_radix(hex, 16).ok());
                    if unit.is_some_and(|unit| (0xD800..=0xDFFF).contains(&unit)) {
                        out.push_str("\\uFFFD");
                        rest = rest.get(6..).unwrap_or("");
                        continue;
                    }
                    // Any other escape: the backslash and the escaped character, as they are.
                    len += rest
                        .get(1..)
                        .and_then(|s| s.chars().next())
                        .map_or(0, char::len_utf8);
                }
                _ => {}
            }
        } else if c == '"' {
            in_string = true;
        } else if c == '-' || c.is_ascii_digit() {
            len = rest
                .find(|c: char| !(c.is_ascii_digit() || "+-.eE".contains(c)))
                .unwrap_or(rest.len());
            let number = rest.get(..len).unwrap_or("");
            if number.parse::<f64>().is_ok_and(f64::is_infinite) {
                out.push('0');
                rest = rest.get(len..).unwrap_or("");
                continue;
            }
        }
        out.push_str(rest.get(..len).unwrap_or(rest));
        rest = rest.get(len..).unwrap_or("");
    }
    out
}

/// Whether a text frame is a JSON array (its first non-blank character is `[`).
///
/// Known finding: `client::decode` accepts a JSON array as a message, its elements taken as
/// the fields in declaration order (`["join","lobby"]` joins `lobby`, `["ping",null,7]` is a
/// ping with id 7), because serde's derived `Deserialize` for a struct accepts a sequence. The
/// protocol says a text frame is one JSON object.
pub fn is_json_array(text: &str) -> bool {
    text.trim_start_matches([' ', '\t', '\n', '\r']).starts_with('[')
}

/// Nesting of arrays and objects (a scalar is 0).
pub fn depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_only_what_serde_json_refuses() {
        assert_eq!(mask_unparseable(r#"["\ud800x"]"#), r#"["\uFFFDx"]"#);
        assert_eq!(mask_unparseable(r#"["\\ud800"]"#), r#"["\\ud800"]"#);
        assert_eq!(
            mask_unparseable(r#"["\u0041é\"\uDFFF",1e400]"#),
            r#"["\u0041é\"\uFFFD",0]"#
        );
        assert_eq!(
            mask_unparseable(r#"{"1e400":-1E+999,"b":[1.5e3,-2]}"#),
            r#"{"1e400":0,"b":[1.5e3,-2]}"#
        );
        assert!(parse_json(br#"{"a":"\ud800","b":1e400}"#).is_ok());
        assert!(parse_json(br#"{"a":"\ud800}"#).is_err());
        assert!(parse_json(br#"{"a":"\ud800","b":01}"#).is_err());
    }
}
