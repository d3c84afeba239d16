//! One conformance suite for every `SessionStore`: run against the memory store and against
//! the Redis store (a real `redis-server` started by the test). Plus what only a shared store
//! has: the cluster-wide refresh lease, encryption at rest, and rotation of the secrets.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use authgate::clock::{Clock, ClockHand};
use authgate::config::{HeadersConfig, RedisTopology};
use authgate::secret::Secret;
use authgate::session::identity::IdentityRules;
use authgate::session::memory::{MAX_LOGOUT_MARKERS, MemoryOptions, MemoryStore};
use authgate::session::redis::{RedisOptions, RedisStore};
use authgate::session::{
    Identity, Marker, ProviderId, Replaced, Session, SessionKey, SessionStore, Tokens, new_key,
    unix_now,
};
use support::eventually;
use support::redis::{ClusterGroup, RedisServer, SentinelGroup};

/// The memory store's idle timeout (whole seconds): its clock is moved, never slept on.
const IDLE: Duration = Duration::from_secs(3);
/// The Redis stores' idle timeout: Redis' own TTLs, on Redis' clock, so the conformance suite
/// sleeps through it. Short, but well above the local read cache of these tests (a cache
/// hit does not touch Redis, so not its idle timer).
const REDIS_IDLE: Duration = Duration::from_millis(1500);
/// The Redis stores' local read cache lifetime in these tests (the gateway's is `CACHE_TTL`,
/// 1 s): what a test of idleness or of another replica's view waits for on real time.
const REDIS_CACHE_TTL: Duration = Duration::from_millis(250);
const ABSOLUTE: Duration = Duration::from_secs(3600);

/// Time as a store under test sees it. Its own deadlines (absolute timeout, idleness of the
/// memory store, markers of the memory store) follow its clock, which the test moves. Redis'
/// TTLs (idle timeout, markers) follow Redis' clock, which only real time moves.
struct Time {
    clock: Clock,
    hand: ClockHand,
    /// The store keeps TTLs on Redis: [`Time::pass`] sleeps as well.
    redis: bool,
    /// How long past a deadline a read may still be answered (whole seconds of the memory
    /// store; the local read cache of the Redis store).
    settle: Duration,
}

impl Time {
    fn new(redis: bool) -> Time {
        let (clock, hand) = Clock::adjustable();
        let settle = if redis {
            REDIS_CACHE_TTL + Duration::from_millis(250)
        } else {
            Duration::from_secs(1)
        };
        Time {
            clock,
            hand,
            redis,
            settle,
        }
    }

    /// Unix seconds by the store's clock.
    fn now(&self) -> u64 {
        self.clock.unix_now()
    }

    /// `by` passes for the store's own deadlines (its clock).
    fn advance(&self, by: Duration) {
        self.hand.advance(by);
    }

    /// `by` passes for every deadline: the store's clock moves, and a Redis store's TTLs need
    /// the time to pass for real.
    async fn pass(&self, by: Duration) {
        self.hand.advance(by);
        if self.redis {
            tokio::time::sleep(by).await;
        }
    }
}

fn session(sub: &str, sid: Option<&str>, token: &str) -> Arc<Session> {
    session_at(sub, sid, token, unix_now())
}

fn session_at(sub: &str, sid: Option<&str>, token: &str, login_at: u64) -> Arc<Session> {
    Arc::new(Session {
        tokens: Tokens {
            bearer: Tokens::bearer_value(token).unwrap(),
            access_expires_at: Some(unix_now() + 300),
            refresh_token: Some(format!("rt-{token}").into()),
            id_token: Some(format!("idt-{token}").into()),
            more: Box::default(),
        },
        identity: Arc::new(identity(sub, sid)),
        login_at,
        backoff: None,
        last_seen: Default::default(),
        provider: ProviderId::DEFAULT,
    })
}

/// The identity headers of these tests: only the user's.
fn rules() -> Arc<IdentityRules> {
    let headers = HeadersConfig {
        authorization_bearer: true,
        user: Some(http::HeaderName::from_static("x-forwarded-user")),
        email: None,
        preferred_username: None,
        groups: None,
        groups_claim: "groups".into(),
        claims: Vec::new(),
    };
    Arc::new(IdentityRules::new(&headers, []))
}

