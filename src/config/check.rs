//! Field parsers that record a keyed error instead of stopping: the building blocks of
//! `validate.rs`.
//!
//! Each parser returns `Option<T>`: `None` means an error was recorded under the key. Section
//! validators call every parser first and only then combine the options, so one bad value never
//! hides the next one.

use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use base64::Engine;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::HeaderName;
use ipnet::IpNet;
use url::Url;

use super::ConfigError;
use crate::secret::Secret;

/// Smallest decoded cookie secret (HMAC-SHA256 key: a full block of entropy).
pub(crate) const MIN_COOKIE_SECRET_BYTES: usize = 32;

/// Largest `max_connections` accepted (a listener or an upstream): far above what one
/// process can hold open, and within what tokio's semaphore counts.
pub(crate) const MAX_CONNECTIONS: usize = 1_000_000;

/// Collects every error of one validation run.
#[derive(Debug, Default)]
pub(crate) struct Checker {
    pub errors: Vec<ConfigError>,
    /// Every file read (secrets, CA and TLS files), for `server.watch_config`.
    pub files: Vec<PathBuf>,
}

impl Checker {
    pub fn error(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(key, message));
    }

    /// Records `Err` under `key` and turns the result into an option.
    pub fn check<T, E: Display>(&mut self, key: &str, result: Result<T, E>) -> Option<T> {
        result.map_err(|e| self.error(key, e.to_string())).ok()
    }

    /// A required key: records "missing" when absent.
    pub fn required<'a>(&mut self, key: &str, value: Option<&'a str>) -> Option<&'a str> {
        let value = value.filter(|v| !v.trim().is_empty());
        if value.is_none() {
            self.error(key, "is required but missing");
        }
        value
    }

    /// A humantime duration (`"30s"`, `"8h"`); `positive` rejects zero.
    pub fn duration(&mut self, key: &str, raw: &str, positive: bool) -> Option<Duration> {
        let parsed = humantime::parse_duration(raw.trim())
            .map_err(|e| format!("invalid duration {raw:?}: {e}"));
        let d = self.check(key, parsed)?;
        if positive && d.is_zero() {
            self.error(key, "must be greater than 0");
            return None;
        }
        Some(d)
    }

    /// An optional duration: `None` (unset or empty) stays `Some(None)`.
    pub fn opt_duration(&mut self, key: &str, raw: Option<&str>) -> Option<Option<Duration>> {
        match non_empty(raw) {
            None => Some(None),
            Some(raw) => self.duration(key, raw, true).map(Some),
        }
    }

    /// A count that must be at least 1.
    pub fn positive<T: PartialEq + Default + Copy>(&mut self, key: &str, n: T) -> Option<T> {
        if n == T::default() {
            self.error(key, "must be greater than 0");
            return None;
        }
        Some(n)
    }

    /// A bound on open connections: from 1 to [`MAX_CONNECTIONS`].
    pub fn connection_count(&mut self, key: &str, n: usize) -> Option<usize> {
        if !(1..=MAX_CONNECTIONS).contains(&n) {
            self.error(key, format!("must be between 1 and {MAX_CONNECTIONS}"));
            return None;
        }
        Some(n)
    }

    /// One of a fixed set of words, case-insensitively.
    pub fn choice<T: Copy>(&mut self, key: &str, raw: &str, options: &[(&str, T)]) -> Option<T> {
        let found = options
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(raw.trim()));
        if found.is_none() {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            self.error(
                key,
                format!("must be one of {}, got {raw:?}", names.join(", ")),
            );
        }
        found.map(|(_, v)| *v)
    }

    pub fn socket_addr(&mut self, key: &str, raw: &str) -> Option<SocketAddr> {
        let parsed = raw.trim().parse::<SocketAddr>().map_err(|e| {
            format!("invalid socket address {raw:?} (expected ip:port, e.g. 0.0.0.0:4180): {e}")
        });
        self.check(key, parsed)
    }

    /// An absolute `http(s)://` URL; messages never repeat the value when `secret`.
    pub fn url(&mut self, key: &str, raw: &str, schemes: &[&str], secret: bool) -> Option<Url> {
        let shown = if secret {
            String::new()
        } else {
            format!(" {raw:?}")
        };
        let url = match Url::parse(raw.trim()) {
            Ok(url) => url,
            Err(e) => {
                self.error(key, format!("invalid URL{shown}: {e}"));
                return None;
            }
        };
        if !schemes.contains(&url.scheme()) {
            let expected = schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>();
            self.error(key, format!("must start with {}", expected.join(" or ")));
            return None;
        }
        if url.host_str().is_none_or(str::is_empty) {
            self.error(key, format!("URL{shown} has no host"));
            return None;
        }
        Some(url)
    }

    /// Like `url`, then no query and no fragment (an origin or base path).
    pub fn base_url(&mut self, key: &str, raw: &str) -> Option<Url> {
        let url = self.url(key, raw, &["http", "https"], false)?;
        if url.query().is_some() || url.fragment().is_some() {
            self.error(key, format!("{raw:?} must not have a query or a fragment"));
            return None;
        }
        Some(url)
    }

    /// A CIDR, or a bare IP meaning that single address (/32 or /128).
    pub fn cidr(&mut self, key: &str, raw: &str) -> Option<IpNet> {
        let raw = raw.trim();
        if let Ok(net) = raw.parse::<IpNet>() {
            return Some(net);
        }
        if let Ok(ip) = raw.parse::<IpAddr>() {
            return Some(IpNet::from(ip));
        }
        self.error(key, format!("not an IP address or CIDR: {raw:?}"));
        None
    }

    /// An HTTP header name (RFC 9110 token).
    pub fn header_name(&mut self, key: &str, raw: &str) -> Option<HeaderName> {
        let parsed = HeaderName::from_bytes(raw.trim().as_bytes())
            .map_err(|_| format!("invalid header name {raw:?}"));
        self.check(key, parsed)
    }

    /// A file that must be readable now (its contents are parsed later, e.g. PEM at start).
    pub fn readable_file(&mut self, key: &str, raw: &str) -> Option<PathBuf> {
        let path = PathBuf::from(raw);
        self.read_file(key, raw)?;
        Some(path)
    }

    /// The trimmed contents of a `*_file` secret.
    pub fn secret_file(&mut self, key: &str, path: &str) -> Option<String> {
        let contents = self.read_file(key, path)?;
        let value = contents.trim();
        if value.is_empty() {
            self.error(key, format!("file {path:?} is empty"));
            return None;
        }
        Some(value.to_owned())
    }

    fn read_file(&mut self, key: &str, path: &str) -> Option<String> {
        self.files.push(PathBuf::from(path));
        let read = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path:?}: {e}"));
        self.check(key, read)
    }

    /// `x` inline or `x_file`: the value (`Some(None)` when neither), or an error for both.
    pub fn inline_or_file(
        &mut self,
        key: &str,
        inline: Option<&str>,
        file: Option<&str>,
    ) -> Option<Option<String>> {
        match (non_empty(inline), non_empty(file)) {
            (Some(_), Some(_)) => {
                self.error(key, format!("set either {key} or {key}_file, not both"));
                None
            }
            (Some(v), None) => Some(Some(v.to_owned())),
            (None, Some(path)) => self.secret_file(&format!("{key}_file"), path).map(Some),
            (None, None) => Some(None),
        }
    }

    /// A cookie signing key: standard or URL-safe base64, padding optional, >= 32 bytes.
    /// The messages never contain the secret (nor a byte of it: base64 errors quote one).
    pub fn cookie_secret(&mut self, key: &str, raw: &str) -> Option<Secret<Vec<u8>>> {
        let Some(bytes) = decode_base64(raw.trim()) else {
            self.error(
                key,
                "not valid base64 (standard or URL-safe alphabet, padding optional)",
            );
            return None;
        };
        if bytes.len() < MIN_COOKIE_SECRET_BYTES {
            let message = format!(
                "must decode to at least {MIN_COOKIE_SECRET_BYTES} bytes, got {}",
                bytes.len()
            );
            self.error(key, message);
            return None;
        }
        Some(Secret::new(bytes))
    }
}

