//! From a [`Figment`] to the raw sections, keeping every serde error with its key path.
//!
//! One `extract()` of the whole file would stop at the first bad section. Instead each section
//! is extracted on its own (through `focus`, so error paths are relative and get the section
//! prepended here), and each `[[route]]` element on its own, so `authgate check` reports the
//! problems of every section at once.

use figment::value::{Dict, Value};
use figment::{Figment, Metadata};
use serde::de::DeserializeOwned;

use super::ConfigError;
use super::env::{ENV_SOURCE_NAME, variable_name};
use super::raw::{RawConfig, RawOidc, RawRoute, RawUpstream, SECTIONS};

/// Key of errors that belong to no key: the file is missing or not valid TOML.
const ROOT_KEY: &str = "config";

/// Extracts every section; a section that fails is `None` and its errors are in `errors`.
pub(crate) fn extract(figment: &Figment, errors: &mut Vec<ConfigError>) -> Option<RawConfig> {
    let top = match figment.extract::<Dict>() {
        Ok(top) => top,
        Err(e) => {
            // Nothing can be read (missing file, TOML syntax error): this is the only error.
            errors.extend(convert(figment, e, &[]));
            return None;
        }
    };
    for name in top.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
        let message = match nearest(name, SECTIONS) {
            Some(near) => format!("unknown section; did you mean `{near}`?"),
            None => format!("unknown section; expected one of {}", SECTIONS.join(", ")),
        };
        errors.push(ConfigError::new(
            name.as_str(),
            with_source(message, figment.find_metadata(name), &[name.as_str()]),
        ));
    }
    Some(RawConfig {
        server: section(figment, "server", errors),
        upstream: section(figment, "upstream", errors),
        upstreams: upstreams(figment, errors),
        oidc: section(figment, "oidc", errors),
        providers: named::<RawOidc>(figment, "providers", "providers ([providers.NAME])", errors),
        session: section(figment, "session", errors),
        headers: section(figment, "headers", errors),
        routes: routes(figment, errors),
    })
}

/// One `[section]`: its defaults when absent, `None` when it does not deserialize.
fn section<T: DeserializeOwned + Default>(
    figment: &Figment,
    name: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match figment.find_value(name) {
        Err(_) => Some(T::default()),
        Ok(Value::Dict(tag, dict)) => match figment.focus(name).extract::<T>() {
            Ok(section) => Some(section),
            Err(e) => {
                // serde stops at the first bad key of a table: read each key alone to
                // report the others too.
                let each = each_key::<T>(tag, &dict, |e| convert(figment, e, &[name]), name);
                errors.extend(if each.is_empty() {
                    convert(figment, e, &[name])
                } else {
                    each
                });
                None
            }
        },
        // `focus` would silently skip a non-table value: say it instead.
        Ok(other) => {
            let message = format!("expected a table, found {}", kind_of(&other));
            let md = figment.find_metadata(name);
            errors.push(ConfigError::new(name, with_source(message, md, &[name])));
            None
        }
    }
}

/// `[upstreams.NAME]`: each named upstream deserialized alone, in name order.
fn upstreams(
    figment: &Figment,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<(String, Option<RawUpstream>)>> {
    let names: Vec<String> = match figment.find_value("upstreams") {
        Err(_) => return Some(Vec::new()),
        Ok(Value::Dict(_, dict)) => dict.keys().cloned().collect(),
        Ok(other) => {
            let message = format!(
                "expected a table of upstreams ([upstreams.NAME]), found {}",
                kind_of(&other)
            );
            let md = figment.find_metadata("upstreams");
            errors.push(ConfigError::new(
                "upstreams",
                with_source(message, md, &["upstreams"]),
            ));
            return None;
        }
    };
    let upstreams = names
        .into_iter()
        .map(|name| {
            let key = format!("upstreams.{name}");
            // A name holding a dot would read as a nested key: it cannot be focused.
            let section = match name.contains('.') {
                true => None,
                false => section::<RawUpstream>(figment, &key, errors),
            };
            (name, section)
        })
        .collect();
    Some(upstreams)
}

/// `[providers.NAME]` (and any other table of named sections): each deserialized alone, in
/// name order.
fn named<T: DeserializeOwned + Default>(
    figment: &Figment,
    table: &str,
    what: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Vec<(String, Option<T>)>> {
    let names: Vec<String> = match figment.find_value(table) {
        Err(_) => return Some(Vec::new()),
        Ok(Value::Dict(_, dict)) => dict.keys().cloned().collect(),
        Ok(other) => {
            let message = format!("expected a table of {what}, found {}", kind_of(&other));
            let md = figment.find_metadata(table);
            errors.push(ConfigError::new(table, with_source(message, md, &[table])));
            return None;
        }
    };
    let sections = names
        .into_iter()
        .map(|name| {
            let key = format!("{table}.{name}");
            // A name holding a dot would read as a nested key: it cannot be focused.
            let section = match name.contains('.') {
                true => None,
                false => section::<T>(figment, &key, errors),
            };
            (name, section)
        })
        .collect();
    Some(sections)
}

/// `[[route]]`: each element deserialized alone, so one bad route hides no other.
fn routes(figment: &Figment, errors: &mut Vec<ConfigError>) -> Option<Vec<Option<RawRoute>>> {
    let items = match figment.find_value("route") {
        Err(_) => return Some(Vec::new()),
        Ok(Value::Array(_, items)) => items,
        Ok(other) => {
            let message = format!(
                "expected an array of tables ([[route]]), found {}",
                kind_of(&other)
            );
            let md = figment.find_metadata("route");
            errors.push(ConfigError::new(
                "route",
                with_source(message, md, &["route"]),
            ));
            return None;
        }
    };
    let routes = items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            <RawRoute as serde::Deserialize>::deserialize(item).map_err(|e| {
                let md = figment.get_metadata(item.tag());
                let name = format!("route[{i}]");
                let one = |e: figment::Error| -> Vec<ConfigError> {
                    (e.into_iter())
                        .map(|err| {
                            let key = format!("{name}{}", suffix(&err.path));
                            let message = with_source(message_of(&err.kind), md, &["route"]);
                            ConfigError::new(key, message)
                        })
                        .collect()
                };
                let each = match item {
                    Value::Dict(tag, dict) => each_key::<RawRoute>(*tag, dict, one, &name),
                    _ => Vec::new(),
                };
                errors.extend(if each.is_empty() { one(e) } else { each });
            })
        })
        .map(Result::ok)
        .collect();
    Some(routes)
}

