//! The kind of value every config key holds, read from the raw serde structs themselves.
//!
//! The environment provider (`env.rs`) must hand `AUTHGATE_OIDC__CLIENT_SECRET=007` over as the
//! string "007", not the number 7, and split `AUTHGATE_OIDC__SCOPES=[a, b]` into strings. It
//! asks this schema, so a key added to `raw.rs` is handled without any list to edit.
//!
//! The probe is a serde `Deserializer` that holds no data. Each section's derived `Deserialize`
//! first tells it the section's field names (`deserialize_struct`); then, once per field, the
//! probe offers a table holding just that key, and the field's own `Deserialize` (derived, or a
//! `lenient` helper) asks for the shape it wants: `deserialize_string`, `deserialize_seq`... The
//! probe answers that request with an error carrying the [`Kind`] it saw, which the field's code
//! passes back up unchanged: nothing is ever deserialized.

use std::fmt;

use serde::de::value::StrDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor,
};

use super::raw::{RawHeaders, RawOidc, RawServer, RawSession, RawUpstream};

/// What a key's field asks for, in the terms the environment provider needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A string whatever it looks like: `String`, `Option<String>`, `lenient::Text`, and
    /// anything that takes whatever comes (`deserialize_any`: in `raw.rs`, the lenient helpers).
    Text,
    /// A list (`deserialize_seq`) of items of the inner kind.
    List(Box<Kind>),
    /// A table with free keys (`deserialize_map`), each value of the inner kind.
    Table(Box<Kind>),
    /// Numbers, booleans, and every shape the probe does not follow (nested structs, enums,
    /// tuples, bytes): the environment provider parses these as figment does.
    Parsed,
}

/// The fields of the table sections (`[[route]]` cannot be set from the environment).
#[derive(Debug)]
pub(crate) struct Schema {
    sections: Vec<(&'static str, Vec<(&'static str, Kind)>)>,
}

impl Schema {
    /// Probes every table section of `raw.rs`.
    pub(crate) fn of_sections() -> Self {
        Self {
            sections: vec![
                ("server", fields::<RawServer>()),
                ("upstream", fields::<RawUpstream>()),
                ("oidc", fields::<RawOidc>()),
                ("session", fields::<RawSession>()),
                ("headers", fields::<RawHeaders>()),
            ],
        }
    }

    /// The kind of the value at a dotted key: `oidc.client_secret` -> `Text`,
    /// `headers.claims.x_tenant` -> `Text` (a value of a table of strings). `None` for a key
    /// that is no field (the section's `deny_unknown_fields` then reports it).
    pub(crate) fn kind(&self, key: &str) -> Option<&Kind> {
        let mut parts = key.split('.');
        let section = parts.next()?;
        let field = parts.next()?;
        let (_, fields) = self.sections.iter().find(|(name, _)| *name == section)?;
        let mut kind = &fields.iter().find(|(name, _)| *name == field)?.1;
        for _ in parts {
            kind = match kind {
                Kind::Table(value) => value,
                _ => return None,
            };
        }
        Some(kind)
    }

    /// Every `(section, field, kind)`, in declaration order.
    #[cfg(test)]
    pub(crate) fn keys(&self) -> impl Iterator<Item = (&'static str, &'static str, &Kind)> {
        (self.sections.iter())
            .flat_map(|(section, fields)| fields.iter().map(move |(f, k)| (*section, *f, k)))
    }
}

/// Each field of the struct `T` with its kind; empty when `T` is not a plain struct (a
/// `#[serde(flatten)]` makes it a map of unknown keys: the schema test then fails).
fn fields<T: DeserializeOwned>() -> Vec<(&'static str, Kind)> {
    let names = match T::deserialize(StructProbe { field: None }) {
        Err(Answer::Fields(names)) => names,
        _ => &[],
    };
    (names.iter())
        .map(|&name| {
            let kind = match T::deserialize(StructProbe { field: Some(name) }) {
                Err(Answer::Found(kind)) => kind,
                _ => Kind::Parsed,
            };
            (name, kind)
        })
        .collect()
}

/// How every probe stops: with what it learned, or with an error of the code it probed.
#[derive(Debug)]
enum Answer {
    Fields(&'static [&'static str]),
    Found(Kind),
    Other(String),
}

impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Other(message) => f.write_str(message),
            found => write!(f, "config schema probe: {found:?}"),
        }
    }
}

impl std::error::Error for Answer {}

impl de::Error for Answer {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Answer::Other(msg.to_string())
    }
}

/// Stands for a section. `field: None` asks for the field names; `Some(name)` offers a table
/// holding just that key, whose value is a [`ValueProbe`].
struct StructProbe {
    field: Option<&'static str>,
}