/// `Some(s)` for a set, non-blank value.
pub(crate) fn non_empty(value: Option<&str>) -> Option<&str> {
    value.filter(|v| !v.trim().is_empty())
}

fn decode_base64(raw: &str) -> Option<Vec<u8>> {
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    [alphabet::STANDARD, alphabet::URL_SAFE]
        .iter()
        .find_map(|alphabet| GeneralPurpose::new(alphabet, config).decode(raw).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_error(raw: &str) -> String {
        let mut c = Checker::default();
        assert!(c.cookie_secret("k", raw).is_none());
        c.errors[0].to_string()
    }

    #[test]
    fn cookie_secret_alphabets_and_padding() {
        let mut c = Checker::default();
        let bytes: Vec<u8> = (0..=255u8).take(33).map(|b| b.wrapping_mul(251)).collect();
        for engine in [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ] {
            let s = c.cookie_secret("k", &engine.encode(&bytes)).unwrap();
            assert_eq!(s.expose(), &bytes);
        }
        assert!(c.errors.is_empty(), "{:?}", c.errors);
    }

    #[test]
    fn cookie_secret_errors_hide_the_value() {
        assert_eq!(
            secret_error("c2hvcnQgc2VjcmV0Pz8"),
            "k: must decode to at least 32 bytes, got 14"
        );
        let e = secret_error("not*base64*at*all");
        assert!(e.starts_with("k: not valid base64"), "{e}");
        assert!(!e.contains("not*base64"), "{e}");
    }

    #[test]
    fn durations() {
        let mut c = Checker::default();
        assert_eq!(
            c.duration("d", "8h", true),
            Some(Duration::from_secs(8 * 3600))
        );
        assert_eq!(c.duration("d", "0s", false), Some(Duration::ZERO));
        assert_eq!(c.duration("d", "0s", true), None);
        assert_eq!(c.duration("d", "soon", true), None);
        assert_eq!(c.errors[0].to_string(), "d: must be greater than 0");
        assert!(
            c.errors[1]
                .to_string()
                .starts_with("d: invalid duration \"soon\"")
        );
    }

    #[test]
    fn cidrs() {
        let mut c = Checker::default();
        assert_eq!(c.cidr("k", "10.0.0.1").unwrap().to_string(), "10.0.0.1/32");
        assert_eq!(c.cidr("k", "::1").unwrap().to_string(), "::1/128");
        assert_eq!(c.cidr("k", "10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert!(c.cidr("k", "10.0.0.0/33").is_none());
    }

    #[test]
    fn urls() {
        let mut c = Checker::default();
        assert!(c.base_url("k", "ftp://x").is_none());
        assert!(c.base_url("k", "https://x/?a=1").is_none());
        assert!(c.base_url("k", "https://x/#f").is_none());
        assert!(c.url("k", "redis://:pw@h", &["redis"], true).is_some());
        assert!(c.url("k", "nope://:pw@h", &["redis"], true).is_none());
        assert!(c.errors.iter().all(|e| !e.message.contains("pw")));
    }
}