/// The errors of a table's keys, each key deserialized alone into `T` (whose fields all have
/// defaults); `to_errors` turns one deserialization error into keyed errors (an error that
/// names no key is put under `table.key`).
fn each_key<T: DeserializeOwned>(
    tag: figment::value::Tag,
    dict: &Dict,
    to_errors: impl Fn(figment::Error) -> Vec<ConfigError>,
    table: &str,
) -> Vec<ConfigError> {
    let mut out = Vec::new();
    for (key, value) in dict {
        let alone = Value::Dict(tag, Dict::from([(key.clone(), value.clone())]));
        if let Err(e) = T::deserialize(&alone) {
            for mut error in to_errors(e) {
                if error.key == table {
                    error.key = format!("{table}.{key}");
                }
                out.push(error);
            }
        }
    }
    out
}

/// serde's message, with the nearest known key suggested for an unknown one.
fn message_of(kind: &figment::error::Kind) -> String {
    if let figment::error::Kind::UnknownField(found, expected) = kind
        && let Some(near) = nearest(found, expected)
    {
        return format!("unknown field `{found}` (did you mean `{near}`?)");
    }
    kind.to_string().trim_end().to_owned()
}

/// The candidate closest to `typo` when it is close enough to be what was meant: at most a
/// third of its length in edits (at least 1, at most 3).
fn nearest<'a>(typo: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let budget = (typo.chars().count() / 3).clamp(1, 3);
    (candidates.iter())
        .map(|c| (edit_distance(typo, c), *c))
        .filter(|(d, _)| *d <= budget)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Every error of a figment error chain, as `ConfigError`s keyed under `prefix`.
fn convert(figment: &Figment, error: figment::Error, prefix: &[&str]) -> Vec<ConfigError> {
    error
        .into_iter()
        .map(|err| {
            let path: Vec<&str> = prefix
                .iter()
                .copied()
                .chain(err.path.iter().map(String::as_str))
                .collect();
            let key = if path.is_empty() {
                ROOT_KEY.to_owned()
            } else {
                path.join(".")
            };
            // The value's own provider (file or env) when the key exists; else the error's.
            let md = figment
                .find_metadata(&key)
                .filter(|_| !path.is_empty())
                .or(err.metadata.as_ref());
            // Some messages (I/O, TOML syntax) end with a newline: keep one error a line.
            let message = message_of(&err.kind);
            ConfigError::new(key.clone(), with_source(message, md, &path))
        })
        .collect()
}

/// Appends "in environment variable AUTHGATE_X__Y" to validation errors whose value came from
/// the environment: the file then shows another value, and the user must know where to look.
pub(crate) fn name_env_sources(figment: &Figment, errors: &mut [ConfigError]) {
    for error in errors {
        // `server.trusted_proxies[1]` -> `server.trusted_proxies`: figment has no indices.
        let key = error.key.split('[').next().unwrap_or_default();
        let Some(md) = figment.find_metadata(key) else {
            continue;
        };
        if md.name == ENV_SOURCE_NAME {
            let path: Vec<&str> = key.split('.').collect();
            error.message = with_source(std::mem::take(&mut error.message), Some(md), &path);
        }
    }
}

/// `message in <where the value came from>`.
fn with_source(message: String, md: Option<&Metadata>, path: &[&str]) -> String {
    let Some(md) = md else {
        return message;
    };
    if md.name == ENV_SOURCE_NAME {
        return format!("{message} in {ENV_SOURCE_NAME} {}", variable_name(path));
    }
    match &md.source {
        Some(source) => format!("{message} in {source} {}", md.name),
        None => format!("{message} in {}", md.name),
    }
}

/// `[a, b]` path suffix for a route element's error: `.match`, `.require_claims.x`.
fn suffix(path: &[String]) -> String {
    path.iter().map(|p| format!(".{p}")).collect()
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::String(..) | Value::Char(..) => "a string",
        Value::Bool(..) => "a boolean",
        Value::Num(..) => "a number",
        Value::Empty(..) => "an empty value",
        Value::Dict(..) => "a table",
        Value::Array(..) => "an array",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_key_is_suggested_only_when_close() {
        let keys = ["idle_timeout", "max_connections", "listen", "public_url"];
        assert_eq!(nearest("idle_timout", &keys), Some("idle_timeout"));
        assert_eq!(nearest("listn", &keys), Some("listen"));
        assert_eq!(nearest("max_conections", &keys), Some("max_connections"));
        assert_eq!(nearest("publicurl", &keys), Some("public_url"));
        assert_eq!(nearest("colour", &keys), None);
        assert_eq!(nearest("x", &keys), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("é", "e"), 1);
    }
}
