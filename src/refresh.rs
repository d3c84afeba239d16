//! Transparent token refresh: ahead of expiry, one flight per session, rotation-safe.
//!
//! - A request whose token is valid and not within `refresh_before_expiry` of expiry returns
//!   at once: no lock, no map, no await.
//! - Otherwise it joins the session's flight, or starts one. A flight is a spawned task, so
//!   it runs to completion and stores its result even when every request that waited on it
//!   has gone away: if a cancelled request aborted it after the provider had rotated the
//!   refresh token, the new token, and with it the session, would be lost.
//! - A flight first re-reads the record: a flight that just finished may already have
//!   refreshed it, and a used refresh token must never be sent again (Logto revokes the
//!   whole grant on reuse after 3 s).
//! - `invalid_grant` ends the session; anything else is transient: the session stays, the
//!   current token is used while valid, and the next attempt waits for a backoff.
//! - A flight writes its result only over the very record it read (`SessionStore::replace`):
//!   a sign-out or back-channel logout that lands while the provider is slow stays final;
//!   the flight then ends the request's session too.
//!
//! The in-flight map is behind a plain mutex held for a map operation only, and is touched
//! only by requests that need a refresh: never on the hot path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

use crate::clock::Clock;
use crate::error::Chain;
use crate::logging::log_safe;
use crate::metrics::{Metrics, RefreshOutcome};
use crate::oidc::Providers;
use crate::oidc::flows::{RefreshError, TokenSet};
use crate::session::identity::IdentityRules;
use crate::session::{
    LastSeen, RefreshBackoff, Replaced, ResourceToken, Session, SessionKey, SessionStore, Store,
    Tokens, Versioned,
};

/// What a request may do with its session after `ensure_fresh`.
#[derive(Debug, Clone)]
pub enum Fresh {
    /// Use this record (refreshed, or still valid).
    Ready(Arc<Session>),
    /// The session is over (refresh rejected, or expired without a refresh token).
    Ended,
    /// No usable token right now; the provider or store is failing. Try again later.
    Stalled(Stall),
}

/// Why a session has no usable token right now (its request is told to come back later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// A refresh failed transiently: no new attempt for `secs_left` seconds.
    Backoff { secs_left: u64 },
    /// The refresh flight's task ended without an answer.
    FlightLost,
    /// Another replica's refresh lease could not be taken or waited for.
    Lease,
    /// The session store failed around the refresh.
    Store,
    /// The provider's new access token cannot be sent as a header.
    BadToken,
    /// Another write changed the record meanwhile, and what it holds is not usable.
    Changed,
}

type Flight = Shared<BoxFuture<'static, Fresh>>;

pub struct Refresher {
    providers: Arc<Providers>,
    store: Arc<Store>,
    metrics: Arc<Metrics>,
    rules: Arc<IdentityRules>,
    before: Duration,
    /// Shared with the refresher a reload replaces (see [`Refresher::sharing_flights_with`]).
    inflight: Arc<Mutex<HashMap<SessionKey, Flight>>>,
    clock: Clock,
}

impl Refresher {
    pub fn new(
        providers: Arc<Providers>,
        store: Arc<Store>,
        metrics: Arc<Metrics>,
        rules: Arc<IdentityRules>,
        refresh_before_expiry: Duration,
        clock: Clock,
    ) -> Self {
        Refresher {
            providers,
            store,
            metrics,
            rules,
            before: refresh_before_expiry,
            inflight: Arc::default(),
            clock,
        }
    }

    /// Join the refreshes `previous` has in flight (a reload builds a new refresher): a
    /// request that starts on the new configuration waits for a refresh already running
    /// instead of spending the same refresh token a second time.
    pub fn sharing_flights_with(mut self, previous: &Refresher) -> Self {
        self.inflight = previous.inflight.clone();
        self
    }

    /// Make sure `session` has a usable access token, refreshing it when it is near expiry.
    pub async fn ensure_fresh(self: &Arc<Self>, key: SessionKey, session: Arc<Session>) -> Fresh {
        let now = self.clock.unix_now();
        if !session.needs_refresh(now, self.before) {
            return Fresh::Ready(session); // the hot path
        }
        if let Some(decided) = self.decide_without_provider(&session, now) {
            return decided;
        }
        self.join_or_start(key).await
    }

