//! The revocation envelope: with the admin API on (`server.admin_listen`), a record's value
//! carries, besides the sealed record, the session's current refresh token and the name of its
//! provider, sealed under keys of their own ([`Keyring::for_revocation`], derived from the
//! cookie secrets under another HKDF label) and bound to the record's Redis key. The admin API
//! has no session id, so it cannot open a record; it opens the envelope of each record it
//! deletes and revokes that refresh token at the session's provider (RFC 7009), as sign-out
//! does.
//!
//! Why the cookie secrets and not the admin token: the admin token travels in every admin call
//! (plain HTTP), the cookie secrets never leave the process and every replica already has
//! them. The trade-off: whoever holds a Redis dump AND a cookie secret can read the refresh
//! tokens of live sessions (not their access tokens, not the rest of the record). With the
//! admin API off nothing of this is written.
//!
//! Value layouts (the first byte tells them apart; both keep the plain deadline at bytes
//! 1..9, where the load script and the listing read it):
//! - `[1][deadline][nonce][ciphertext || tag]`: the record alone (`crate::seal`), as always;
//!   what a replica with the admin API off writes, and every record written before envelopes
//!   existed;
//! - `[2][deadline][envelope length: u32 BE][envelope][nonce][ciphertext || tag]`: the record
//!   sealed exactly as in layout 1 (its version byte inside the associated data stays 1), with
//!   the envelope appended to its associated data, so an envelope cannot be stripped, swapped or
//!   corrupted without the record failing to open (treated as absent: fail closed). The envelope
//!   is itself `crate::seal`'s layout over `{"rt": <refresh token>, "prov": <provider name,
//!   absent for [oidc]>}`, with the record's Redis key as associated data (an envelope moved
//!   under another record does not open).
//!
//! A replica of a version before envelopes reads a layout-2 value as no session (its version
//! byte is unknown to it): during a rolling upgrade with the admin API on, a session written by
//! a new replica sends its browser to login when it reaches an old one.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::config::ProviderId;
use crate::seal::Keyring;
use crate::session::Session;
use crate::session::identity::IdentityRules;

/// The first byte of a value that carries an envelope.
const WITH_ENVELOPE: u8 = 2;
/// The first byte of `crate::seal`'s layout.
const SEALED: u8 = 1;
/// Version byte and deadline.
const HEADER_LEN: usize = 9;
/// Associated data of an envelope, followed by the record's Redis key.
const ENVELOPE_CONTEXT: &[u8] = b"authgate revocation envelope\0";
/// Appended to a record's associated data before its envelope.
const RECORD_CONTEXT: &[u8] = b"\0envelope\0";

/// What an envelope holds: a session's refresh token, and its provider.
pub struct Envelope {
    pub provider: ProviderId,
    pub refresh_token: String,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    rt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prov: Option<String>,
}

/// The envelope of `session` for the record called `name`, sealed under `keys`; `None` when
/// the session has no refresh token (nothing to revoke) or names no known provider.
pub fn seal(
    keys: &Keyring,
    name: &str,
    deadline: u64,
    session: &Session,
    rules: &IdentityRules,
) -> Option<Vec<u8>> {
    let rt = session.tokens.refresh_token.as_deref()?.to_owned();
    let prov = match session.provider.is_default() {
        true => None,
        false => Some(rules.provider_name(session.provider)?.to_owned()),
    };
    let plain = serde_json::to_vec(&Stored { rt, prov }).ok()?;
    keys.seal(&envelope_context(name), deadline, &plain)
}

/// The associated data of a record: the store's `context`, then the envelope when there is
/// one.
pub fn record_context(context: &[u8], envelope: Option<&[u8]>) -> Vec<u8> {
    match envelope {
        None => context.to_vec(),
        Some(envelope) => [context, RECORD_CONTEXT, envelope].concat(),
    }
}

/// The value to store: `record` (sealed in layout 1 with [`record_context`]) alone, or after
/// `envelope` in layout 2.
pub fn frame(record: Vec<u8>, envelope: Option<&[u8]>) -> Option<Vec<u8>> {
    let Some(envelope) = envelope else {
        return Some(record);
    };
    let (header, body) = (record.get(..HEADER_LEN)?, record.get(HEADER_LEN..)?);
    let length = u32::try_from(envelope.len()).ok()?;
    let mut out = Vec::with_capacity(record.len() + 4 + envelope.len());
    out.push(WITH_ENVELOPE);
    out.extend_from_slice(header.get(1..)?);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(envelope);
    out.extend_from_slice(body);
    Some(out)
}