fn identity(sub: &str, sid: Option<&str>) -> Identity {
    let claims = serde_json::json!({"sub": sub, "email": format!("{sub}@example.test"),
        "groups": ["staff"], "sid": sid});
    rules().identity(claims.as_object().unwrap()).unwrap()
}

async fn token_of<S: SessionStore>(store: &S, key: &SessionKey) -> Option<String> {
    let s = store.load(key).await.unwrap()?;
    Some(String::from_utf8(s.tokens.access_token().to_vec()).unwrap())
}

/// What every store must do. `fresh_view` reads as another replica would (for the Redis
/// store: no local cache), so deletions are checked where it matters.
async fn conformance<S: SessionStore>(store: S, absolute: Duration, idle: Duration, time: &Time) {
    assert!(store.ready().await);
    // save / load / replace / delete
    let k1 = new_key();
    assert!(store.load(&k1).await.unwrap().is_none(), "unknown key");
    let s1 = session("u1", Some("sid-a"), "at-1");
    store.save(k1, s1.clone()).await.unwrap();
    let back = store.load(&k1).await.unwrap().expect("saved session");
    assert_eq!(back.identity, s1.identity);
    assert_eq!(back.tokens.bearer, s1.tokens.bearer);
    assert_eq!(back.tokens.refresh_token.as_deref(), Some("rt-at-1"));
    assert_eq!(back.login_at, s1.login_at);
    store
        .save(k1, session("u1", Some("sid-a"), "at-2"))
        .await
        .unwrap();
    assert_eq!(token_of(&store, &k1).await.as_deref(), Some("at-2"));
    assert_eq!(
        token_of_authoritative(&store, &k1).await.as_deref(),
        Some("at-2")
    );
    store.delete(&k1).await.unwrap();
    assert!(store.load(&k1).await.unwrap().is_none(), "deleted");
    assert!(store.load_for_update(&k1).await.unwrap().is_none());
    store.delete(&k1).await.unwrap(); // idempotent

    ended_sessions_stay_ended(&store).await;
    single_use_ids(&store, time).await;

    // absolute timeout: counted from login_at, whatever the activity
    let old = new_key();
    let past = time.now() - absolute.as_secs() - 1;
    store
        .save(old, session_at("u9", None, "at-old", past))
        .await
        .unwrap();
    assert!(store.load(&old).await.unwrap().is_none(), "past absolute");
    let ending = new_key();
    let almost = time.now() + 2 - absolute.as_secs();
    store
        .save(ending, session_at("u9", None, "at-ending", almost))
        .await
        .unwrap();
    assert!(store.load(&ending).await.unwrap().is_some());
    let mut in_use = 0;
    while store.load(&ending).await.unwrap().is_some() {
        in_use += 1;
        assert!(
            in_use <= 12,
            "the absolute deadline passes while the session is in use"
        );
        time.advance(Duration::from_millis(500)); // 6 s at most
    }
    assert!(in_use >= 2, "ended {in_use} half seconds after its save");

    // back-channel logout: by sid, by sub, by both
    let a = (new_key(), session("u1", Some("sid-a"), "t-a"));
    let b = (new_key(), session("u1", Some("sid-b"), "t-b"));
    let c = (new_key(), session("u2", Some("sid-c"), "t-c"));
    let d = (new_key(), session("u2", Some("sid-d"), "t-d"));
    let e = (new_key(), session("u3", None, "t-e"));
    for (k, s) in [&a, &b, &c, &d, &e] {
        store.save(*k, s.clone()).await.unwrap();
    }
    store
        .delete_matching(ProviderId::DEFAULT, Some("sid-a"), None)
        .await
        .unwrap();
    assert!(store.load(&a.0).await.unwrap().is_none(), "sid-a ended");
    assert!(store.load(&b.0).await.unwrap().is_some(), "other sid kept");
    store
        .delete_matching(ProviderId::DEFAULT, Some("sid-c"), Some("u1"))
        .await
        .unwrap();
    assert!(
        store.load(&c.0).await.unwrap().is_some(),
        "sid and sub must both match"
    );
    store
        .delete_matching(ProviderId::DEFAULT, None, Some("u2"))
        .await
        .unwrap();
    assert!(
        store.load(&c.0).await.unwrap().is_none(),
        "every session of u2"
    );
    assert!(
        store.load(&d.0).await.unwrap().is_none(),
        "every session of u2"
    );
    assert!(store.load(&b.0).await.unwrap().is_some(), "u1 kept");
    store
        .delete_matching(ProviderId::DEFAULT, None, Some("u3"))
        .await
        .unwrap();
    assert!(store.load(&e.0).await.unwrap().is_none(), "no sid: by sub");
    store
        .delete_matching(ProviderId::DEFAULT, None, None)
        .await
        .unwrap();
    assert!(store.load(&b.0).await.unwrap().is_some(), "nothing named");

    // idle timeout: reset by loads, ends the session without them
    let idle_key = new_key();
    store
        .save(idle_key, session("u4", None, "t-idle"))
        .await
        .unwrap();
    // Used every 2/3 of the idle timeout, 3 times: kept alive past two idle timeouts.
    for i in 1..=3 {
        time.pass(idle * 2 / 3).await;
        assert!(
            store.load(&idle_key).await.unwrap().is_some(),
            "in use after {i} x 2/3 of the idle timeout"
        );
    }
    // No polling here: every load would reset the idle timer.
    time.pass(idle + time.settle).await;
    assert!(
        store.load(&idle_key).await.unwrap().is_none(),
        "idle session dropped"
    );

    // the refresh lease is granted (shared stores: see `redis_lease_is_exclusive`)
    drop(store.refresh_lease(&b.0).await.unwrap());
}

