//! Environment overrides: `AUTHGATE_<SECTION>__<KEY>=value` as a figment [`Provider`].
//!
//! Not `Env::prefixed("AUTHGATE_")`, for two reasons:
//! - only names with a `__` are overrides, so `AUTHGATE_CONFIG` (the config path) and any other
//!   `AUTHGATE_*` variable are ignored instead of failing `deny_unknown_fields`;
//! - figment parses every env value, so a secret `007` would become the number 7 and `true` a
//!   boolean. Keys whose field holds a string keep the raw text; lists of strings are split
//!   without parsing their items; everything else is parsed as figment does. The kinds come from
//!   the raw structs themselves (`schema.rs`), so a new key needs no list.

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

use super::schema::{Kind, Schema};

/// Prefix of every override (matched case-insensitively).
const PREFIX: &str = "AUTHGATE_";
/// Metadata name; `extract.rs` recognizes it to name the variable in error messages.
pub(crate) const ENV_SOURCE_NAME: &str = "environment variable";

/// The environment overrides provider.
#[derive(Debug, Clone, Default)]
pub struct EnvOverrides {
    /// `Some` = these variables instead of the process environment (tests).
    vars: Option<Vec<(String, String)>>,
}

impl EnvOverrides {
    /// Reads the process environment when figment asks for the data.
    pub fn new() -> Self {
        Self { vars: None }
    }

    /// Uses the given variables instead of the process environment.
    pub fn from_vars<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = vars
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self { vars: Some(vars) }
    }

    fn vars(&self) -> Vec<(String, String)> {
        let mut vars = match &self.vars {
            Some(vars) => vars.clone(),
            // Non-UTF-8 variables cannot be overrides (every key is ASCII): skip them.
            None => std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        };
        // Deterministic merge order whatever order the OS lists variables in.
        vars.sort();
        vars
    }
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named(ENV_SOURCE_NAME)
            .interpolater(|_: &Profile, keys: &[&str]| variable_name(keys))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, Error> {
        let schema = Schema::of_sections();
        let mut dict = Dict::new();
        for (name, raw) in self.vars() {
            let Some(key) = override_key(&name) else {
                continue;
            };
            let nested = figment::util::nest(&key, parse_value(schema.kind(&key), &raw));
            if let Value::Dict(_, nested) = nested {
                merge(&mut dict, nested);
            }
        }
        let mut map = Map::new();
        map.insert(Profile::Default, dict);
        Ok(map)
    }
}

/// The variable that sets the key path `keys` (`["oidc", "client_id"]`).
pub(crate) fn variable_name<K: AsRef<str>>(keys: &[K]) -> String {
    let parts: Vec<String> = keys.iter().map(|k| k.as_ref().to_uppercase()).collect();
    format!("{PREFIX}{}", parts.join("__"))
}

/// `AUTHGATE_OIDC__CLIENT_ID` -> `oidc.client_id`; `None` for anything that is not an override.
fn override_key(name: &str) -> Option<String> {
    let head = name.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let rest = &name[PREFIX.len()..];
    if !rest.contains("__") {
        return None;
    }
    let parts: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    // `.` would be read by `nest` as another level; an empty part is a typo like `A____B`.
    if parts.iter().any(|p| p.is_empty() || p.contains('.')) {
        return None;
    }
    Some(parts.join("."))
}

/// The value of an override, parsed according to the kind of its key (`None`: no such key,
/// parsed as figment does; the section's `deny_unknown_fields` then names it).
fn parse_value(kind: Option<&Kind>, raw: &str) -> Value {
    match kind {
        Some(Kind::Text) => Value::from(raw.to_owned()),
        Some(Kind::List(item)) if **item == Kind::Text => Value::from(split_list(raw)),
        // figment's parser panics on an escape after a non-ASCII character in a quoted
        // string (`"é\n"`: it slices at a char index, figment 0.10.19): such a value is
        // taken as the text it is, which the key's type check then judges.
        _ if !raw.is_ascii() && raw.contains('\\') => Value::from(raw.to_owned()),
        _ => raw.parse().unwrap_or_else(|_| Value::from(raw.to_owned())),
    }
}