/// A stored value taken apart: the record in layout 1 (to open with [`record_context`]) and
/// its envelope, if any. A value of an unknown layout comes back whole (it will not open).
pub fn split(value: &[u8]) -> (Cow<'_, [u8]>, Option<&[u8]>) {
    match parse(value) {
        Some((deadline, envelope, body)) => {
            let mut record = Vec::with_capacity(HEADER_LEN + body.len());
            record.push(SEALED);
            record.extend_from_slice(deadline);
            record.extend_from_slice(body);
            (Cow::Owned(record), Some(envelope))
        }
        None => (Cow::Borrowed(value), None),
    }
}

/// The envelope of the value stored under `name`, opened: `None` when there is none (written
/// with the admin API off, or by an older version), or it does not open (another secret,
/// tampered) or names a provider the configuration no longer has.
pub fn open(keys: &Keyring, name: &str, value: &[u8], rules: &IdentityRules) -> Option<Envelope> {
    let (_, envelope, _) = parse(value)?;
    let (plain, _) = keys.open(&envelope_context(name), envelope)?;
    let stored: Stored = serde_json::from_slice(&plain).ok()?;
    let provider = match &stored.prov {
        None => ProviderId::DEFAULT,
        Some(name) => rules.provider_id(name)?,
    };
    Some(Envelope {
        provider,
        refresh_token: stored.rt,
    })
}

/// Layout 2: (deadline bytes, envelope, the record's nonce and ciphertext).
fn parse(value: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    if value.first() != Some(&WITH_ENVELOPE) {
        return None;
    }
    let deadline = value.get(1..HEADER_LEN)?;
    let length = u32::from_be_bytes(value.get(HEADER_LEN..HEADER_LEN + 4)?.try_into().ok()?);
    let start = HEADER_LEN + 4;
    let end = start.checked_add(usize::try_from(length).ok()?)?;
    Some((deadline, value.get(start..end)?, value.get(end..)?))
}

fn envelope_context(name: &str) -> Vec<u8> {
    [ENVELOPE_CONTEXT, name.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn keys(byte: u8) -> (Keyring, Keyring) {
        let secrets = vec![Secret::new(vec![byte; 32])];
        (
            Keyring::new(&secrets).unwrap(),
            Keyring::for_revocation(&secrets).unwrap(),
        )
    }

    /// A layout-2 value opens as its record and its envelope; the envelope binds the record,
    /// and the record's key binds the envelope.
    #[test]
    fn framing_roundtrip_and_bindings() {
        let (records, envelopes) = keys(1);
        let plain = br#"{"rt":"rt-1"}"#;
        let envelope = envelopes.seal(&envelope_context("s:a"), 77, plain).unwrap();
        let context = record_context(b"session\0id", Some(&envelope));
        let record = records.seal(&context, 77, b"record").unwrap();
        let value = frame(record.clone(), Some(&envelope)).unwrap();
        assert_eq!(value[0], WITH_ENVELOPE);
        assert_eq!(
            value[1..9],
            record[1..9],
            "the deadline stays at bytes 1..9"
        );
        let (back, found) = split(&value);
        assert_eq!(found, Some(envelope.as_slice()));
        assert_eq!(back.as_ref(), record.as_slice());
        assert_eq!(records.open(&context, &back).unwrap().0, b"record");
        // Stripped of its envelope, the record does not open.
        assert!(records.open(b"session\0id", &back).is_none());
        // A replica of a version before envelopes opens a value so (`Keyring::open` with the
        // session context): a layout-2 value is no session to it, never a panic.
        assert!(records.open(b"session\0id", &value).is_none());
        assert!(records.open(&context, &value).is_none());
        let rules = crate::session::identity::IdentityRules::new(
            &crate::config::HeadersConfig {
                authorization_bearer: true,
                user: None,
                email: None,
                preferred_username: None,
                groups: None,
                groups_claim: "groups".into(),
                claims: Vec::new(),
            },
            [],
        );
        let opened = open(&envelopes, "s:a", &value, &rules).unwrap();
        assert_eq!(opened.refresh_token, "rt-1");
        assert_eq!(opened.provider, ProviderId::DEFAULT);
        assert!(
            open(&envelopes, "s:b", &value, &rules).is_none(),
            "other key"
        );
        assert!(
            open(&keys(2).1, "s:a", &value, &rules).is_none(),
            "other secret"
        );
        assert!(
            open(&records, "s:a", &value, &rules).is_none(),
            "record keys"
        );
        // Layout 1 has no envelope and comes back whole.
        assert!(open(&envelopes, "s:a", &record, &rules).is_none());
        let (whole, none) = split(&record);
        assert_eq!((whole.as_ref(), none), (record.as_slice(), None));
        // Truncated or garbled framing never panics.
        for cut in 0..value.len() {
            let _ = split(&value[..cut]);
            let _ = open(&envelopes, "s:a", &value[..cut], &rules);
        }
        let mut huge = value.clone();
        huge[9..13].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(open(&envelopes, "s:a", &huge, &rules).is_none());
        assert!(split(&huge).1.is_none());
    }
}
