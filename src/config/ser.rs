//! How the typed config prints: the `serialize_with` helpers of its `Serialize` derive.
//!
//! `authgate check` prints [`Config`](super::Config) serialized to TOML (`Config::redacted_toml`):
//! the effective values (defaults filled in, `*_file` secrets resolved) under the file's keys,
//! so the printout reads like a config file and loads back as one. Secrets redact themselves
//! (`Secret<T>` serializes as `[redacted]`). These helpers print every other value the way
//! the file writes it, and never fail: the printout of a valid config is total.

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use http::HeaderName;
use serde::Serializer;

/// Any value as its `Display` text (URLs, socket addresses, methods, CIDRs).
pub(crate) fn display<T: Display, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

/// An optional value as its `Display` text; pair with `skip_serializing_if = "Option::is_none"`.
pub(crate) fn opt_display<T: Display, S: Serializer>(
    value: &Option<T>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(v) => s.collect_str(v),
        None => s.serialize_none(),
    }
}

/// A list of strings, each item's `Display` text.
pub(crate) fn display_list<T: Display, S: Serializer>(
    items: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(items.iter().map(ToString::to_string))
}

/// A path as text; a non-UTF-8 path prints lossily rather than failing the whole printout.
pub(crate) fn path<P: AsRef<Path>, S: Serializer>(p: &P, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&p.as_ref().display())
}

pub(crate) fn opt_path<P: AsRef<Path>, S: Serializer>(
    p: &Option<P>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match p {
        Some(p) => path(p, s),
        None => s.serialize_none(),
    }
}

/// A duration in humantime, as the file writes it (`"8h"`, `"1m 30s"`).
pub(crate) fn duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

pub(crate) fn opt_duration<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => duration(d, s),
        None => s.serialize_none(),
    }
}

/// A count. TOML integers are i64 and every count is far below `i64::MAX`, but an environment
/// value may not be: saturate rather than fail the printout.
pub(crate) fn count<N: Copy + TryInto<i64>, S: Serializer>(n: &N, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_i64((*n).try_into().unwrap_or(i64::MAX))
}

/// A header that can be disabled: `None` prints as `""`, as the file disables it.
pub(crate) fn header_or_empty<S: Serializer>(
    name: &Option<HeaderName>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(name.as_ref().map_or("", HeaderName::as_str))
}

/// An optional string where the file writes "unset" as `""` (`cookie_domain`).
pub(crate) fn string_or_empty<S: Serializer>(
    value: &Option<String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.as_deref().unwrap_or(""))
}

/// Ordered `(key, value)` pairs as a table (`[headers.claims]`, `extra_auth_params`,
/// `require_claims`); pair with `skip_serializing_if = "Vec::is_empty"`, or an empty one
/// would print as a bare `[section.name]` header.
pub(crate) fn table<K: Display, V: serde::Serialize, S: Serializer>(
    pairs: &[(K, V)],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_map(pairs.iter().map(|(k, v)| (k.to_string(), v)))
}
