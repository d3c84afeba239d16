//! The one way from a request to its session: the session cookie (a signed id, `cookie`)
//! names a record of the store. Every place that needs the request's session goes through
//! [`Sessions`]: the pipeline and forward auth, `/oauth2/userinfo`, sign-out, and a login
//! replacing the browser's previous session.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use super::{Session, SessionKey, SessionStore, Store, StoreError, new_key};
use crate::config::SessionConfig;
use crate::cookie::CookieCodec;

/// The store, the session cookie, and the session lifetimes.
pub struct Sessions {
    store: Arc<Store>,
    cookie: CookieCodec,
    idle_timeout: Duration,
    absolute_timeout: Duration,
}

/// What a request's session cookie leads to.
pub enum Lookup {
    /// No cookie of ours with a valid signature.
    NoCookie,
    /// A valid cookie that names no live session (expired, ended): the browser should drop it.
    Gone(SessionKey),
    /// A live session.
    Live(SessionKey, Arc<Session>),
}

// === impl Sessions ===

impl Sessions {
    pub fn new(store: Arc<Store>, cfg: &SessionConfig) -> Self {
        Sessions {
            store,
            cookie: CookieCodec::new(cfg),
            idle_timeout: cfg.idle_timeout,
            absolute_timeout: cfg.absolute_timeout,
        }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn cookie(&self) -> &CookieCodec {
        &self.cookie
    }

    /// The session id of the request: its first cookie named ours whose signature verifies.
    pub fn key(&self, headers: &HeaderMap) -> Option<SessionKey> {
        self.cookie.session_key(headers)
    }

    /// The request's session (loading it resets its idle timer).
    pub async fn lookup(&self, headers: &HeaderMap) -> Result<Lookup, StoreError> {
        let Some(key) = self.key(headers) else {
            return Ok(Lookup::NoCookie);
        };
        Ok(match self.store.load(&key).await? {
            Some(session) => Lookup::Live(key, session),
            None => Lookup::Gone(key),
        })
    }

    /// End the request's session (sign-out): its record, read then deleted. `Ok(None)`: there
    /// was none. An error when either the read or the delete failed: the session may live on.
    pub async fn end(&self, headers: &HeaderMap) -> Result<Option<Arc<Session>>, StoreError> {
        let Some(key) = self.key(headers) else {
            return Ok(None);
        };
        let loaded = self.store.load(&key).await;
        let deleted = self.store.delete(&key).await;
        let session = loaded?;
        deleted?;
        Ok(session)
    }

    /// Drop the request's session, if any, without reading it (a login replacing it).
    pub async fn discard(&self, headers: &HeaderMap) -> Result<(), StoreError> {
        match self.key(headers) {
            Some(key) => self.store.delete(&key).await,
            None => Ok(()),
        }
    }

    /// Store a NEW session under a fresh random id (never one a client chose: no session
    /// fixation); the `Set-Cookie` that hands it to the browser.
    pub async fn create(&self, session: Session) -> Result<Option<HeaderValue>, StoreError> {
        self.create_keyed(Arc::new(session))
            .await
            .map(|(_, cookie)| cookie)
    }

    /// [`Sessions::create`], and the new session's key.
    pub async fn create_keyed(
        &self,
        session: Arc<Session>,
    ) -> Result<(SessionKey, Option<HeaderValue>), StoreError> {
        let key = new_key();
        self.store.save(key, session).await?;
        let cookie = self
            .cookie
            .set_cookie(&key, self.absolute_timeout.as_secs());
        Ok((key, cookie))
    }

    /// `Set-Cookie` that deletes the session cookie.
    pub fn clear_cookie(&self) -> HeaderValue {
        self.cookie.clear_cookie()
    }

    /// When a session just used at `now` ends unless used again: its idle deadline, or its
    /// absolute one if sooner.
    pub fn expires_at(&self, session: &Session, now: u64) -> u64 {
        let idle_deadline = now.saturating_add(self.idle_timeout.as_secs());
        idle_deadline.min(session.absolute_deadline(self.absolute_timeout))
    }
}