/// An ended session stays ended: an update (a refresh's result) is written only over the version it
/// read, and never re-creates a record that a delete (sign-out, back-channel logout, rejected
/// refresh) removed in between.
async fn ended_sessions_stay_ended<S: SessionStore>(store: &S) {
    let key = new_key();
    store
        .save(key, session("u5", Some("sid-5"), "rt-0"))
        .await
        .unwrap();
    let first = store.load_for_update(&key).await.unwrap().expect("saved");
    let replaced = (store.replace(&key, &first, session("u5", Some("sid-5"), "rt-1"))).await;
    assert_eq!(replaced.unwrap(), Replaced::Done);
    assert_eq!(token_of(store, &key).await.as_deref(), Some("rt-1"));
    assert_eq!(
        token_of_authoritative(store, &key).await.as_deref(),
        Some("rt-1")
    );
    // A stale version (the record was rewritten since) writes nothing.
    let stale = (store.replace(&key, &first, session("u5", Some("sid-5"), "rt-stale"))).await;
    assert_eq!(stale.unwrap(), Replaced::Changed);
    assert_eq!(
        token_of_authoritative(store, &key).await.as_deref(),
        Some("rt-1")
    );
    // Deleted while "in flight": the write finds it gone and does not bring it back.
    let current = store.load_for_update(&key).await.unwrap().expect("there");
    store.delete(&key).await.unwrap();
    let late = (store.replace(&key, &current, session("u5", Some("sid-5"), "rt-2"))).await;
    assert_eq!(late.unwrap(), Replaced::Gone);
    assert!(store.load(&key).await.unwrap().is_none(), "brought back");
    assert!(store.load_for_update(&key).await.unwrap().is_none());
    // The same through a back-channel logout (by sid, and by sub).
    for (sid, sub) in [(Some("sid-6"), None), (None, Some("u6"))] {
        let key = new_key();
        store
            .save(key, session("u6", Some("sid-6"), "rt-a"))
            .await
            .unwrap();
        let current = store.load_for_update(&key).await.unwrap().expect("saved");
        store
            .delete_matching(ProviderId::DEFAULT, sid, sub)
            .await
            .unwrap();
        let late = (store.replace(&key, &current, session("u6", Some("sid-6"), "rt-b"))).await;
        assert_eq!(late.unwrap(), Replaced::Gone, "{sid:?} {sub:?}");
        assert!(store.load(&key).await.unwrap().is_none(), "brought back");
        assert!(store.load_for_update(&key).await.unwrap().is_none());
    }
    // Never an insert: an unknown key stays unknown.
    let unknown = new_key();
    let late = (store.replace(&unknown, &current, session("u7", None, "rt-x"))).await;
    assert_ne!(late.unwrap(), Replaced::Done);
    assert!(store.load_for_update(&unknown).await.unwrap().is_none());
}

