//! Time as every decision against a deadline reads it: session idle and absolute timeouts,
//! token expiry and refresh-ahead, refresh backoff, login cookie age, logout-token `iat`,
//! bearer `exp`/`nbf`, the JWKS refetch interval, and openidconnect's ID-token checks.
//!
//! Made once at start and handed to whoever compares against a deadline. Measurements
//! (latencies) and I/O timeouts read std/tokio time directly: they must follow real time.
//!
//! In production it is the system clock. Tests use [`Clock::adjustable`]: the system clock
//! plus a forward offset that [`ClockHand::advance`] moves, so a test of expiry advances time
//! instead of sleeping. Real time keeps flowing, so network timeouts and the provider keep
//! working; time only ever jumps forward.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The gateway's clock. Cheap to clone; the system clock unless made [`Clock::adjustable`].
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// Milliseconds added to the system clock (`None`: the system clock, one branch).
    offset_ms: Option<Arc<AtomicU64>>,
}

/// Moves an adjustable [`Clock`] (and every clone of it) forward.
#[derive(Debug, Clone)]
pub struct ClockHand(Arc<AtomicU64>);

// === impl Clock ===

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock::default()
    }

    /// A clock that [`ClockHand::advance`] moves forward (tests and benchmarks).
    #[doc(hidden)]
    pub fn adjustable() -> (Clock, ClockHand) {
        let offset = Arc::new(AtomicU64::new(0));
        let clock = Clock {
            offset_ms: Some(offset.clone()),
        };
        (clock, ClockHand(offset))
    }

    fn offset(&self) -> Duration {
        match &self.offset_ms {
            None => Duration::ZERO,
            Some(ms) => Duration::from_millis(ms.load(Ordering::Relaxed)),
        }
    }

    /// Now.
    #[inline]
    pub fn system_time(&self) -> SystemTime {
        let now = SystemTime::now();
        match &self.offset_ms {
            None => now,
            Some(_) => now + self.offset(),
        }
    }

    /// Seconds since the Unix epoch: what session records, tokens and cookies count in, so
    /// every store and every replica agree on deadlines.
    #[inline]
    pub fn unix_now(&self) -> u64 {
        since_epoch(self.system_time()).as_secs()
    }

    /// Milliseconds since the Unix epoch.
    pub fn unix_millis(&self) -> u64 {
        u64::try_from(since_epoch(self.system_time()).as_millis()).unwrap_or(u64::MAX)
    }

    /// A monotonic instant, moved by the same offset (intervals between decisions).
    pub fn instant(&self) -> Instant {
        Instant::now() + self.offset()
    }
}

// === impl ClockHand ===

impl ClockHand {
    /// Move the clock forward by `by` (never back).
    pub fn advance(&self, by: Duration) {
        let ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        self.0.fetch_add(ms, Ordering::Relaxed);
    }
}

/// Seconds since the Unix epoch by the system clock (for tests and tools; the gateway's
/// decisions read their [`Clock`]).
pub fn unix_now() -> u64 {
    Clock::system().unix_now()
}

fn since_epoch(t: SystemTime) -> Duration {
    t.duration_since(UNIX_EPOCH).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_adjustable_clock_moves_forward_with_its_clones() {
        let (clock, hand) = Clock::adjustable();
        let copy = clock.clone();
        let before = clock.unix_now();
        assert!(before.abs_diff(Clock::system().unix_now()) <= 1);
        hand.advance(Duration::from_secs(3600));
        assert!(copy.unix_now() >= before + 3600);
        assert!(copy.instant() >= Instant::now() + Duration::from_secs(3599));
        assert!(
            Clock::system().unix_now() < before + 60,
            "the system clock did not move"
        );
    }
}