impl<'de> de::Deserializer<'de> for StructProbe {
    type Error = Answer;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Answer> {
        match self.field {
            None => Err(Answer::Fields(fields)),
            Some(field) => visitor.visit_map(OneEntry { key: Some(field) }),
        }
    }

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Answer> {
        Err(Answer::Other("not a struct".into()))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// A table of one entry: `key` (a field name, or any key of a free table), then the probed value.
struct OneEntry {
    key: Option<&'static str>,
}

impl<'de> MapAccess<'de> for OneEntry {
    type Error = Answer;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Answer> {
        let Some(key) = self.key.take() else {
            return Ok(None);
        };
        let key: StrDeserializer<'_, Answer> = key.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Answer> {
        seed.deserialize(ValueProbe)
    }
}

/// A list of one item, the probed value.
struct OneItem;

impl<'de> SeqAccess<'de> for OneItem {
    type Error = Answer;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Answer> {
        seed.deserialize(ValueProbe).map(Some)
    }
}

/// Stands for one value: answers the first request with the kind it implies.
struct ValueProbe;

/// The kind the inner probe found, wrapped (`List`, `Table`); other errors pass unchanged.
fn wrap(result: Answer, wrap: fn(Box<Kind>) -> Kind) -> Answer {
    match result {
        Answer::Found(inner) => Answer::Found(wrap(Box::new(inner))),
        other => other,
    }
}

/// `deserialize_*` methods that answer `Kind::Parsed` whatever their arguments.
macro_rules! parsed {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {
        $(fn $method<V: Visitor<'de>>(self, $(_: $ty,)* _visitor: V) -> Result<V::Value, Answer> {
            Err(Answer::Found(Kind::Parsed))
        })*
    };
}

impl<'de> de::Deserializer<'de> for ValueProbe {
    type Error = Answer;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Answer> {
        Err(Answer::Found(Kind::Text))
    }

    serde::forward_to_deserialize_any! { char str string identifier }

    /// `Option<T>`: an override sets the `T`.
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Answer> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Answer> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Answer> {
        visitor.visit_seq(OneItem).map_err(|e| wrap(e, Kind::List))
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Answer> {
        let entry = OneEntry { key: Some("key") };
        visitor.visit_map(entry).map_err(|e| wrap(e, Kind::Table))
    }

    parsed! {
        deserialize_bool();
        deserialize_i8();
        deserialize_i16();
        deserialize_i32();
        deserialize_i64();
        deserialize_i128();
        deserialize_u8();
        deserialize_u16();
        deserialize_u32();
        deserialize_u64();
        deserialize_u128();
        deserialize_f32();
        deserialize_f64();
        deserialize_bytes();
        deserialize_byte_buf();
        deserialize_unit();
        deserialize_unit_struct(name: &'static str);
        deserialize_tuple(len: usize);
        deserialize_tuple_struct(name: &'static str, len: usize);
        deserialize_struct(name: &'static str, fields: &'static [&'static str]);
        deserialize_enum(name: &'static str, variants: &'static [&'static str]);
        deserialize_ignored_any();
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::config::lenient;

    fn text() -> Kind {
        Kind::Text
    }

    fn list(k: Kind) -> Kind {
        Kind::List(Box::new(k))
    }

    fn table(k: Kind) -> Kind {
        Kind::Table(Box::new(k))
    }

    /// One field of every shape `raw.rs` uses, and a few it does not.
    #[derive(Deserialize, Default)]
    #[serde(default, deny_unknown_fields)]
    #[allow(dead_code)]
    struct Shapes {
        string: String,
        opt_string: Option<String>,
        #[serde(deserialize_with = "lenient::opt_string")]
        lenient_opt: Option<String>,
        #[serde(deserialize_with = "lenient::string_list")]
        lenient_list: Vec<String>,
        #[serde(deserialize_with = "lenient::string_pairs")]
        lenient_pairs: Vec<(String, String)>,
        #[serde(deserialize_with = "lenient::string_or_list_pairs")]
        lenient_multi: Vec<(String, Vec<String>)>,
        #[serde(rename = "match")]
        renamed: String,
        flag: bool,
        count: usize,
        opt_count: Option<u64>,
        ratio: f64,
        counts: Vec<u32>,
        map: std::collections::BTreeMap<String, String>,
        nested: Nested,
        pair: (String, String),
        unit: (),
    }

    #[derive(Deserialize, Default)]
    #[allow(dead_code)]
    struct Nested {
        a: String,
    }

    #[test]
    fn every_serde_shape_gets_its_kind() {
        let fields = fields::<Shapes>();
        let expected = [
            ("string", text()),
            ("opt_string", text()),
            ("lenient_opt", text()),
            ("lenient_list", list(text())),
            ("lenient_pairs", table(text())),
            ("lenient_multi", table(text())),
            ("match", text()),
            ("flag", Kind::Parsed),
            ("count", Kind::Parsed),
            ("opt_count", Kind::Parsed),
            ("ratio", Kind::Parsed),
            ("counts", list(Kind::Parsed)),
            ("map", table(text())),
            ("nested", Kind::Parsed),
            ("pair", Kind::Parsed),
            ("unit", Kind::Parsed),
        ];
        assert_eq!(fields, expected);
    }

    #[test]
    fn finds_keys_and_table_values() {
        let schema = Schema::of_sections();
        assert_eq!(schema.kind("oidc.client_secret"), Some(&text()));
        assert_eq!(schema.kind("oidc.scopes"), Some(&list(text())));
        assert_eq!(schema.kind("headers.claims"), Some(&table(text())));
        assert_eq!(schema.kind("headers.claims.x_tenant"), Some(&text()));
        assert_eq!(schema.kind("headers.claims.a.b"), None);
        assert_eq!(schema.kind("session.cookie_secure"), Some(&Kind::Parsed));
        assert_eq!(schema.kind("server.max_connections"), Some(&Kind::Parsed));
        assert_eq!(schema.kind("oidc.client_secret.x"), None);
        assert_eq!(schema.kind("oidc.nope"), None);
        assert_eq!(schema.kind("route.path"), None);
        assert_eq!(schema.kind("oidc"), None);
        assert_eq!(schema.kind(""), None);
    }
}