/// Single-use markers (a used login state, a used logout token): set once, for the time
/// asked, each on its own.
async fn single_use_ids<S: SessionStore>(store: &S, time: &Time) {
    let ttl = Duration::from_millis(500);
    let a = Marker {
        kind: "once",
        id: [1u8; 32],
    };
    let b = Marker { id: [2u8; 32], ..a };
    assert!(!store.is_claimed(&a).await.unwrap(), "unknown");
    assert!(store.claim_once(&a, ttl).await.unwrap(), "first claim");
    assert!(store.is_claimed(&a).await.unwrap(), "claimed");
    assert!(!store.is_claimed(&b).await.unwrap(), "another id");
    assert!(
        !store
            .claim_once(&a, Duration::from_secs(3600))
            .await
            .unwrap(),
        "single use"
    );
    time.pass(ttl).await;
    assert!(
        eventually(Duration::from_secs(2), || async {
            !store.is_claimed(&a).await.unwrap()
        })
        .await,
        "forgotten after its time (a second claim keeps the first expiry)"
    );
}

async fn token_of_authoritative<S: SessionStore>(store: &S, key: &SessionKey) -> Option<String> {
    let s = store.load_for_update(key).await.unwrap()?.session;
    Some(String::from_utf8(s.tokens.access_token().to_vec()).unwrap())
}

fn secrets(bytes: &[u8]) -> Vec<Secret<Vec<u8>>> {
    bytes.iter().map(|b| Secret::new(vec![*b; 32])).collect()
}

fn redis_store(server: &RedisServer, secret_bytes: &[u8], lease: Duration) -> RedisStore {
    redis_store_at(&server.url(), secret_bytes, lease)
}

fn redis_store_at(url: &str, secret_bytes: &[u8], lease: Duration) -> RedisStore {
    RedisStore::new(redis_options(url, lease), &secrets(secret_bytes)).unwrap()
}

fn redis_options(url: &str, lease: Duration) -> RedisOptions {
    RedisOptions {
        topology: RedisTopology::Single {
            url: Secret::new(url.to_owned()),
        },
        key_prefix: "test:".into(),
        timeout: Duration::from_secs(1),
        idle_timeout: REDIS_IDLE,
        absolute_timeout: ABSOLUTE,
        cache_capacity: 1000,
        cache_ttl: REDIS_CACHE_TTL,
        lease,
        lease_wait: Duration::from_secs(10),
        identity_rules: rules(),
        revocation_envelopes: false,
    }
}

#[tokio::test]
async fn memory_store_conformance() {
    let time = Time::new(false);
    let store = MemoryStore::with_options(MemoryOptions {
        max_sessions: 1000,
        idle_timeout: IDLE,
        absolute_timeout: ABSOLUTE,
        max_markers: MAX_LOGOUT_MARKERS,
        clock: time.clock.clone(),
    });
    conformance(store, ABSOLUTE, IDLE, &time).await;
}

#[tokio::test]
async fn redis_store_conformance() {
    let server = RedisServer::start();
    let time = Time::new(true);
    let options = redis_options(&server.url(), Duration::from_secs(5));
    let store = RedisStore::with_clock(options, &secrets(&[1]), time.clock.clone()).unwrap();
    conformance(store, ABSOLUTE, REDIS_IDLE, &time).await;
}

/// The same suite against a master found through three Sentinels.
#[tokio::test]
async fn redis_sentinel_store_conformance() {
    let group = SentinelGroup::start().await;
    let time = Time::new(true);
    let mut options = redis_options("redis://unused", Duration::from_secs(5));
    options.topology = RedisTopology::Sentinel {
        sentinels: group.sentinel_urls().into_iter().map(Secret::new).collect(),
        master: SentinelGroup::NAME.into(),
    };
    let store = RedisStore::with_clock(options, &secrets(&[1]), time.clock.clone()).unwrap();
    conformance(store, ABSOLUTE, REDIS_IDLE, &time).await;
}

