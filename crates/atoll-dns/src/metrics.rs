//! Counters for `/metrics` (Prometheus text): queries by type and response code, how long
//! answering took, what was forwarded, cached and dropped. Atomics only: the query path
//! takes no lock for them.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

const TYPES: [&str; 10] = [
    "A", "AAAA", "SRV", "PTR", "TXT", "SOA", "NS", "CNAME", "ANY", "other",
];
const RCODES: [&str; 7] = [
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "other",
];
/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 12] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25, 1.0, 2.5,
];

#[derive(Default)]
pub struct Metrics {
    queries: [[AtomicU64; RCODES.len()]; TYPES.len()],
    latency: [AtomicU64; BUCKETS.len() + 1],
    latency_sum_ns: AtomicU64,
    pub forwarded: AtomicU64,
    pub cache_hits: AtomicU64,
    pub dropped: AtomicU64,
}

fn type_index(t: Option<RecordType>) -> usize {
    match t {
        Some(RecordType::A) => 0,
        Some(RecordType::AAAA) => 1,
        Some(RecordType::SRV) => 2,
        Some(RecordType::PTR) => 3,
        Some(RecordType::TXT) => 4,
        Some(RecordType::SOA) => 5,
        Some(RecordType::NS) => 6,
        Some(RecordType::CNAME) => 7,
        Some(RecordType::ANY) => 8,
        _ => 9,
    }
}

fn rcode_index(r: ResponseCode) -> usize {
    match r {
        ResponseCode::NoError => 0,
        ResponseCode::FormErr => 1,
        ResponseCode::ServFail => 2,
        ResponseCode::NXDomain => 3,
        ResponseCode::NotImp => 4,
        ResponseCode::Refused => 5,
        _ => 6,
    }
}

impl Metrics {
    pub fn answered(&self, qtype: Option<RecordType>, rcode: ResponseCode, took: Duration) {
        self.queries[type_index(qtype)][rcode_index(rcode)].fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ns.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// All queries answered so far.
    pub fn total(&self) -> u64 {
        self.latency.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    pub fn render(&self, services: usize) -> String {
        let mut out = String::new();
        out.push_str("# HELP atoll_dns_queries_total DNS queries answered, by question type and response code.\n# TYPE atoll_dns_queries_total counter\n");
        for (ti, t) in TYPES.iter().enumerate() {
            for (ri, r) in RCODES.iter().enumerate() {
                let n = self.queries[ti][ri].load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "atoll_dns_queries_total{{type=\"{t}\",rcode=\"{r}\"}} {n}"
                    );
                }
            }
        }
        out.push_str("# HELP atoll_dns_request_duration_seconds Time from a query's arrival to its answer being sent.\n# TYPE atoll_dns_request_duration_seconds histogram\n");
        let mut cumulative = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cumulative += self.latency[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "atoll_dns_request_duration_seconds_bucket{{le=\"{b}\"}} {cumulative}"
            );
        }
        cumulative += self.latency[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "atoll_dns_request_duration_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
        );
        let sum = self.latency_sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "atoll_dns_request_duration_seconds_sum {sum}");
        let _ = writeln!(out, "atoll_dns_request_duration_seconds_count {cumulative}");
        for (name, help, v) in [
            (
                "atoll_dns_forwarded_total",
                "Queries sent to the upstream resolvers.",
                &self.forwarded,
            ),
            (
                "atoll_dns_cache_hits_total",
                "Forwarded questions answered from the cache.",
                &self.cache_hits,
            ),
            (
                "atoll_dns_dropped_total",
                "Packets dropped unanswered (too short, or responses).",
                &self.dropped,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP atoll_dns_services Services in the index.\n# TYPE atoll_dns_services gauge\natoll_dns_services {services}"
        );
        out
    }
}
