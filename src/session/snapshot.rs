//! The memory store's snapshot file (`session.snapshot_file`): the live sessions written at
//! shutdown, after the drain, and read back at start before the first request is served, so
//! a restart without Redis logs nobody out.
//!
//! Every record is sealed with AES-256-GCM under a key derived by HKDF from the cookie
//! secrets (`crate::seal`, under a label of its own): the first secret seals, every
//! configured one opens, so a file written before a rotation still reads; a file sealed
//! with secrets no longer configured does not open and is ignored. The layout:
//!
//! ```text
//! MAGIC (8 bytes: "AGSNAP" 0x00 VERSION)
//! file id (16 random bytes)
//! per session: length (u32 BE, at most MAX_RECORD) | sealed(key || last seen (u64 BE) || record)
//! END (u32 BE 0xFFFF_FFFF) | sealed(number of sessions, u64 BE)
//! ```
//!
//! Each seal is bound (associated data) to the file id and the record's index, the end
//! marker to the file id and the count: records cannot be moved, dropped, repeated or mixed
//! in from another file, and a file cut short lacks its end. Any such fault makes the whole
//! file unreadable: it is logged and ignored, and the gateway starts with no sessions.
//!
//! The file is written to a temporary file beside it (mode 0600), fsync'd, renamed over
//! the old one, and the directory fsync'd. After a successful read it is removed: a
//! session signed out later must not come back from an old file after a crash (which
//! writes no new one).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use super::identity::IdentityRules;
use super::memory::MemoryStore;
use super::redis::codec::{decode_session, encode_session};
use super::{Session, SessionKey};
use crate::seal::Keyring;
use crate::secret::Secret;

const VERSION: u8 = 1;
const MAGIC: [u8; 8] = [b'A', b'G', b'S', b'N', b'A', b'P', 0, VERSION];
const END: u32 = u32::MAX;
/// Largest sealed record read back: a session holds a few tokens and claims.
const MAX_RECORD: u32 = 1 << 20;

/// Why a snapshot file was not read (logged; the gateway starts without its sessions).
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot read the file: {0}")]
    Io(#[from] io::Error),
    #[error("not a session snapshot of this version")]
    Format,
    #[error("the file ends early (truncated)")]
    Truncated,
    #[error(
        "a record does not open with the configured cookie secrets (other secrets, or a damaged file)"
    )]
    Sealed,
    #[error("a record opens but does not decode")]
    Record,
    #[error("no cookie secret configured")]
    NoKey,
}

/// What one write or read did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStats {
    /// Sessions written, or read back and still live.
    pub sessions: usize,
    /// Size of the file.
    pub bytes: u64,
}

/// Write every live session of `store` to `path` (atomically, mode 0600).
/// `rules`: how records name their provider and claims (as the Redis store writes them).
pub fn write(
    store: &MemoryStore,
    secrets: &[Secret<Vec<u8>>],
    rules: &IdentityRules,
    path: &Path,
) -> Result<SnapshotStats, SnapshotError> {
    let keys = Keyring::for_snapshot(secrets).ok_or(SnapshotError::NoKey)?;
    write_sessions(&keys, rules, path, store.live_sessions())
}

fn write_sessions(
    keys: &Keyring,
    rules: &IdentityRules,
    path: &Path,
    sessions: Vec<(SessionKey, Arc<Session>)>,
) -> Result<SnapshotStats, SnapshotError> {
    let tmp = temporary_path(path);
    let result = write_file(keys, rules, &tmp, sessions);
    let stats = match result {
        Ok(stats) => stats,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(e.into());
    }
    // The rename itself is durable once the directory is.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = File::open(dir).and_then(|d| d.sync_all());
    }
    Ok(stats)
}

fn write_file(
    keys: &Keyring,
    rules: &IdentityRules,
    tmp: &Path,
    sessions: Vec<(SessionKey, Arc<Session>)>,
) -> Result<SnapshotStats, SnapshotError> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let file = options.open(tmp)?;
    let mut out = BufWriter::with_capacity(1 << 16, file);
    let file_id = super::new_key();
    out.write_all(&MAGIC)?;
    out.write_all(&file_id)?;
    let mut bytes = (MAGIC.len() + file_id.len()) as u64;
    let mut count: u64 = 0;
    for (key, session) in sessions {
        // A record that cannot be encoded (never expected) is left out, not the file.
        let Some(record) = encode_session(&session, rules) else {
            continue;
        };
        let mut plain = Vec::with_capacity(16 + 8 + record.len());
        plain.extend_from_slice(&key);
        plain.extend_from_slice(&session.last_seen.get().to_be_bytes());
        plain.extend_from_slice(&record);
        let sealed = keys
            .seal(&record_context(&file_id, count), 0, &plain)
            .ok_or(SnapshotError::Sealed)?;
        let len = u32::try_from(sealed.len())
            .ok()
            .filter(|&l| l <= MAX_RECORD)
            .ok_or(SnapshotError::Record)?;
        out.write_all(&len.to_be_bytes())?;
        out.write_all(&sealed)?;
        bytes += 4 + u64::from(len);
        count += 1;
    }
    let end = keys
        .seal(&end_context(&file_id), 0, &count.to_be_bytes())
        .ok_or(SnapshotError::Sealed)?;
    out.write_all(&END.to_be_bytes())?;
    out.write_all(&end)?;
    bytes += 4 + end.len() as u64;
    let file = out.into_inner().map_err(io::IntoInnerError::into_error)?;
    file.sync_all()?;
    Ok(SnapshotStats {
        sessions: usize::try_from(count).unwrap_or(usize::MAX),
        bytes,
    })
}