/// The same suite against a three-master Redis Cluster (every multi-key call single-slot).
#[tokio::test]
async fn redis_cluster_store_conformance() {
    let cluster = ClusterGroup::start().await;
    let time = Time::new(true);
    let store = cluster_store(&cluster, &[1], time.clock.clone());
    conformance(store, ABSOLUTE, REDIS_IDLE, &time).await;
}

fn cluster_store(cluster: &ClusterGroup, secret_bytes: &[u8], clock: Clock) -> RedisStore {
    let mut options = redis_options("redis://unused", Duration::from_secs(5));
    options.topology = RedisTopology::Cluster {
        nodes: cluster.urls().into_iter().map(Secret::new).collect(),
    };
    RedisStore::with_clock(options, &secrets(secret_bytes), clock).unwrap()
}

/// Cluster: a session's keys share one slot under every secret (so a rotated replica reads
/// and moves it with one script), sessions spread over the nodes, and a back-channel logout
/// by `sub` ends that user's sessions wherever they live.
#[tokio::test]
async fn redis_cluster_slots_rotation_and_logout_by_sub() {
    let cluster = ClusterGroup::start().await;
    let old = cluster_store(&cluster, &[1], Clock::system());
    let rotated = cluster_store(&cluster, &[2, 1], Clock::system());
    let keys: Vec<SessionKey> = (0..12).map(|_| new_key()).collect();
    for (i, key) in keys.iter().enumerate() {
        let user = if i % 2 == 0 { "alice" } else { "bob" };
        old.save(
            *key,
            session(user, Some(&format!("sid-{i}")), &format!("t{i}")),
        )
        .await
        .unwrap();
    }
    let mut nodes = std::collections::BTreeSet::new();
    for key in &keys {
        let (a, b) = (old.session_name(key), rotated.session_name(key));
        assert_ne!(a, b);
        let tag = |n: &str| n[n.find('{').unwrap()..=n.find('}').unwrap()].to_owned();
        assert_eq!(tag(&a), tag(&b), "one slot under every secret");
        assert_eq!(cluster.node_of(&a).await, cluster.node_of(&b).await);
        nodes.insert(cluster.node_of(&a).await);
    }
    assert!(
        nodes.len() >= 2,
        "sessions spread over the nodes: {nodes:?}"
    );
    // Read (and moved) under the new secret.
    for key in &keys {
        assert!(rotated.load(key).await.unwrap().is_some());
    }
    rotated
        .delete_matching(ProviderId::DEFAULT, None, Some("alice"))
        .await
        .unwrap();
    for (i, key) in keys.iter().enumerate() {
        let alive = rotated.load_for_update(key).await.unwrap().is_some();
        assert_eq!(alive, i % 2 == 1, "session {i}");
    }
    // By sid and sub together: only the session in both.
    rotated
        .delete_matching(ProviderId::DEFAULT, Some("sid-1"), Some("bob"))
        .await
        .unwrap();
    assert!(rotated.load_for_update(&keys[1]).await.unwrap().is_none());
    assert!(rotated.load_for_update(&keys[3]).await.unwrap().is_some());

    // The admin API's list and revoke find the user's sessions on every node, and an id from
    // the list names its record again (it carries the slot tag: 68 hex digits).
    use authgate::session::admin::Target;
    let listed = rotated.sessions_of("bob").await.unwrap();
    assert_eq!(listed.len(), 5, "bob's sessions 3, 5, 7, 9, 11");
    assert!(listed.iter().all(|s| s.id.len() == 68), "{listed:?}");
    // What the tunnel watcher asks: one `EXISTS` a session, each in its own slot.
    let alive = rotated.alive(&[keys[3], keys[0], keys[5]]).await.unwrap();
    assert_eq!(alive, [true, false, true]);
    let one = rotated
        .revoke(&Target::Id(listed[0].id.clone()))
        .await
        .unwrap();
    assert_eq!(one.count, 1);
    let rest = rotated.revoke(&Target::Sub("bob".into())).await.unwrap();
    assert_eq!(rest.count, 4);
    for key in keys.iter().skip(3).step_by(2) {
        assert!(rotated.load_for_update(key).await.unwrap().is_none());
    }
    assert!(rotated.sessions_of("bob").await.unwrap().is_empty());
    let alive = rotated.alive(&[keys[3], keys[5]]).await.unwrap();
    assert_eq!(alive, [false, false]);
}

