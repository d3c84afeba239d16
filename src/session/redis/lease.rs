//! The cluster-wide refresh lease: one replica at a time calls the token endpoint for a
//! session.
//!
//! - Taken with `SET <prefix>lease:<hashed id> <random token> NX PX <lease>`.
//! - Renewed by a background task every lease/3 while the guard lives, with a
//!   compare-and-extend script: a provider slower than the lease must not let a second
//!   replica in (it would replay a rotated refresh token, and the provider would revoke the
//!   grant).
//! - Released on drop with a compare-and-delete script: only while it is still ours.
//! - A holder that dies (process killed, runtime gone) stops renewing: the lease expires and
//!   a waiting replica takes over. Waiting replicas poll every 50 ms, bounded by
//!   `oidc.refresh_timeout` + lease; past that the request is answered 503 (transient).

use std::time::{Duration, Instant};

use redis::Script;
use tokio::task::JoinHandle;

use super::RedisStore;
use super::conn::Conn;
use crate::session::{RefreshLease, SessionKey, StoreError};

const POLL: Duration = Duration::from_millis(50);

const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Holds the lease: renews it while alive, releases it when dropped.
struct LeaseGuard {
    conn: Conn,
    name: String,
    token: String,
    timeout: Duration,
    renew: JoinHandle<()>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renew.abort();
        // Without a runtime (it is shutting down) the lease simply expires.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (mut conn, name, token, timeout) = (
            self.conn.clone(),
            std::mem::take(&mut self.name),
            std::mem::take(&mut self.token),
            self.timeout,
        );
        handle.spawn(async move {
            let release = Script::new(RELEASE);
            let mut invocation = release.key(&name);
            invocation.arg(&token);
            let call = invocation.invoke_async::<i64>(&mut conn);
            if !matches!(tokio::time::timeout(timeout, call).await, Ok(Ok(_))) {
                tracing::debug!("refresh lease not released; it will expire");
            }
        });
    }
}

impl RedisStore {
    /// Take the lease of `key`, waiting while another replica holds it.
    pub(super) async fn take_lease(&self, key: &SessionKey) -> Result<RefreshLease, StoreError> {
        let inner = &self.inner;
        let name = inner.session_key("lease", key, &inner.session_hash(key));
        let token = random_token();
        let lease_ms = millis(inner.opts.lease);
        let started = Instant::now();
        let mut waited = false;
        loop {
            let mut set = redis::cmd("SET");
            set.arg(&name).arg(&token).arg("NX").arg("PX").arg(lease_ms);
            let taken: Option<String> = self.query_durable("SET NX (lease)", &set).await?;
            if taken.is_some() {
                // Sentinel: on a replica before the refresh starts, so a failover cannot
                // hand a second replica the same session's lease.
                self.replicated().await?;
                break;
            }
            waited = true;
            if started.elapsed() >= inner.opts.lease_wait {
                inner.metrics.lease_waited(started.elapsed(), false);
                return Err(StoreError::LeaseHeld);
            }
            tokio::time::sleep(POLL).await;
        }
        if waited {
            inner.metrics.lease_waited(started.elapsed(), true);
        }
        let renew = tokio::spawn(renew(
            inner.conn.durable(),
            name.clone(),
            token.clone(),
            inner.opts.lease,
            inner.opts.timeout,
        ));
        Ok(RefreshLease::guarded(Box::new(LeaseGuard {
            conn: inner.conn.durable(),
            name,
            token,
            timeout: inner.opts.timeout,
            renew,
        })))
    }
}

/// Extend the lease every lease/3 until aborted, or until it turns out not to be ours.
async fn renew(mut conn: Conn, name: String, token: String, lease: Duration, timeout: Duration) {
    let script = Script::new(RENEW);
    let every = lease / 3;
    loop {
        tokio::time::sleep(every).await;
        let mut invocation = script.key(&name);
        invocation.arg(&token).arg(millis(lease));
        let call = invocation.invoke_async::<i64>(&mut conn);
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(1)) => {}
            Ok(Ok(_)) => {
                tracing::warn!("refresh lease lost before the refresh finished");
                return;
            }
            // Redis slow or down: try again next period; the lease may still be alive.
            _ => tracing::debug!("refresh lease renewal failed"),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn random_token() -> String {
    let bytes = crate::session::new_key();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
