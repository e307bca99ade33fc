#![no_main]
//! DNS queries come from anyone who can reach the port: parsing, answering and the answer
//! cache must never panic, and a UDP answer never exceeds what EDNS allows (1232 bytes).

use std::sync::OnceLock;

use atoll_dns::wire::{AnswerCache, Handled, Transport, handle};
use atoll_dns::{Index, Zone};
use libfuzzer_sys::fuzz_target;

fn fixture() -> &'static (Zone, Index) {
    static F: OnceLock<(Zone, Index)> = OnceLock::new();
    F.get_or_init(|| {
        let zone = Zone::new("cluster.local", vec!["127.1.0.10".parse().expect("an IP")])
            .expect("a zone");
        let mut index = Index::default();
        let svc = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "demo"},
            "spec": {"clusterIP": "127.1.0.20", "ports": [{"name": "http", "port": 80}]}}))
        .expect("a Service");
        index.set_service(&svc);
        let headless = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "demo"}, "spec": {"clusterIP": "None"}}))
        .expect("a Service");
        index.set_service(&headless);
        let slice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db-1", "namespace": "demo", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["127.16.0.5"], "hostname": "db-0"}],
            "ports": [{"name": "pg", "port": 5432}]}))
        .expect("an EndpointSlice");
        index.set_slice(&slice);
        (zone, index)
    })
}

fuzz_target!(|data: &[u8]| {
    let (zone, index) = fixture();
    let mut cache = AnswerCache::default();
    for transport in [Transport::Udp, Transport::Tcp] {
        if let Handled::Reply(r) = handle(data, transport, zone, index) {
            if transport == Transport::Udp {
                assert!(r.bytes.len() <= 1232, "a UDP answer of {} bytes", r.bytes.len());
            }
            cache.put(data, transport, index.generation(), &r.bytes);
            let _ = cache.get(data, transport, index.generation());
        }
    }
});