/// Two replicas: the lease is exclusive, kept alive past its nominal length while held, and
/// passed on at release.
#[tokio::test]
async fn redis_lease_is_exclusive_renewed_and_released() {
    let server = RedisServer::start();
    let lease = Duration::from_millis(600);
    let a = redis_store(&server, &[1], lease);
    let b = redis_store(&server, &[1], lease);
    let key = new_key();
    let held = a.refresh_lease(&key).await.unwrap();
    let waiter = tokio::spawn(async move {
        let lease = b.refresh_lease(&key).await.unwrap();
        (Instant::now(), lease, b)
    });
    // Three lease lengths: only renewal keeps B out that long.
    tokio::time::sleep(lease * 3).await;
    assert!(!waiter.is_finished(), "B got a lease A still holds");
    let released = Instant::now();
    drop(held);
    let (got, _lease, b) = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("B takes the lease once A releases it")
        .unwrap();
    assert!(got >= released);
    assert_eq!(b.metrics().lease_waits(), 1);
    // Another key is independent.
    drop(a.refresh_lease(&new_key()).await.unwrap());
}

/// Two replicas: B signs the session out while A holds it in its local read cache and has a
/// refresh in flight. A's write finds the record gone in Redis; A's cache never writes it
/// back, and after A's cache lifetime nobody has it.
#[tokio::test]
async fn redis_replica_never_writes_a_deleted_session_back() {
    let server = RedisServer::start();
    let a = redis_store(&server, &[1], Duration::from_secs(5));
    let b = redis_store(&server, &[1], Duration::from_secs(5));
    let key = new_key();
    a.save(key, session("heidi", Some("sid-h"), "at-0"))
        .await
        .unwrap();
    assert!(a.load(&key).await.unwrap().is_some(), "cached on A");
    let in_flight = a.load_for_update(&key).await.unwrap().expect("in Redis");
    b.delete(&key).await.unwrap();
    let late = a
        .replace(&key, &in_flight, session("heidi", Some("sid-h"), "at-1"))
        .await
        .unwrap();
    assert_eq!(late, Replaced::Gone);
    assert!(
        server
            .dump()
            .await
            .iter()
            .all(|(name, _)| !name.starts_with("test:s:"))
    );
    assert!(
        eventually(Duration::from_secs(3), || async {
            a.load(&key).await.unwrap().is_none()
        })
        .await,
        "A's cached copy expires"
    );
    assert!(b.load(&key).await.unwrap().is_none());
}

/// Whoever reads Redis finds neither a token nor a session id, and a record that does not
/// decrypt (wrong secret, or tampered) is simply absent.
#[tokio::test]
async fn redis_records_are_sealed_and_names_hashed() {
    let server = RedisServer::start();
    let store = redis_store(&server, &[1], Duration::from_secs(5));
    let key = new_key();
    store
        .save(
            key,
            session("alice", Some("sid-alice"), "secret-access-token"),
        )
        .await
        .unwrap();
    let dump = server.dump().await;
    assert_eq!(dump.len(), 3, "record, sid index, sub index: {dump:?}");
    let hex_id: String = key.iter().map(|b| format!("{b:02x}")).collect();
    for (name, value) in &dump {
        assert!(name.starts_with("test:"), "{name}");
        for needle in ["secret-access-token", "rt-secret", "idt-secret", "alice"] {
            assert!(!name.contains(needle), "{needle} in key {name}");
            assert!(
                !value.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} in the value of {name}"
            );
        }
        assert!(!name.contains(&hex_id), "session id in {name}");
        assert!(!value.windows(16).any(|w| w == key), "raw session id");
    }
    // Another secret opens nothing; a tampered record is absent, never an error.
    let foreign = redis_store(&server, &[9], Duration::from_secs(5));
    assert!(foreign.load(&key).await.unwrap().is_none());
    let mut conn = server.conn().await;
    let name = store.session_name(&key);
    let mut sealed: Vec<u8> = redis::cmd("GET")
        .arg(&name)
        .query_async(&mut conn)
        .await
        .unwrap();
    let last = sealed.len() - 1;
    sealed[last] ^= 0x01;
    let _: () = redis::cmd("SET")
        .arg(&name)
        .arg(sealed)
        .query_async(&mut conn)
        .await
        .unwrap();
    store.clear_local_cache();
    assert!(store.load(&key).await.unwrap().is_none(), "tampered");
}

