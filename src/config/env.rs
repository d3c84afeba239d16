//! Environment overrides: `AUTHGATE_<SECTION>__<KEY>=value` as a figment [`Provider`].
//!
//! Not `Env::prefixed("AUTHGATE_")`, for two reasons (CONTRACT Detail 1):
//! - only names with a `__` are overrides, so `AUTHGATE_CONFIG` (the config path) and any other
//!   `AUTHGATE_*` variable are ignored instead of failing `deny_unknown_fields`;
//! - figment parses every env value, so a secret `007` would become the number 7 and `true` a
//!   boolean. Keys whose type is a string (see `raw::STRING_KEYS`) keep the raw text; string
//!   lists are split without parsing their items; everything else is parsed as figment does.

use figment::value::{Dict, Map, Value};
use figment::{Error, Metadata, Profile, Provider};

use super::raw::{STRING_KEYS, STRING_LIST_KEYS, STRING_TABLES};

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
        let mut dict = Dict::new();
        for (name, raw) in self.vars() {
            let Some(key) = override_key(&name) else {
                continue;
            };
            let nested = figment::util::nest(&key, parse_value(&key, &raw));
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

/// The value of the override for `key`, parsed according to the key's type.
fn parse_value(key: &str, raw: &str) -> Value {
    if STRING_KEYS.contains(&key) || in_string_table(key) {
        Value::from(raw.to_owned())
    } else if STRING_LIST_KEYS.contains(&key) {
        Value::from(split_list(raw))
    } else {
        raw.parse().unwrap_or_else(|_| Value::from(raw.to_owned()))
    }
}

fn in_string_table(key: &str) -> bool {
    STRING_TABLES.iter().any(|t| {
        key.strip_prefix(t)
            .is_some_and(|rest| rest.starts_with('.') && !rest[1..].contains('.'))
    })
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

    /// The key lists are hand-kept: each entry must be a real key, or an override of it would
    /// be parsed one way and then rejected as unknown.
    #[test]
    fn every_listed_key_exists() {
        let vars = (STRING_KEYS.iter().chain(STRING_LIST_KEYS)).map(|k| {
            (
                variable_name(&k.split('.').collect::<Vec<_>>()),
                "x".to_owned(),
            )
        });
        let figment = figment::Figment::from(EnvOverrides::from_vars(vars));
        let errors = crate::config::Config::from_figment(figment).err().unwrap();
        let unknown: Vec<_> = (errors.0.iter())
            .filter(|e| e.message.contains("unknown"))
            .collect();
        assert!(unknown.is_empty(), "{unknown:?}");
    }

    /// One-off proof for the switch to the schema probe: it classifies every key exactly as
    /// the hand-kept lists did (removed with the lists in the next commit).
    #[test]
    fn schema_matches_the_hand_kept_lists() {
        use crate::config::schema::{Kind, Schema};
        let schema = Schema::of_sections();
        let mut seen = 0;
        for (section, field, kind) in schema.keys() {
            let key = format!("{section}.{field}");
            let expected = if STRING_KEYS.contains(&key.as_str()) {
                Kind::Text
            } else if STRING_LIST_KEYS.contains(&key.as_str()) {
                Kind::List(Box::new(Kind::Text))
            } else if STRING_TABLES.contains(&key.as_str()) {
                Kind::Table(Box::new(Kind::Text))
            } else {
                Kind::Parsed
            };
            assert_eq!(kind, &expected, "{key}");
            seen += usize::from(expected != Kind::Parsed);
        }
        assert_eq!(
            seen,
            STRING_KEYS.len() + STRING_LIST_KEYS.len() + STRING_TABLES.len()
        );
    }

    #[test]
    fn names_the_variable() {
        assert_eq!(
            variable_name(&["oidc", "client_id"]),
            "AUTHGATE_OIDC__CLIENT_ID"
        );
    }
}