    /// The cases that need no token-endpoint call: no refresh token, or backing off.
    fn decide_without_provider(&self, session: &Arc<Session>, now: u64) -> Option<Fresh> {
        if session.tokens.refresh_token.is_none() {
            // An expired token without a refresh token ends the session.
            return Some(if session.access_valid(now) {
                Fresh::Ready(session.clone())
            } else {
                Fresh::Ended
            });
        }
        let backoff = session.backoff.filter(|b| now < b.retry_at())?;
        Some(if session.access_valid(now) {
            Fresh::Ready(session.clone())
        } else {
            Fresh::Stalled(Stall::Backoff {
                secs_left: backoff.retry_at() - now,
            })
        })
    }

    async fn join_or_start(self: &Arc<Self>, key: SessionKey) -> Fresh {
        let (flight, joined) = {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            match inflight.get(&key) {
                Some(flight) => (flight.clone(), true),
                None => {
                    let flight = self.spawn_flight(key);
                    inflight.insert(key, flight.clone());
                    (flight, false)
                }
            }
        };
        if joined {
            self.metrics.refresh_coalesced();
        }
        flight.await
    }

    fn spawn_flight(self: &Arc<Self>, key: SessionKey) -> Flight {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let outcome = this.fly(key).await;
            // Only now, with the result stored, may a later request start another flight.
            this.inflight
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            outcome
        });
        async move { task.await.unwrap_or(Fresh::Stalled(Stall::FlightLost)) }
            .boxed()
            .shared()
    }

    /// One flight: take the (cluster-wide) lease, re-read, maybe call the token endpoint,
    /// store the result. The lease is held until the result is stored.
    async fn fly(&self, key: SessionKey) -> Fresh {
        let _lease = match self.store.refresh_lease(&key).await {
            Ok(lease) => lease,
            Err(e) => {
                tracing::warn!(error = %log_safe(Chain(&e)), "could not take the refresh lease");
                return Fresh::Stalled(Stall::Lease);
            }
        };
        let current = match self.store.load_for_update(&key).await {
            Ok(Some(current)) => current,
            Ok(None) => return Fresh::Ended,
            Err(e) => {
                tracing::warn!(error = %log_safe(Chain(&e)), "session store failed before refresh");
                return Fresh::Stalled(Stall::Store);
            }
        };
        let session = &current.session;
        let now = self.clock.unix_now();
        if !session.needs_refresh(now, self.before) {
            return Fresh::Ready(session.clone()); // an earlier flight already refreshed it
        }
        if let Some(decided) = self.decide_without_provider(session, now) {
            return decided;
        }
        let Some(refresh_token) = session.tokens.refresh_token.as_deref() else {
            return Fresh::Ended;
        };
        // The session's own provider: its token endpoint, its keys for a new ID token.
        let Some(oidc) = self.providers.get(session.provider) else {
            return Fresh::Ended;
        };
        let started = Instant::now();
        let result = oidc.refresh(refresh_token, session.identity.sub()).await;
        let elapsed = started.elapsed();
        match result {
            Ok(tokens) => {
                self.metrics.refresh_finished(RefreshOutcome::Ok, elapsed);
                self.store_refreshed(key, &current, tokens).await
            }
            Err(RefreshError::Rejected(reason)) => {
                self.metrics
                    .refresh_finished(RefreshOutcome::Rejected, elapsed);
                tracing::info!(
                    sub = %log_safe(session.identity.sub()),
                    reason = %log_safe(Chain(&reason)),
                    "refresh rejected: session ended"
                );
                if let Err(e) = self.store.delete(&key).await {
                    tracing::warn!(
                        error = %log_safe(Chain(&e)),
                        "could not delete session after rejected refresh"
                    );
                }
                Fresh::Ended
            }
            Err(RefreshError::Transient(reason)) => {
                self.metrics
                    .refresh_finished(RefreshOutcome::Transient, elapsed);
                tracing::warn!(
                    sub = %log_safe(session.identity.sub()),
                    reason = %log_safe(Chain(&reason)),
                    "refresh failed transiently: session kept"
                );
                self.store_backoff(key, &current, now, None).await
            }
            Err(RefreshError::Unusable { rotated, reason }) => {
                self.metrics
                    .refresh_finished(RefreshOutcome::Transient, elapsed);
                tracing::warn!(
                    sub = %log_safe(session.identity.sub()),
                    reason = %log_safe(Chain(&reason)),
                    "refreshed tokens not usable: session kept with the new refresh token"
                );
                let rotated = rotated.map(|t| t.expose().clone());
                self.store_backoff(key, &current, now, rotated).await
            }
        }
    }

    async fn store_refreshed(&self, key: SessionKey, current: &Versioned, set: TokenSet) -> Fresh {
        let old = &current.session;
        let Some(bearer) = Tokens::bearer_value(&set.access_token) else {
            tracing::warn!(
                sub = %log_safe(old.identity.sub()),
                "provider returned an unusable access token"
            );
            return Fresh::Stalled(Stall::BadToken);
        };
        let identity = match set.claims.as_ref().and_then(|c| self.rules.identity(c)) {
            Some(identity) => Arc::new(identity),
            None => old.identity.clone(),
        };
        let refreshed = Arc::new(Session {
            tokens: Tokens {
                bearer,
                access_expires_at: set.access_expires_at,
                // Rotation: keep the new refresh token; keep the old one when none came back.
                refresh_token: set
                    .refresh_token
                    .map(Into::into)
                    .or_else(|| old.tokens.refresh_token.clone()),
                id_token: set
                    .id_token
                    .map(Into::into)
                    .or_else(|| old.tokens.id_token.clone()),
                more: ResourceToken::merge(set.more, &old.tokens.more),
            },
            identity,
            login_at: old.login_at,
            backoff: None,
            last_seen: LastSeen::default(),
            provider: old.provider,
        });
        match self.store.replace(&key, current, refreshed.clone()).await {
            Ok(Replaced::Done) => Fresh::Ready(refreshed),
            Ok(Replaced::Gone) => {
                self.revoke_orphan(old, &refreshed).await;
                self.after_lost_write(key, old, Replaced::Gone).await
            }
            Ok(lost) => self.after_lost_write(key, old, lost).await,
            Err(e) => {
                tracing::error!(
                    sub = %log_safe(old.identity.sub()),
                    error = %log_safe(Chain(&e)),
                    "could not store refreshed tokens"
                );
                Fresh::Stalled(Stall::Store)
            }
        }
    }

    /// Records a transient failure: the next attempt waits for the backoff. `rotated`: the
    /// refresh token the provider returned with an answer that could not be used; it
    /// replaces the presented one, which the grant may have spent.
    async fn store_backoff(
        &self,
        key: SessionKey,
        current: &Versioned,
        now: u64,
        rotated: Option<String>,
    ) -> Fresh {
        let old = &current.session;
        let backoff = RefreshBackoff::after_failure(old.backoff, now);
        let mut updated = Session {
            backoff: Some(backoff),
            ..Session::clone(old)
        };
        if let Some(rotated) = rotated {
            updated.tokens.refresh_token = Some(rotated.into_boxed_str());
        }
        let updated = Arc::new(updated);
        match self.store.replace(&key, current, updated.clone()).await {
            Ok(Replaced::Done) => {}
            Ok(lost) => return self.after_lost_write(key, old, lost).await,
            Err(e) => {
                tracing::warn!(error = %log_safe(Chain(&e)), "could not record refresh backoff")
            }
        }
        if updated.access_valid(now) {
            Fresh::Ready(updated)
        } else {
            Fresh::Stalled(Stall::Backoff {
                secs_left: backoff.retry_at().saturating_sub(now),
            })
        }
    }

    /// The session ended while its refresh was at the provider (sign-out, back-channel
    /// logout, an admin revoke): whoever ended it revoked the refresh token the record held,
    /// which the refresh has just used up; the new one the provider sent back is never
    /// stored, so it is revoked here (same call as sign-out), lest it stay live at the provider.
    async fn revoke_orphan(&self, old: &Session, refreshed: &Session) {
        let new = refreshed.tokens.refresh_token.as_deref();
        if let Some(token) = new
            && new != old.tokens.refresh_token.as_deref()
            && let Some(oidc) = self.providers.get(refreshed.provider)
        {
            oidc.revoke(token).await;
        }
    }

    /// The record changed under the flight, so its result was not written: the session was
    /// ended meanwhile (it stays ended), or another write replaced it (that record stands).
    async fn after_lost_write(&self, key: SessionKey, old: &Session, lost: Replaced) -> Fresh {
        if lost == Replaced::Gone {
            tracing::info!(sub = %old.identity.sub(), "session ended during its refresh: the result is dropped");
            return Fresh::Ended;
        }
        match self.store.load_for_update(&key).await {
            Ok(Some(stored)) if stored.session.access_valid(self.clock.unix_now()) => {
                Fresh::Ready(stored.session)
            }
            Ok(None) => Fresh::Ended,
            Ok(Some(_)) => Fresh::Stalled(Stall::Changed),
            Err(_) => Fresh::Stalled(Stall::Store),
        }
    }
}
