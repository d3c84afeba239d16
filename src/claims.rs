//! Claims as plain data: reading a string claim, a list of groups, and a claim's text form.
//!
//! Shared by what builds an identity (`session::identity`), what decides on one (`policy`)
//! and what turns claims into upstream headers (`headers`), so all three read a claim the
//! same way.

use std::borrow::Cow;

use serde_json::{Map, Value};

/// A claim that is a string.
pub fn str_claim<'c>(claims: &'c Map<String, Value>, name: &str) -> Option<&'c str> {
    claims.get(name).and_then(Value::as_str)
}

/// Groups as a list, or as one string separated by commas or spaces. The names of a list
/// are kept as they are (commas included).
pub fn groups(value: Option<&Value>) -> Vec<Cow<'_, str>> {
    match value {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(claim_text)
            .filter(|s| !s.is_empty())
            .map(Cow::Owned)
            .collect(),
        Some(Value::String(s)) => s
            .split([',', ' '])
            .filter(|g| !g.is_empty())
            .map(Cow::Borrowed)
            .collect(),
        _ => Vec::new(),
    }
}

/// A claim rendered for a header or a comparison: strings as they are, numbers and bools
/// printed, lists comma-joined; objects and null are not rendered.
pub fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) => Some(
            items
                .iter()
                .filter_map(claim_text)
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Object(_) | Value::Null => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_from_string_or_list() {
        assert_eq!(groups(Some(&json!("a, b c"))), ["a", "b", "c"]);
        assert_eq!(groups(Some(&json!(["a", 1]))), ["a", "1"]);
        assert!(groups(None).is_empty());
    }

    #[test]
    fn claims_render_as_text() {
        assert_eq!(claim_text(&json!("x")).as_deref(), Some("x"));
        assert_eq!(claim_text(&json!(42)).as_deref(), Some("42"));
        assert_eq!(claim_text(&json!(true)).as_deref(), Some("true"));
        assert_eq!(claim_text(&json!(["a", 1, null])).as_deref(), Some("a,1"));
        assert_eq!(claim_text(&json!({"a": 1})), None);
        assert_eq!(claim_text(&json!(null)), None);
    }
}