/// Rotation: a replica whose first secret is new still reads sessions sealed under the old
/// one (and moves them under the new name); the old secret alone then reads nothing new.
#[tokio::test]
async fn redis_secret_rotation_keeps_sessions() {
    let server = RedisServer::start();
    let old = redis_store(&server, &[1], Duration::from_secs(5));
    let rotated = redis_store(&server, &[2, 1], Duration::from_secs(5));
    let key = new_key();
    old.save(key, session("bob", None, "at-bob")).await.unwrap();
    assert_eq!(token_of(&rotated, &key).await.as_deref(), Some("at-bob"));
    let names: Vec<String> = server.dump().await.into_iter().map(|(k, _)| k).collect();
    assert!(
        names.contains(&rotated.session_name(&key)),
        "moved: {names:?}"
    );
    assert!(!names.contains(&old.session_name(&key)), "old name gone");
    rotated.clear_local_cache();
    assert_eq!(token_of(&rotated, &key).await.as_deref(), Some("at-bob"));
    // Back-channel logout finds it under the new secret's index.
    rotated
        .delete_matching(ProviderId::DEFAULT, None, Some("bob"))
        .await
        .unwrap();
    assert!(rotated.load_for_update(&key).await.unwrap().is_none());
}

/// Redis unreachable: every call fails within the configured timeout with a `StoreError`,
/// `ready()` is false; once Redis is back the same store works again (reconnect).
#[tokio::test]
async fn redis_down_is_an_error_then_recovers() {
    let mut server = RedisServer::start();
    let store = redis_store(&server, &[1], Duration::from_secs(5));
    let key = new_key();
    store
        .save(key, session("carol", None, "at-c"))
        .await
        .unwrap();
    server.kill();
    store.clear_local_cache();
    let started = Instant::now();
    assert!(
        store.load(&key).await.is_err(),
        "down is an error, not absent"
    );
    assert!(!store.ready().await);
    assert!(
        store
            .save(new_key(), session("x", None, "y"))
            .await
            .is_err()
    );
    assert!(started.elapsed() < Duration::from_secs(8), "bounded");
    server.restart();
    assert!(
        eventually(Duration::from_secs(10), || async { store.ready().await }).await,
        "reconnects"
    );
    // Not persistent: the data is gone, but the store answers.
    assert!(store.load(&key).await.unwrap().is_none());
}

/// An ACL user confined to the key prefix: every key the store touches (records, indexes,
/// leases, used login states) is under `session.redis_key_prefix`, and AUTH with a user works.
#[tokio::test]
async fn redis_acl_user_confined_to_the_prefix() {
    let server = RedisServer::start_with(&[
        "--user",
        "authgate",
        "on",
        ">s3cret-pw",
        "~test:*",
        "+@all",
        "--user",
        "default",
        "on",
        "nopass",
        "~*",
        "+@all",
    ]);
    let url = format!("redis://authgate:s3cret-pw@127.0.0.1:{}", server.port);
    let store = redis_store_at(&url, &[1], Duration::from_secs(5));
    let key = new_key();
    store
        .save(key, session("judy", Some("sid-j"), "at-j"))
        .await
        .unwrap();
    assert_eq!(token_of(&store, &key).await.as_deref(), Some("at-j"));
    store.clear_local_cache();
    assert_eq!(token_of(&store, &key).await.as_deref(), Some("at-j"));
    drop(store.refresh_lease(&key).await.unwrap());
    // A single-use marker (a completed login's state).
    let marker = Marker {
        kind: "used",
        id: [7u8; 32],
    };
    assert!(!store.is_claimed(&marker).await.unwrap());
    let ttl = Duration::from_secs(60);
    assert!(store.claim_once(&marker, ttl).await.unwrap());
    assert!(store.is_claimed(&marker).await.unwrap());
    assert!(!store.claim_once(&marker, ttl).await.unwrap(), "single use");
    store
        .delete_matching(ProviderId::DEFAULT, Some("sid-j"), None)
        .await
        .unwrap();
    assert!(store.load(&key).await.unwrap().is_none());
    // The user cannot touch a key outside the prefix: the confinement is real.
    let mut conn = RedisServer::connect(&url).await;
    let outside: redis::RedisResult<()> = redis::cmd("SET")
        .arg("other:x")
        .arg(1)
        .query_async(&mut conn)
        .await;
    assert!(outside.is_err());
    // A wrong password: not ready, an error, never a panic.
    let wrong = format!("redis://authgate:nope@127.0.0.1:{}", server.port);
    let store = redis_store_at(&wrong, &[1], Duration::from_secs(5));
    assert!(!store.ready().await);
    assert!(store.load(&key).await.is_err());
}

