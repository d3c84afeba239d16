//! Lenient string deserializers for the raw config.
//!
//! figment hands a TOML integer or an environment value that looks like a number or a boolean
//! to serde as a number or a boolean (Figment issues #42 and #70). Secrets, ids and claim values
//! are strings whatever they look like, so these helpers accept any scalar and keep its text.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserializer;
use serde::de::{self, MapAccess, SeqAccess, Visitor};

/// Accepts a string, an integer, a float, a boolean or a char, as its text.
struct ScalarText;

impl<'de> Visitor<'de> for ScalarText {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }

    fn visit_char<E: de::Error>(self, v: char) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<String, E> {
        Ok(v.to_string())
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

/// A string that also accepts number- and boolean-looking values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Text(pub String);

impl<'de> serde::Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarText).map(Text)
    }
}

/// `Option<String>`, lenient.
pub(crate) fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    d.deserialize_any(ScalarText).map(Some)
}

/// `Vec<String>`, each element lenient.
pub(crate) fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let items: Vec<Text> = serde::Deserialize::deserialize(d)?;
    Ok(items.into_iter().map(|t| t.0).collect())
}

/// A table of string values, in the order the deserializer yields them.
pub(crate) fn string_pairs<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, String)>, D::Error> {
    d.deserialize_map(Pairs(|v: Text| v.0, PhantomData))
}

/// A table whose values are a string or a list of strings (`require_claims`).
pub(crate) fn string_or_list_pairs<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Vec<(String, Vec<String>)>, D::Error> {
    d.deserialize_map(Pairs(|v: OneOrMany| v.0, PhantomData))
}

/// A value that is either one string or a list of strings.
struct OneOrMany(Vec<String>);

impl<'de> serde::Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OneOrManyVisitor)
    }
}

struct OneOrManyVisitor;

impl<'de> Visitor<'de> for OneOrManyVisitor {
    type Value = OneOrMany;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a list of strings")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
        let mut out = Vec::new();
        while let Some(Text(s)) = seq.next_element()? {
            out.push(s);
        }
        Ok(OneOrMany(out))
    }

    // Scalars: reuse the lenient conversion so `tier = 1` means the string "1".
    fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
        ScalarText.visit_str(v).map(|s| OneOrMany(vec![s]))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<OneOrMany, E> {
        ScalarText.visit_bool(v).map(|s| OneOrMany(vec![s]))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<OneOrMany, E> {
        ScalarText.visit_i64(v).map(|s| OneOrMany(vec![s]))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<OneOrMany, E> {
        ScalarText.visit_u64(v).map(|s| OneOrMany(vec![s]))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<OneOrMany, E> {
        ScalarText.visit_f64(v).map(|s| OneOrMany(vec![s]))
    }
}

/// Map visitor keeping entry order; `F` turns each deserialized value into the stored one.
struct Pairs<V, T, F>(F, PhantomData<fn(V) -> T>);

impl<'de, V, T, F> Visitor<'de> for Pairs<V, T, F>
where
    V: serde::Deserialize<'de>,
    F: Fn(V) -> T,
{
    type Value = Vec<(String, T)>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        while let Some((key, value)) = map.next_entry::<String, V>()? {
            out.push((key, (self.0)(value)));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct T {
        #[serde(default, deserialize_with = "opt_string")]
        s: Option<String>,
        #[serde(default, deserialize_with = "string_list")]
        l: Vec<String>,
        #[serde(default, deserialize_with = "string_or_list_pairs")]
        m: Vec<(String, Vec<String>)>,
    }

    #[test]
    fn scalars_become_text() {
        let t: T =
            toml::from_str("s = 7\nl = [1, true, \"x\"]\nm = { a = 1, b = [\"x\", 2] }").unwrap();
        assert_eq!(t.s.as_deref(), Some("7"));
        assert_eq!(t.l, ["1", "true", "x"]);
        assert_eq!(
            t.m,
            [
                ("a".to_string(), vec!["1".to_string()]),
                ("b".to_string(), vec!["x".to_string(), "2".to_string()])
            ]
        );
    }

    #[test]
    fn tables_are_not_strings() {
        let err = toml::from_str::<T>("s = { a = 1 }").err().unwrap();
        assert!(err.to_string().contains("expected a string"), "{err}");
    }
}
