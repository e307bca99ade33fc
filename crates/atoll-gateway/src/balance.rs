//! Endpoints as the data plane sees them: whether each may take a request (active health
//! checks, passive outlier ejection), how many requests it has in flight, its idle upstream
//! connections; and the choice of one for a request. The state of an endpoint outlives
//! configuration swaps (it is kept by address), so a route change forgets no ejection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::pool::Idle;

/// How a route spreads its requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Policy {
    #[default]
    RoundRobin,
    /// The endpoint with the fewest requests in flight (ties in turn).
    LeastRequest,
}

impl Policy {
    pub fn parse(s: &str) -> Option<Policy> {
        match s {
            "round-robin" | "RoundRobin" => Some(Policy::RoundRobin),
            "least-request" | "LeastRequest" => Some(Policy::LeastRequest),
            _ => None,
        }
    }
}

/// Failures in a row (connect failures count at once) that eject an endpoint.
pub const EJECT_AFTER: u32 = 3;
/// How long the first ejection lasts; each one after it in a row lasts one more of these, to
/// [`MAX_EJECTION`].
pub const EJECTION: Duration = Duration::from_secs(5);
pub const MAX_EJECTION: Duration = Duration::from_secs(60);
/// Failed health checks in a row after which an endpoint takes no requests.
pub const UNHEALTHY_AFTER: u32 = 2;

/// One upstream address's state, shared by every route that has it.
#[derive(Debug)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub in_flight: AtomicUsize,
    /// Whether the last health checks passed (new endpoints start healthy).
    pub healthy: AtomicBool,
    pub failed_checks: AtomicU32,
    failures: AtomicU32,
    ejections: AtomicU32,
    /// Milliseconds since the registry's start until which the endpoint is ejected.
    ejected_until: AtomicU64,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub idle: Idle,
    epoch: Instant,
}

impl Endpoint {
    fn new(addr: SocketAddr, epoch: Instant) -> Endpoint {
        Endpoint {
            addr,
            in_flight: AtomicUsize::new(0),
            healthy: AtomicBool::new(true),
            failed_checks: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            idle: Idle::default(),
            epoch,
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether it may take a request now.
    pub fn usable(&self, now: Instant) -> bool {
        self.healthy.load(Ordering::Relaxed) && !self.ejected(now)
    }

    pub fn ejected(&self, now: Instant) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > self.millis(now)
    }

    /// An answer came back (not a gateway failure of the upstream).
    pub fn succeeded(&self) {
        self.failures.store(0, Ordering::Relaxed);
        self.ejections.store(0, Ordering::Relaxed);
    }

    /// A request failed at this endpoint: `connect` when it could not be reached at all,
    /// which ejects it at once. Returns whether it was ejected now.
    pub fn failed(&self, connect: bool, now: Instant) -> bool {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if !(connect || failures >= EJECT_AFTER) || self.ejected(now) {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = (EJECTION * n).min(MAX_EJECTION);
        self.ejected_until
            .store(self.millis(now + length), Ordering::Relaxed);
        // Its idle connections go too: they lead to the same dead place.
        self.idle.clear();
        true
    }

    /// A health check's result. Returns whether the endpoint's health changed.
    pub fn checked(&self, ok: bool) -> bool {
        if ok {
            self.failed_checks.store(0, Ordering::Relaxed);
            !self.healthy.swap(true, Ordering::Relaxed)
        } else {
            let n = self.failed_checks.fetch_add(1, Ordering::Relaxed) + 1;
            n >= UNHEALTHY_AFTER && self.healthy.swap(false, Ordering::Relaxed)
        }
    }
}

/// Every endpoint's state, by address.
#[derive(Debug)]
pub struct Registry {
    endpoints: Mutex<HashMap<SocketAddr, Arc<Endpoint>>>,
    epoch: Instant,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            endpoints: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
        }
    }
}

impl Registry {
    /// The state of `addr`, made on first use.
    pub fn get(&self, addr: SocketAddr) -> Arc<Endpoint> {
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(addr)
            .or_insert_with(|| Arc::new(Endpoint::new(addr, self.epoch)))
            .clone()
    }

    /// Forget endpoints no route has any more.
    pub fn retain(&self, keep: &std::collections::HashSet<SocketAddr>) {
        let mut map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|a, _| keep.contains(a));
    }

    pub fn all(&self) -> Vec<Arc<Endpoint>> {
        let map = self.endpoints.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }
}

/// What the choice needs to know of each endpoint of a route.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<'a> {
    pub cluster: &'a str,
    pub usable: bool,
    pub in_flight: usize,
}