/// `rediss://` builds a rustls client (ring: the process-wide provider is installed by the
/// store); against a plain-text server the handshake fails: not ready, no panic.
#[tokio::test]
async fn rediss_against_plain_server_is_not_ready() {
    let server = RedisServer::start();
    let url = format!("rediss://127.0.0.1:{}", server.port);
    let store = redis_store_at(&url, &[1], Duration::from_secs(5));
    assert!(!store.ready().await);
    assert!(store.load(&new_key()).await.is_err());
}

/// A store error keeps its cause (what Redis said, why the connection failed) for the log,
/// and never the URL's password: neither when Redis refuses the password, nor when nothing
/// listens.
#[tokio::test]
async fn store_errors_keep_their_cause_and_never_the_password() {
    let server =
        RedisServer::start_with(&["--user", "authgate", "on", ">s3cret-pw", "~test:*", "+@all"]);
    let wrong = format!("redis://authgate:wr0ng-pw-123@127.0.0.1:{}", server.port);
    let nothing = {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        format!("redis://authgate:wr0ng-pw-123@127.0.0.1:{port}")
    };
    for url in [wrong, nothing] {
        let store = redis_store_at(&url, &[1], Duration::from_secs(5));
        let e = store.load(&new_key()).await.unwrap_err();
        let chain = authgate::error::Chain(&e).to_string();
        assert!(std::error::Error::source(&e).is_some(), "{chain}");
        assert!(
            chain.starts_with("session store unavailable: redis"),
            "{chain}"
        );
        assert!(
            !chain.contains("wr0ng-pw-123") && !chain.contains("s3cret"),
            "{chain}"
        );
    }
}

/// What `WAIT 1` costs a write on Sentinel: the same saves through the Sentinel topology
/// (each waits for the replica) and through a plain `redis_url` to the same master (no
/// wait). Prints the mean latency of each. Run: `cargo test --test session_store
/// bench_sentinel_wait_cost -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "measurement"]
async fn bench_sentinel_wait_cost() {
    let group = SentinelGroup::start().await;
    let mut options = redis_options("redis://unused", Duration::from_secs(5));
    options.topology = RedisTopology::Sentinel {
        sentinels: group.sentinel_urls().into_iter().map(Secret::new).collect(),
        master: SentinelGroup::NAME.into(),
    };
    let sentinel = RedisStore::new(options, &secrets(&[1])).unwrap();
    let single = redis_store(&group.master, &[1], Duration::from_secs(5));
    let n = 300;
    for (label, store) in [
        ("single (no WAIT)", &single),
        ("sentinel (WAIT 1)", &sentinel),
    ] {
        store
            .save(new_key(), session("w", None, "w"))
            .await
            .unwrap();
        let started = Instant::now();
        for i in 0..n {
            store
                .save(new_key(), session("w", None, &format!("w{i}")))
                .await
                .unwrap();
        }
        let each = started.elapsed() / n;
        println!("{label:>18}: {n} sequential saves, {each:?} each");
        // Concurrent: writes share WAITs (group commit).
        let started = Instant::now();
        let saves = (0..n).map(|i| store.save(new_key(), session("w", None, &format!("c{i}"))));
        for r in futures_util::future::join_all(saves).await {
            r.unwrap();
        }
        println!(
            "{label:>18}: {n} concurrent saves in {:?}",
            started.elapsed()
        );
    }
    assert_eq!(sentinel.metrics().failovers(), 0);
}
