//! Prometheus metrics: plain atomics laid out at start, rendered as text on `/metrics`.
//!
//! Every series a request touches is resolved to an index before the request starts (the
//! route table is fixed), so recording is a few relaxed atomic adds: no lock, no map lookup,
//! no allocation on the hot path.

use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What the pipeline decided for a request (issue: metrics by route and decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allow = 0,
    Redirect = 1,
    Unauthorized = 2,
    Forbid = 3,
    Deny = 4,
}

const DECISIONS: [&str; 5] = [
    "allowed",
    "redirected",
    "unauthorized",
    "forbidden",
    "denied",
];

/// How a refresh ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshOutcome {
    Ok = 0,
    Rejected = 1,
    Transient = 2,
}

const OUTCOMES: [&str; 3] = ["ok", "rejected", "transient"];

/// How a login ended, as `authgate_logins_total{result}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginEvent {
    /// `/oauth2/start` sent the browser to the provider.
    Started = 0,
    /// The callback established a session.
    Succeeded,
    /// The provider answered with an `error` (the user declined, `login_required`, ...).
    ProviderError,
    /// The callback's `state` was missing, unknown, expired, or already used (a replay, or
    /// a login started in another browser or on a replica with other cookie secrets).
    InvalidState,
    /// The code exchange or the ID token was refused (including identity checks).
    Rejected,
    /// The provider or the session store was unavailable.
    Unavailable,
}

const LOGIN_EVENTS: [(&str, &str); 6] = [
    ("started", ""),
    ("succeeded", ""),
    ("failed", "provider_error"),
    ("failed", "invalid_state"),
    ("failed", "rejected"),
    ("failed", "unavailable"),
];

/// Label of the only upstream until named upstreams exist.
const DEFAULT_UPSTREAM: &str = "default";

pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|&le| secs <= le) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros().min(u64::MAX as u128) as u64, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cumulative += self.buckets[i].load(Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Series of one route (or one built-in endpoint).
pub struct RouteMetrics {
    label: String,
    /// Index = status code - 100.
    statuses: Box<[AtomicU64; 500]>,
    decisions: [AtomicU64; 5],
    latency: Histogram,
}

impl RouteMetrics {
    fn new(label: &str) -> Self {
        RouteMetrics {
            label: escape_label(label),
            statuses: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            decisions: std::array::from_fn(|_| AtomicU64::new(0)),
            latency: Histogram::new(),
        }
    }
}

pub struct Metrics {
    routes: Vec<RouteMetrics>,
    in_flight: AtomicI64,
    upstream_unreachable: AtomicU64,
    upstream_timeout: AtomicU64,
    refreshes: [AtomicU64; 3],
    pub refresh_latency: Histogram,
    refresh_coalesced: AtomicU64,
    sessions_ended_by_refresh: AtomicU64,
    /// Time to the upstream's response head (or its failure), per upstream by index (0:
    /// `[upstream]`, then `[upstreams.NAME]` in order), with its name.
    upstream_latency: Vec<(String, Histogram)>,
    logins: [AtomicU64; LOGIN_EVENTS.len()],
    /// Shared by every runtime a reload builds: the reload counters outlive each of them.
    reloads: Arc<ReloadStats>,
}

/// Configuration reloads (SIGHUP): how many succeeded and failed, and when the last good one
/// was applied.
#[derive(Debug, Default)]
pub struct ReloadStats {
    success: AtomicU64,
    failure: AtomicU64,
    /// Unix seconds of the last successful reload (0: none yet).
    last_success: AtomicU64,
}

impl ReloadStats {
    pub fn succeeded(&self, unix_now: u64) {
        self.success.fetch_add(1, Relaxed);
        self.last_success.store(unix_now, Relaxed);
    }

    pub fn failed(&self) {
        self.failure.fetch_add(1, Relaxed);
    }

    /// Successful and failed reloads so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.success.load(Relaxed), self.failure.load(Relaxed))
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP authgate_config_reloads_total Configuration reloads by result.\n\
             # TYPE authgate_config_reloads_total counter\n\
             authgate_config_reloads_total{{result=\"success\"}} {}\n\
             authgate_config_reloads_total{{result=\"failure\"}} {}\n\
             # HELP authgate_config_last_reload_success_timestamp_seconds Unix time of the last successful reload (0: none).\n\
             # TYPE authgate_config_last_reload_success_timestamp_seconds gauge\n\
             authgate_config_last_reload_success_timestamp_seconds {}",
            self.success.load(Relaxed),
            self.failure.load(Relaxed),
            self.last_success.load(Relaxed),
        );
    }
}

/// Index of a route's series in [`Metrics`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteId(pub usize);

impl Metrics {
    /// `labels`: one per series, in the order the caller will index them.
    pub fn new<'a>(labels: impl IntoIterator<Item = &'a str>) -> Self {
        Metrics {
            routes: labels.into_iter().map(RouteMetrics::new).collect(),
            in_flight: AtomicI64::new(0),
            upstream_unreachable: AtomicU64::new(0),
            upstream_timeout: AtomicU64::new(0),
            refreshes: std::array::from_fn(|_| AtomicU64::new(0)),
            refresh_latency: Histogram::new(),
            refresh_coalesced: AtomicU64::new(0),
            sessions_ended_by_refresh: AtomicU64::new(0),
            upstream_latency: vec![(DEFAULT_UPSTREAM.to_owned(), Histogram::new())],
            logins: std::array::from_fn(|_| AtomicU64::new(0)),
            reloads: Arc::default(),
        }
    }

    /// Count reloads in `reloads` (shared with the runtimes built before and after).
    pub fn with_reloads(mut self, reloads: Arc<ReloadStats>) -> Self {
        self.reloads = reloads;
        self
    }

    /// Whether these are the series of exactly these route labels and upstream names (a
    /// reload that changed neither keeps the metrics, counters and all).
    pub fn has_series(&self, labels: &[String], upstreams: &[&str]) -> bool {
        self.routes.len() == labels.len()
            && (self.routes.iter().zip(labels)).all(|(r, l)| r.label == escape_label(l))
            && self.upstream_latency.len() == upstreams.len() + 1
            && (self.upstream_latency.iter().skip(1).zip(upstreams)).all(|((n, _), u)| n == u)
    }

    /// One latency series per `[upstreams.NAME]` besides `[upstream]`'s, in index order.
    pub fn with_upstreams<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        (self.upstream_latency).extend(names.into_iter().map(|n| (n.to_owned(), Histogram::new())));
        self
    }

    /// One call to upstream `index` took `elapsed` to its response head (or to its failure).
    /// The label of `route`'s series (`-` for an index no route holds).
    pub fn route_label(&self, route: RouteId) -> &str {
        self.routes.get(route.0).map_or("-", |r| r.label.as_str())
    }

    pub fn upstream_finished(&self, index: usize, elapsed: Duration) {
        if let Some((_, histogram)) = self.upstream_latency.get(index) {
            histogram.observe(elapsed);
        }
    }

    pub fn login(&self, event: LoginEvent) {
        self.logins[event as usize].fetch_add(1, Relaxed);
    }

    pub fn request_started(&self) {
        self.in_flight.fetch_add(1, Relaxed);
    }

    pub fn request_finished(&self, route: RouteId, status: u16, elapsed: Duration) {
        self.in_flight.fetch_sub(1, Relaxed);
        if let Some(series) = self.routes.get(route.0) {
            if let Some(counter) = series.statuses.get(usize::from(status).wrapping_sub(100)) {
                counter.fetch_add(1, Relaxed);
            }
            series.latency.observe(elapsed);
        }
    }

    pub fn decision(&self, route: RouteId, decision: Decision) {
        if let Some(series) = self.routes.get(route.0) {
            series.decisions[decision as usize].fetch_add(1, Relaxed);
        }
    }

    pub fn upstream_unreachable(&self) {
        self.upstream_unreachable.fetch_add(1, Relaxed);
    }

    pub fn upstream_timeout(&self) {
        self.upstream_timeout.fetch_add(1, Relaxed);
    }

    pub fn refresh_finished(&self, outcome: RefreshOutcome, elapsed: Duration) {
        self.refreshes[outcome as usize].fetch_add(1, Relaxed);
        self.refresh_latency.observe(elapsed);
        if outcome == RefreshOutcome::Rejected {
            self.sessions_ended_by_refresh.fetch_add(1, Relaxed);
        }
    }

    pub fn refresh_coalesced(&self) {
        self.refresh_coalesced.fetch_add(1, Relaxed);
    }

    pub fn refresh_count(&self, outcome: RefreshOutcome) -> u64 {
        self.refreshes[outcome as usize].load(Relaxed)
    }

    /// Prometheus text exposition format 0.0.4. `live_sessions` is read from the store.
    pub fn render(&self, live_sessions: u64) -> String {
        let mut out = String::with_capacity(16 * 1024);
        self.render_requests(&mut out);
        self.render_refresh(&mut out);
        let gauges = [
            (
                "authgate_requests_in_flight",
                "Requests being handled.",
                self.in_flight.load(Relaxed),
            ),
            (
                "authgate_sessions_live",
                "Sessions in the store.",
                live_sessions as i64,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP authgate_upstream_errors_total Upstream failures by kind.\n\
             # TYPE authgate_upstream_errors_total counter\n\
             authgate_upstream_errors_total{{kind=\"unreachable\"}} {}\n\
             authgate_upstream_errors_total{{kind=\"timeout\"}} {}",
            self.upstream_unreachable.load(Relaxed),
            self.upstream_timeout.load(Relaxed)
        );
        out.push_str(
            "# HELP authgate_upstream_duration_seconds Time to the upstream's response head, by upstream.\n",
        );
        out.push_str("# TYPE authgate_upstream_duration_seconds histogram\n");
        for (name, histogram) in &self.upstream_latency {
            histogram.render(
                &mut out,
                "authgate_upstream_duration_seconds",
                &format!("upstream=\"{name}\""),
            );
        }
        out.push_str(
            "# HELP authgate_logins_total Logins started, succeeded, and failed by reason.\n",
        );
        out.push_str("# TYPE authgate_logins_total counter\n");
        for (i, (result, reason)) in LOGIN_EVENTS.iter().enumerate() {
            let n = self.logins[i].load(Relaxed);
            let _ = match *reason {
                "" => writeln!(out, "authgate_logins_total{{result=\"{result}\"}} {n}"),
                reason => writeln!(
                    out,
                    "authgate_logins_total{{result=\"{result}\",reason=\"{reason}\"}} {n}"
                ),
            };
        }
        self.reloads.render(&mut out);
        out
    }

    fn render_requests(&self, out: &mut String) {
        out.push_str("# HELP authgate_requests_total Requests by route and status.\n");
        out.push_str("# TYPE authgate_requests_total counter\n");
        for series in &self.routes {
            for (i, counter) in series.statuses.iter().enumerate() {
                let n = counter.load(Relaxed);
                if n > 0 {
                    let status = i + 100;
                    let route = &series.label;
                    let _ = writeln!(
                        out,
                        "authgate_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP authgate_decisions_total Policy decisions by route.\n");
        out.push_str("# TYPE authgate_decisions_total counter\n");
        for series in &self.routes {
            for (i, decision) in DECISIONS.iter().enumerate() {
                let n = series.decisions[i].load(Relaxed);
                if n > 0 {
                    let route = &series.label;
                    let _ = writeln!(
                        out,
                        "authgate_decisions_total{{route=\"{route}\",decision=\"{decision}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP authgate_request_duration_seconds Request latency by route.\n");
        out.push_str("# TYPE authgate_request_duration_seconds histogram\n");
        for series in &self.routes {
            let labels = format!("route=\"{}\"", series.label);
            series
                .latency
                .render(out, "authgate_request_duration_seconds", &labels);
        }
    }

    fn render_refresh(&self, out: &mut String) {
        out.push_str("# HELP authgate_refresh_total Token refreshes by outcome.\n");
        out.push_str("# TYPE authgate_refresh_total counter\n");
        for (i, outcome) in OUTCOMES.iter().enumerate() {
            let n = self.refreshes[i].load(Relaxed);
            let _ = writeln!(out, "authgate_refresh_total{{outcome=\"{outcome}\"}} {n}");
        }
        out.push_str(
            "# HELP authgate_refresh_duration_seconds Token endpoint latency of refreshes.\n",
        );
        out.push_str("# TYPE authgate_refresh_duration_seconds histogram\n");
        self.refresh_latency
            .render(out, "authgate_refresh_duration_seconds", "");
        let counters = [
            (
                "authgate_refresh_coalesced_total",
                "Requests that waited on another request's refresh.",
                self.refresh_coalesced.load(Relaxed),
            ),
            (
                "authgate_sessions_ended_by_refresh_total",
                "Sessions ended because the provider rejected their refresh.",
                self.sessions_ended_by_refresh.load(Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
    }
}

/// Series of a shared session store (Redis): owned by the store, rendered after [`Metrics`].
pub struct StoreMetrics {
    /// Latency of each call to the store (one round trip, or a pipeline).
    pub latency: Histogram,
    errors: AtomicU64,
    timeouts: AtomicU64,
    cache_hits: AtomicU64,
    cache_misses: AtomicU64,
    lease_waits: AtomicU64,
    lease_wait_timeouts: AtomicU64,
    pub lease_wait: Histogram,
    /// `single`, `sentinel` or `cluster` (set once by the store).
    topology: std::sync::OnceLock<&'static str>,
    /// Sentinel: a master found at another address than the previous one.
    failovers: AtomicU64,
    /// Sentinel: writes whose `WAIT` saw no replica acknowledge them in time.
    unreplicated: AtomicU64,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        StoreMetrics {
            latency: Histogram::new(),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            cache_hits: AtomicU64::new(0),
            cache_misses: AtomicU64::new(0),
            lease_waits: AtomicU64::new(0),
            lease_wait_timeouts: AtomicU64::new(0),
            lease_wait: Histogram::new(),
            topology: std::sync::OnceLock::new(),
            failovers: AtomicU64::new(0),
            unreplicated: AtomicU64::new(0),
        }
    }
}

impl StoreMetrics {
    /// A call that failed (`timed_out`: no answer within `session.redis_timeout`).
    pub fn error(&self, timed_out: bool) {
        let counter = if timed_out {
            &self.timeouts
        } else {
            &self.errors
        };
        counter.fetch_add(1, Relaxed);
    }

    pub fn cache(&self, hit: bool) {
        let counter = if hit {
            &self.cache_hits
        } else {
            &self.cache_misses
        };
        counter.fetch_add(1, Relaxed);
    }

    /// A refresh that found another replica's lease and waited (`got`: then took it).
    pub fn lease_waited(&self, elapsed: Duration, got: bool) {
        self.lease_waits.fetch_add(1, Relaxed);
        if !got {
            self.lease_wait_timeouts.fetch_add(1, Relaxed);
        }
        self.lease_wait.observe(elapsed);
    }

    /// The Redis topology (`single`, `sentinel`, `cluster`); the first call wins.
    pub fn set_topology(&self, name: &'static str) {
        let _ = self.topology.set(name);
    }

    /// A Sentinel failover seen: the master moved to another address.
    pub fn failover(&self) {
        self.failovers.fetch_add(1, Relaxed);
    }

    pub fn failovers(&self) -> u64 {
        self.failovers.load(Relaxed)
    }

    /// A write no replica acknowledged within the `WAIT` bound.
    pub fn unreplicated(&self) {
        self.unreplicated.fetch_add(1, Relaxed);
    }

    pub fn cache_hits(&self) -> u64 {
        self.cache_hits.load(Relaxed)
    }

    pub fn lease_waits(&self) -> u64 {
        self.lease_waits.load(Relaxed)
    }

    pub fn render(&self, out: &mut String) {
        if let Some(topology) = self.topology.get() {
            let _ = writeln!(
                out,
                "# HELP authgate_store_info The session store's Redis topology.\n\
                 # TYPE authgate_store_info gauge\n\
                 authgate_store_info{{topology=\"{topology}\"}} 1\n\
                 # HELP authgate_store_failovers_total Sentinel failovers seen (the master moved).\n\
                 # TYPE authgate_store_failovers_total counter\n\
                 authgate_store_failovers_total {}\n\
                 # HELP authgate_store_unreplicated_writes_total Writes no replica acknowledged within the WAIT bound (Sentinel).\n\
                 # TYPE authgate_store_unreplicated_writes_total counter\n\
                 authgate_store_unreplicated_writes_total {}",
                self.failovers.load(Relaxed),
                self.unreplicated.load(Relaxed)
            );
        }
        out.push_str("# HELP authgate_store_duration_seconds Latency of session store calls.\n");
        out.push_str("# TYPE authgate_store_duration_seconds histogram\n");
        self.latency
            .render(out, "authgate_store_duration_seconds", "");
        let _ = writeln!(
            out,
            "# HELP authgate_store_errors_total Failed session store calls by kind.\n\
             # TYPE authgate_store_errors_total counter\n\
             authgate_store_errors_total{{kind=\"error\"}} {}\n\
             authgate_store_errors_total{{kind=\"timeout\"}} {}",
            self.errors.load(Relaxed),
            self.timeouts.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP authgate_store_cache_total Session loads by the replica-local cache's answer.\n\
             # TYPE authgate_store_cache_total counter\n\
             authgate_store_cache_total{{result=\"hit\"}} {}\n\
             authgate_store_cache_total{{result=\"miss\"}} {}",
            self.cache_hits.load(Relaxed),
            self.cache_misses.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP authgate_refresh_lease_waits_total Refreshes that waited for another replica's lease.\n\
             # TYPE authgate_refresh_lease_waits_total counter\n\
             authgate_refresh_lease_waits_total{{result=\"acquired\"}} {}\n\
             authgate_refresh_lease_waits_total{{result=\"gave_up\"}} {}",
            self.lease_waits.load(Relaxed) - self.lease_wait_timeouts.load(Relaxed),
            self.lease_wait_timeouts.load(Relaxed)
        );
        out.push_str(
            "# HELP authgate_refresh_lease_wait_seconds Time spent waiting for a refresh lease.\n",
        );
        out.push_str("# TYPE authgate_refresh_lease_wait_seconds histogram\n");
        self.lease_wait
            .render(out, "authgate_refresh_lease_wait_seconds", "");
    }
}

fn escape_label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counted_series() {
        let m = Metrics::new(["/public/", "default"]);
        m.request_started();
        m.request_finished(RouteId(1), 200, Duration::from_millis(3));
        m.decision(RouteId(0), Decision::Deny);
        m.refresh_finished(RefreshOutcome::Rejected, Duration::from_millis(20));
        let text = m.render(7);
        assert!(text.contains("authgate_requests_total{route=\"default\",status=\"200\"} 1"));
        assert!(
            text.contains("authgate_decisions_total{route=\"/public/\",decision=\"denied\"} 1")
        );
        assert!(text.contains(
            "authgate_request_duration_seconds_bucket{route=\"default\",le=\"0.005\"} 1"
        ));
        assert!(text.contains("authgate_refresh_total{outcome=\"rejected\"} 1"));
        assert!(text.contains("authgate_sessions_ended_by_refresh_total 1"));
        assert!(text.contains("authgate_sessions_live 7"));
        assert!(text.contains("authgate_requests_in_flight 0"));
    }

    #[test]
    fn renders_store_series() {
        let m = StoreMetrics::default();
        m.cache(true);
        m.cache(false);
        m.error(true);
        m.lease_waited(Duration::from_millis(120), true);
        m.latency.observe(Duration::from_micros(300));
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains("authgate_store_cache_total{result=\"hit\"} 1"));
        assert!(text.contains("authgate_store_errors_total{kind=\"timeout\"} 1"));
        assert!(text.contains("authgate_refresh_lease_waits_total{result=\"acquired\"} 1"));
        assert!(text.contains("authgate_store_duration_seconds_count 1"));
        assert!(text.contains("authgate_refresh_lease_wait_seconds_bucket{le=\"0.25\"} 1"));
    }

    #[test]
    fn out_of_range_status_is_ignored() {
        let m = Metrics::new(["r"]);
        m.request_started();
        m.request_finished(RouteId(0), 42, Duration::ZERO);
        m.request_finished(RouteId(5), 200, Duration::ZERO);
        assert!(!m.render(0).contains("status=\"42\""));
    }
}