/// Read `path` back into `store`, then remove the file. Nothing is put in the store unless
/// the whole file reads.
pub async fn restore(
    store: &MemoryStore,
    secrets: &[Secret<Vec<u8>>],
    rules: &IdentityRules,
    path: &Path,
) -> Result<SnapshotStats, SnapshotError> {
    let keys = Keyring::for_snapshot(secrets).ok_or(SnapshotError::NoKey)?;
    let file = File::open(path)?;
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let sessions = read_sessions(&keys, rules, BufReader::with_capacity(1 << 16, file))?;
    let kept = store.restore(sessions).await;
    // Read once: see the module doc.
    let _ = fs::remove_file(path);
    Ok(SnapshotStats {
        sessions: kept,
        bytes,
    })
}

fn read_sessions(
    keys: &Keyring,
    rules: &IdentityRules,
    mut input: impl Read,
) -> Result<Vec<(SessionKey, Session)>, SnapshotError> {
    let mut magic = [0u8; MAGIC.len()];
    read_exact(&mut input, &mut magic)?;
    if magic != MAGIC {
        return Err(SnapshotError::Format);
    }
    let mut file_id = [0u8; 16];
    read_exact(&mut input, &mut file_id)?;
    let mut sessions = Vec::new();
    let mut buf = Vec::new();
    loop {
        let mut len = [0u8; 4];
        read_exact(&mut input, &mut len)?;
        let len = u32::from_be_bytes(len);
        if len == END {
            let mut end = Vec::new();
            input.read_to_end(&mut end)?;
            let (count, _) = keys
                .open(&end_context(&file_id), &end)
                .ok_or(SnapshotError::Sealed)?;
            if count != (sessions.len() as u64).to_be_bytes() {
                return Err(SnapshotError::Truncated);
            }
            return Ok(sessions);
        }
        if len > MAX_RECORD {
            return Err(SnapshotError::Format);
        }
        buf.resize(len as usize, 0);
        read_exact(&mut input, &mut buf)?;
        let index = sessions.len() as u64;
        let (plain, _) = keys
            .open(&record_context(&file_id, index), &buf)
            .ok_or(SnapshotError::Sealed)?;
        sessions.push(decode(&plain, rules).ok_or(SnapshotError::Record)?);
    }
}

fn decode(plain: &[u8], rules: &IdentityRules) -> Option<(SessionKey, Session)> {
    let key: SessionKey = plain.get(..16)?.try_into().ok()?;
    let seen = u64::from_be_bytes(plain.get(16..24)?.try_into().ok()?);
    let session = decode_session(plain.get(24..)?, rules)?;
    session.last_seen.set(seen);
    Some((key, session))
}

/// `read_exact`, an early end of file being [`SnapshotError::Truncated`].
fn read_exact(input: &mut impl Read, buf: &mut [u8]) -> Result<(), SnapshotError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => SnapshotError::Truncated,
        _ => SnapshotError::Io(e),
    })
}

fn record_context(file_id: &[u8; 16], index: u64) -> Vec<u8> {
    let mut context = Vec::with_capacity(16 + 8 + 1);
    context.extend_from_slice(file_id);
    context.push(b'r');
    context.extend_from_slice(&index.to_be_bytes());
    context
}

fn end_context(file_id: &[u8; 16]) -> Vec<u8> {
    let mut context = Vec::with_capacity(16 + 1);
    context.extend_from_slice(file_id);
    context.push(b'e');
    context
}

fn temporary_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".tmp-{}", std::process::id()));
    path.with_file_name(name)
}

/// At start: read the snapshot back into the memory store, logging what happened. A file
/// that does not read is logged and left alone (the start goes on without its sessions).
pub async fn restore_at_start(
    store: &MemoryStore,
    secrets: &[Secret<Vec<u8>>],
    rules: &IdentityRules,
    path: &Path,
) {
    let started = Instant::now();
    match restore(store, secrets, rules, path).await {
        Ok(stats) => tracing::info!(
            path = %path.display(),
            sessions = stats.sessions,
            bytes = stats.bytes,
            elapsed = ?started.elapsed(),
            "sessions read back from the snapshot file"
        ),
        Err(SnapshotError::Io(e)) if e.kind() == io::ErrorKind::NotFound => tracing::info!(
            path = %path.display(),
            "no session snapshot file: starting with no sessions"
        ),
        Err(e) => tracing::error!(
            path = %path.display(),
            error = %e,
            "session snapshot file ignored: starting with no sessions"
        ),
    }
}

/// At shutdown, after the drain: write the live sessions, logging what happened.
pub fn write_at_shutdown(
    store: &MemoryStore,
    secrets: &[Secret<Vec<u8>>],
    rules: &IdentityRules,
    path: &Path,
) {
    let started = Instant::now();
    match write(store, secrets, rules, path) {
        Ok(stats) => tracing::info!(
            path = %path.display(),
            sessions = stats.sessions,
            bytes = stats.bytes,
            elapsed = ?started.elapsed(),
            "sessions written to the snapshot file"
        ),
        Err(e) => tracing::error!(
            path = %path.display(),
            error = %e,
            "cannot write the session snapshot file: sessions are lost with this restart"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_marker_is_bound_to_its_file() {
        let a = [1u8; 16];
        let b = [2u8; 16];
        assert_ne!(end_context(&a), end_context(&b));
        assert_ne!(record_context(&a, 0), record_context(&a, 1));
        assert_ne!(temporary_path(Path::new("/x/s")), PathBuf::from("/x/s"));
    }
}