/// `[a, "b,c", 007]` -> `a`, `b,c`, `007`; a value without brackets is a one-item list.
fn split_list(raw: &str) -> Vec<String> {
    let trimmed = raw.trim();
    let Some(inner) = trimmed.strip_prefix('[').and_then(|s| s.strip_suffix(']')) else {
        return vec![trimmed.to_owned()];
    };
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in inner.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => items.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    items.push(current);
    let items: Vec<String> = items.iter().map(|s| s.trim().to_owned()).collect();
    // `[]` (and `[ ]`) is the empty list, not a list of one empty string.
    if items.len() == 1 && items[0].is_empty() {
        return Vec::new();
    }
    items
}

/// Deep-merges `from` into `into`; on a conflict the later (`from`) value wins.
fn merge(into: &mut Dict, from: Dict) {
    for (k, v) in from {
        match (into.get_mut(&k), v) {
            (Some(Value::Dict(_, existing)), Value::Dict(_, new)) => merge(existing, new),
            (_, v) => {
                into.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigError, extract};

    fn data(vars: &[(&str, &str)]) -> Value {
        let provider = EnvOverrides::from_vars(vars.iter().copied());
        let mut map = provider.data().unwrap();
        Value::from(map.remove(&Profile::Default).unwrap())
    }

    #[test]
    fn only_double_underscore_names_are_overrides() {
        assert_eq!(
            override_key("AUTHGATE_OIDC__CLIENT_ID").unwrap(),
            "oidc.client_id"
        );
        assert_eq!(
            override_key("authgate_Oidc__Client_Id").unwrap(),
            "oidc.client_id"
        );
        assert_eq!(override_key("AUTHGATE_CONFIG"), None);
        assert_eq!(override_key("AUTHGATE_FOO"), None);
        assert_eq!(override_key("AUTHGATE___X"), None);
        assert_eq!(override_key("AUTHGATE_OIDC__"), None);
        assert_eq!(override_key("OTHER_OIDC__CLIENT_ID"), None);
        assert_eq!(override_key("AUTH"), None);
    }

    #[test]
    fn string_keys_stay_raw() {
        let v = data(&[
            ("AUTHGATE_OIDC__CLIENT_SECRET", "007"),
            ("AUTHGATE_OIDC__CLIENT_ID", "true"),
            ("AUTHGATE_HEADERS__CLAIMS__X_TENANT", "42"),
        ]);
        assert_eq!(
            v.find_ref("oidc.client_secret").unwrap().as_str(),
            Some("007")
        );
        assert_eq!(v.find_ref("oidc.client_id").unwrap().as_str(), Some("true"));
        assert_eq!(
            v.find_ref("headers.claims.x_tenant").unwrap().as_str(),
            Some("42")
        );
    }

    #[test]
    fn other_keys_are_parsed() {
        let v = data(&[
            ("AUTHGATE_SESSION__COOKIE_SECURE", "false"),
            ("AUTHGATE_SESSION__MAX_SESSIONS", "12"),
            ("AUTHGATE_CONFIG", "/x.toml"),
        ]);
        assert_eq!(
            v.find_ref("session.cookie_secure").unwrap().to_bool(),
            Some(false)
        );
        assert_eq!(
            v.find_ref("session.max_sessions").unwrap().to_u128(),
            Some(12)
        );
        assert!(v.find_ref("config").is_none());
    }

    #[test]
    fn string_lists_keep_items_raw() {
        assert_eq!(split_list("[openid, email]"), ["openid", "email"]);
        assert_eq!(split_list("[007, true, \"a,b\"]"), ["007", "true", "a,b"]);
        assert_eq!(split_list("single"), ["single"]);
        assert!(split_list("[]").is_empty());
        assert!(split_list(" [ ] ").is_empty());
    }

    /// The raw section `name` read from `vars` alone, as JSON, and the errors.
    fn raw_section(vars: &[(String, &str)], name: &str) -> (serde_json::Value, Vec<ConfigError>) {
        let figment = figment::Figment::from(EnvOverrides::from_vars(vars.iter().cloned()));
        let mut errors = Vec::new();
        let raw = extract::extract(&figment, &mut errors).unwrap_or_default();
        let json = match name {
            "server" => serde_json::to_value(&raw.server),
            "upstream" => serde_json::to_value(&raw.upstream),
            "oidc" => serde_json::to_value(&raw.oidc),
            "session" => serde_json::to_value(&raw.session),
            "headers" => serde_json::to_value(&raw.headers),
            other => panic!("no section {other}"),
        };
        (json.unwrap(), errors)
    }

    fn has_string(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::String(_) => true,
            serde_json::Value::Array(items) => items.iter().any(has_string),
            serde_json::Value::Object(map) => map.values().any(has_string),
            _ => false,
        }
    }

    /// Every field of every section, set from the environment: a field holding strings gets
    /// the variable's text (`007` and `true` as written, in a list and in a table too); any
    /// other field never receives a string (`007` and `[007]` are parsed). So a raw field
    /// added later that holds strings cannot be parsed into a number: this fails if the
    /// schema misses it.
    #[test]
    fn string_fields_keep_the_variable_text() {
        let schema = Schema::of_sections();
        let text = Kind::Text;
        for (section, field, kind) in schema.keys() {
            let var = variable_name(&[section, field]);
            match kind {
                Kind::Text => {
                    for value in ["007", "true"] {
                        let (raw, errors) = raw_section(&[(var.clone(), value)], section);
                        assert!(errors.is_empty(), "{var}={value}: {errors:?}");
                        assert_eq!(raw[field], value, "{var}={value}");
                    }
                }
                Kind::List(item) if **item == text => {
                    let (raw, errors) = raw_section(&[(var.clone(), "[007, true]")], section);
                    assert!(errors.is_empty(), "{var}: {errors:?}");
                    assert_eq!(raw[field], serde_json::json!(["007", "true"]), "{var}");
                }
                Kind::Table(value) if **value == text => {
                    let var = variable_name(&[section, field, "k"]);
                    let (raw, errors) = raw_section(&[(var.clone(), "007")], section);
                    assert!(errors.is_empty(), "{var}: {errors:?}");
                    assert_eq!(raw[field], serde_json::json!([["k", "007"]]), "{var}");
                }
                _ => {
                    for value in ["007", "[007]"] {
                        let (raw, errors) = raw_section(&[(var.clone(), value)], section);
                        assert!(
                            errors
                                .iter()
                                .all(|e| !e.message.contains("expected a string")),
                            "{var}={value} is a string field the schema calls {kind:?}: {errors:?}"
                        );
                        assert!(
                            !errors.is_empty() || !has_string(&raw[field]),
                            "{var}={value} is a string field the schema calls {kind:?}"
                        );
                    }
                }
            }
        }
    }

    /// The schema lists exactly the fields serde knows for each section (its `Serialize`,
    /// derived for tests, is the independent source), so no field escapes the test above.
    #[test]
    fn schema_lists_every_field() {
        let schema = Schema::of_sections();
        // Every table section of the file (a section added to `raw.rs` is probed too).
        let mut sections: Vec<&str> = schema.keys().map(|(s, _, _)| s).collect();
        sections.dedup();
        let tables: Vec<&str> = (crate::config::raw::SECTIONS.iter().copied())
            .filter(|s| *s != "route" && *s != "upstreams" && *s != "providers")
            .collect();
        assert_eq!(sections, tables);
        for section in tables {
            let (raw, _) = raw_section(&[], section);
            let mut serde_fields: Vec<&str> = raw
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut probed: Vec<&str> = (schema.keys())
                .filter(|(s, _, _)| *s == section)
                .map(|(_, f, _)| f)
                .collect();
            serde_fields.sort_unstable();
            probed.sort_unstable();
            assert_eq!(probed, serde_fields, "{section}");
        }
        // The kinds the probe reads for each shape `raw.rs` uses.
        let kind = |key| schema.kind(key).cloned();
        let list = |k| Some(Kind::List(Box::new(k)));
        assert_eq!(kind("server.listen"), Some(Kind::Text));
        assert_eq!(kind("server.public_url"), Some(Kind::Text));
        assert_eq!(kind("oidc.client_id"), Some(Kind::Text));
        assert_eq!(kind("server.trusted_proxies"), list(Kind::Text));
        assert_eq!(kind("oidc.extra_auth_params.prompt"), Some(Kind::Text));
        assert_eq!(kind("session.max_sessions"), Some(Kind::Parsed));
        assert_eq!(kind("headers.authorization_bearer"), Some(Kind::Parsed));
    }

    #[test]
    fn names_the_variable() {
        assert_eq!(
            variable_name(&["oidc", "client_id"]),
            "AUTHGATE_OIDC__CLIENT_ID"
        );
    }
}