/// The endpoint a request goes to, by index: among the usable ones, those of the preferred
/// cluster while it has any, then by the policy. `turn` is the route's request counter.
pub fn pick(
    candidates: &[Candidate<'_>],
    policy: Policy,
    prefer: Option<&str>,
    turn: usize,
) -> Option<usize> {
    let preferred = prefer.filter(|p| candidates.iter().any(|c| c.usable && c.cluster == *p));
    let eligible = |c: &Candidate<'_>| c.usable && preferred.is_none_or(|p| c.cluster == p);
    let count = candidates.iter().filter(|c| eligible(c)).count();
    if count == 0 {
        return None;
    }
    // The eligible ones in order, starting at this request's turn.
    let start = turn % count;
    let mut order = candidates
        .iter()
        .enumerate()
        .filter(|(_, c)| eligible(c))
        .map(|(i, _)| i)
        .cycle()
        .skip(start)
        .take(count);
    match policy {
        Policy::RoundRobin => order.next(),
        Policy::LeastRequest => order.min_by_key(|i| candidates[*i].in_flight),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(cluster: &str, usable: bool, in_flight: usize) -> Candidate<'_> {
        Candidate {
            cluster,
            usable,
            in_flight,
        }
    }

    #[test]
    fn round_robin_takes_usable_endpoints_in_turn() {
        let cands = [c("m1", true, 0), c("m1", false, 0), c("m2", true, 0)];
        let picks: Vec<_> = (0..4)
            .map(|t| pick(&cands, Policy::RoundRobin, None, t))
            .collect();
        assert_eq!(picks, [Some(0), Some(2), Some(0), Some(2)]);
    }

    #[test]
    fn least_request_takes_the_least_busy_and_turns_among_ties() {
        let cands = [c("m1", true, 3), c("m2", true, 1), c("m3", true, 1)];
        assert_eq!(pick(&cands, Policy::LeastRequest, None, 0), Some(1));
        assert_eq!(pick(&cands, Policy::LeastRequest, None, 2), Some(2));
    }

    #[test]
    fn the_preferred_cluster_takes_all_while_it_has_a_usable_endpoint() {
        let cands = [c("m1", true, 0), c("m2", true, 0), c("m2", true, 0)];
        for t in 0..4 {
            assert_eq!(pick(&cands, Policy::RoundRobin, Some("m1"), t), Some(0));
        }
        let m1_down = [c("m1", false, 0), c("m2", true, 0), c("m2", true, 0)];
        let picks: Vec<_> = (0..2)
            .map(|t| pick(&m1_down, Policy::RoundRobin, Some("m1"), t))
            .collect();
        assert_eq!(picks, [Some(1), Some(2)]);
        assert_eq!(pick(&cands, Policy::RoundRobin, Some("absent"), 1), Some(1));
    }

    #[test]
    fn nothing_usable_is_no_endpoint() {
        assert_eq!(pick(&[], Policy::RoundRobin, None, 0), None);
        assert_eq!(
            pick(&[c("m1", false, 0)], Policy::LeastRequest, None, 0),
            None
        );
    }

    #[test]
    fn failures_eject_and_successes_reset() {
        let epoch = Instant::now();
        let e = Endpoint::new("127.0.0.1:1".parse().unwrap(), epoch);
        let now = epoch + Duration::from_secs(1);
        assert!(!e.failed(false, now));
        assert!(!e.failed(false, now));
        e.succeeded();
        assert!(!e.failed(false, now));
        assert!(!e.failed(false, now));
        assert!(e.failed(false, now), "the third in a row ejects");
        assert!(!e.usable(now));
        assert!(e.usable(now + EJECTION + Duration::from_millis(1)));
        // A connect failure ejects at once, and a second ejection lasts longer.
        let later = now + EJECTION * 2;
        assert!(e.failed(true, later));
        assert!(!e.usable(later + EJECTION + Duration::from_millis(1)));
        assert!(e.usable(later + EJECTION * 2 + Duration::from_millis(1)));
    }

    #[test]
    fn health_turns_after_failed_checks_and_back_after_one_good() {
        let e = Endpoint::new("127.0.0.1:1".parse().unwrap(), Instant::now());
        assert!(!e.checked(false));
        assert!(e.checked(false), "unhealthy after two");
        assert!(!e.usable(Instant::now()));
        assert!(!e.checked(false));
        assert!(e.checked(true));
        assert!(e.usable(Instant::now()));
    }
}
