//! Opaque sealed values kept for a while under a marker's name (form posts kept across a
//! login: `crate::login::preserve`). The caller seals them; Redis sees ciphertext only.

use std::time::Duration;

use super::{RedisStore, millis};
use crate::session::{Marker, StoreError};

impl RedisStore {
    /// Keep `value` under `marker` for `ttl`.
    pub async fn stash(
        &self,
        marker: &Marker,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut set = redis::cmd("SET");
        set.arg(self.inner.marker_name(marker))
            .arg(value)
            .arg("PX")
            .arg(millis(ttl));
        self.query::<()>("SET (stash)", &set).await
    }

    /// The value kept under `marker`, removed in the same step (single use).
    pub async fn unstash(&self, marker: &Marker) -> Result<Option<Vec<u8>>, StoreError> {
        let mut getdel = redis::cmd("GETDEL");
        getdel.arg(self.inner.marker_name(marker));
        self.query("GETDEL (stash)", &getdel).await
    }
}
