//! Table-driven tests of the answers and of the packet rules, on an index built from
//! Kubernetes objects as the watches deliver them.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;

use crate::answer::{Resolution, Zone, resolve};
use crate::index::Index;
use crate::wire::{Handled, Transport, handle};

fn service(v: serde_json::Value) -> Service {
    serde_json::from_value(v).expect("a Service")
}

fn slice(v: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(v).expect("an EndpointSlice")
}

fn fixture() -> (Zone, Index) {
    let zone =
        Zone::new("cluster.local", vec!["127.1.0.10".parse().expect("an IP")]).expect("a zone");
    let mut index = Index::default();
    index.set_service(&service(
        json!({"metadata": {"name": "web", "namespace": "demo"},
        "spec": {"clusterIP": "127.1.0.20", "clusterIPs": ["127.1.0.20"],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"port": 9090}]}}),
    ));
    index.set_service(&service(
        json!({"metadata": {"name": "db", "namespace": "demo"},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
    ));
    index.set_slice(&slice(
        json!({"metadata": {"name": "db-abc", "namespace": "demo",
            "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["127.16.0.5"], "hostname": "db-0", "conditions": {"ready": true}},
            {"addresses": ["127.16.0.6"], "conditions": {"ready": true}},
            {"addresses": ["127.16.0.7"], "hostname": "db-2", "conditions": {"ready": false}}],
        "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}),
    ));
    index.set_service(&service(
        json!({"metadata": {"name": "empty", "namespace": "demo"},
        "spec": {"clusterIP": "None"}}),
    ));
    index.set_service(&service(
        json!({"metadata": {"name": "ext", "namespace": "demo"},
        "spec": {"type": "ExternalName", "externalName": "www.example.org"}}),
    ));
    index.set_service(&service(
        json!({"metadata": {"name": "alias", "namespace": "demo"},
        "spec": {"type": "ExternalName", "externalName": "web.demo.svc.cluster.local"}}),
    ));
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "demo"},
        "status": {"podIP": "127.16.0.9"}}))
    .expect("a Pod");
    index.set_pod(&pod);
    (zone, index)
}

/// What an answer comes to, as text: rcode, then the answers' data.
fn ask(zone: &Zone, index: &Index, name: &str, qtype: RecordType) -> String {
    let name = Name::from_ascii(name).expect("a name");
    match resolve(zone, index, &name, qtype) {
        Resolution::Elsewhere => "elsewhere".into(),
        Resolution::Answer(a) => {
            let mut data: Vec<String> = a
                .answers
                .iter()
                .map(|r| match &r.data {
                    RData::A(x) => x.0.to_string(),
                    RData::AAAA(x) => x.0.to_string(),
                    RData::SRV(s) => format!("{} {}", s.port, s.target),
                    RData::PTR(p) => p.0.to_string(),
                    RData::CNAME(c) => format!("cname {}", c.0),
                    RData::TXT(t) => t.to_string(),
                    RData::NS(n) => format!("ns {}", n.0),
                    RData::SOA(s) => format!("soa {}", s.mname),
                    other => format!("{other:?}"),
                })
                .collect();
            data.sort();
            let soa = if a
                .authority
                .iter()
                .any(|r| r.record_type() == RecordType::SOA)
            {
                " +soa"
            } else {
                ""
            };
            let chase = a.chase.map(|c| format!(" chase {c}")).unwrap_or_default();
            format!("{}{soa} [{}]{chase}", a.rcode, data.join(", "))
        }
    }
}

#[test]
fn the_specification_s_records() {
    let (zone, index) = fixture();
    use RecordType::*;
    let cases: &[(&str, RecordType, &str)] = &[
        // 2.2 the schema version.
        ("dns-version.cluster.local.", TXT, "No Error [1.0.1]"),
        // 2.3 a Service with a ClusterIP: A, SRV per named port, case-insensitive.
        ("web.demo.svc.cluster.local.", A, "No Error [127.1.0.20]"),
        ("WEB.Demo.SVC.cluster.LOCAL.", A, "No Error [127.1.0.20]"),
        ("web.demo.svc.cluster.local.", AAAA, "No Error +soa []"),
        (
            "_http._tcp.web.demo.svc.cluster.local.",
            SRV,
            "No Error [80 web.demo.svc.cluster.local.]",
        ),
        (
            "_http._udp.web.demo.svc.cluster.local.",
            SRV,
            "Non-Existent Domain +soa []",
        ),
        ("_tcp.web.demo.svc.cluster.local.", A, "No Error +soa []"),
        (
            "20.0.1.127.in-addr.arpa.",
            PTR,
            "No Error [web.demo.svc.cluster.local.]",
        ),
        // 2.4 a headless Service: every ready endpoint, by hostname too; SRV per endpoint.
        (
            "db.demo.svc.cluster.local.",
            A,
            "No Error [127.16.0.5, 127.16.0.6]",
        ),
        (
            "db-0.db.demo.svc.cluster.local.",
            A,
            "No Error [127.16.0.5]",
        ),
        (
            "127-16-0-6.db.demo.svc.cluster.local.",
            A,
            "No Error [127.16.0.6]",
        ),
        (
            "db-2.db.demo.svc.cluster.local.",
            A,
            "Non-Existent Domain +soa []",
        ),
        (
            "_pg._tcp.db.demo.svc.cluster.local.",
            SRV,
            "No Error [5432 127-16-0-6.db.demo.svc.cluster.local., 5432 db-0.db.demo.svc.cluster.local.]",
        ),
        (
            "5.0.16.127.in-addr.arpa.",
            PTR,
            "No Error [db-0.db.demo.svc.cluster.local.]",
        ),
        // No ready endpoint: NXDOMAIN (2.4.1).
        (
            "empty.demo.svc.cluster.local.",
            A,
            "Non-Existent Domain +soa []",
        ),
        // 2.5 ExternalName: a CNAME, chased upstream outside the zone, here inside it.
        (
            "ext.demo.svc.cluster.local.",
            A,
            "No Error [cname www.example.org.] chase www.example.org.",
        ),
        (
            "ext.demo.svc.cluster.local.",
            CNAME,
            "No Error [cname www.example.org.]",
        ),
        (
            "alias.demo.svc.cluster.local.",
            A,
            "No Error [127.1.0.20, cname web.demo.svc.cluster.local.]",
        ),
        // 2.6 pods by dashed address, and a pod's reverse name.
        ("1-2-3-4.demo.pod.cluster.local.", A, "No Error [1.2.3.4]"),
        (
            "1-2-3.demo.pod.cluster.local.",
            A,
            "Non-Existent Domain +soa []",
        ),
        (
            "9.0.16.127.in-addr.arpa.",
            PTR,
            "No Error [127-16-0-9.demo.pod.cluster.local.]",
        ),
        // The apex and the names between: NODATA, not NXDOMAIN; unknown names NXDOMAIN.
        (
            "cluster.local.",
            SOA,
            "No Error [soa ns.dns.cluster.local.]",
        ),
        ("cluster.local.", NS, "No Error [ns ns.dns.cluster.local.]"),
        ("ns.dns.cluster.local.", A, "No Error [127.1.0.10]"),
        ("cluster.local.", A, "No Error +soa []"),
        ("svc.cluster.local.", A, "No Error +soa []"),
        ("demo.svc.cluster.local.", A, "No Error +soa []"),
        ("nope.svc.cluster.local.", A, "Non-Existent Domain +soa []"),
        (
            "nope.demo.svc.cluster.local.",
            A,
            "Non-Existent Domain +soa []",
        ),
        (
            "a.b.c.d.e.f.cluster.local.",
            A,
            "Non-Existent Domain +soa []",
        ),
        // Not ours: forwarded (and an unknown address's reverse name falls through).
        ("www.example.org.", A, "elsewhere"),
        ("1.0.0.10.in-addr.arpa.", PTR, "elsewhere"),
    ];
    for (name, qtype, want) in cases {
        assert_eq!(ask(&zone, &index, name, *qtype), *want, "{name} {qtype}");
    }
}

#[test]
fn changes_show_at_once() {
    let (zone, mut index) = fixture();
    let before = index.generation();
    index.set_slice(&slice(
        json!({"metadata": {"name": "db-abc", "namespace": "demo",
            "labels": {"kubernetes.io/service-name": "db"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.16.0.8"], "conditions": {}}],
        "ports": [{"name": "pg", "port": 5432}]}),
    ));
    assert!(index.generation() > before);
    assert_eq!(
        ask(&zone, &index, "db.demo.svc.cluster.local.", RecordType::A),
        "No Error [127.16.0.8]"
    );
    assert_eq!(
        ask(&zone, &index, "5.0.16.127.in-addr.arpa.", RecordType::PTR),
        "elsewhere"
    );
    index.remove_service("demo", "web");
    assert_eq!(
        ask(&zone, &index, "web.demo.svc.cluster.local.", RecordType::A),
        "Non-Existent Domain +soa []"
    );
    assert_eq!(
        ask(&zone, &index, "20.0.1.127.in-addr.arpa.", RecordType::PTR),
        "elsewhere"
    );
    // The same object again changes nothing.
    let g = index.generation();
    index.set_service(&service(
        json!({"metadata": {"name": "db", "namespace": "demo"},
        "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}}),
    ));
    assert_eq!(index.generation(), g);
}

fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).expect("a name"), qtype));
    if let Some(p) = edns {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.set_edns(e);
    }
    m.to_vec().expect("encodes")
}

fn reply(h: Handled) -> Message {
    match h {
        Handled::Reply(r) => Message::from_vec(&r.bytes).expect("a reply that parses"),
        other => panic!("not a reply: {other:?}"),
    }
}

#[test]
fn packets_hostile_or_large() {
    let (zone, mut index) = fixture();
    // Garbage and truncated packets: dropped below a header, FORMERR with one.
    assert!(matches!(
        handle(b"", Transport::Udp, &zone, &index),
        Handled::Drop
    ));
    assert!(matches!(
        handle(b"\x01\x02\x03", Transport::Udp, &zone, &index),
        Handled::Drop
    ));
    let q = query("web.demo.svc.cluster.local.", RecordType::A, None);
    let r = reply(handle(&q[..q.len() - 3], Transport::Udp, &zone, &index));
    assert_eq!(
        (r.metadata.id, r.metadata.response_code),
        (4242, ResponseCode::FormErr)
    );
    let mut garbage = vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01];
    garbage.extend(std::iter::repeat_n(0xff, 40));
    let r = reply(handle(&garbage, Transport::Udp, &zone, &index));
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // A response is never answered (no loops between servers).
    let mut resp = q.clone();
    resp[2] |= 0x80;
    assert!(matches!(
        handle(&resp, Transport::Udp, &zone, &index),
        Handled::Drop
    ));
    // Other opcodes, classes and zone transfers.
    let mut notify = q.clone();
    notify[2] = (notify[2] & !0x78) | (4 << 3);
    assert_eq!(
        reply(handle(&notify, Transport::Udp, &zone, &index))
            .metadata
            .response_code,
        ResponseCode::NotImp
    );
    let axfr = query("cluster.local.", RecordType::AXFR, None);
    assert_eq!(
        reply(handle(&axfr, Transport::Tcp, &zone, &index))
            .metadata
            .response_code,
        ResponseCode::Refused
    );
    // A valid query after all that: answered, authoritative, the question echoed.
    let r = reply(handle(&q, Transport::Udp, &zone, &index));
    assert_eq!(r.metadata.message_type, MessageType::Response);
    assert_eq!(r.metadata.op_code, OpCode::Query);
    assert!(r.metadata.authoritative && r.metadata.recursion_desired);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.queries, Message::from_vec(&q).expect("parses").queries);

    // 60 ready endpoints (about 1 KB): too large for 512 bytes of UDP, so TC and no
    // records; whole over TCP; EDNS raises the limit to what the client offers, within 1232.
    let endpoints: Vec<_> = (0..60)
        .map(|i| json!({"addresses": [format!("127.17.0.{}", i + 1)], "conditions": {"ready": true}}))
        .collect();
    index.set_service(&service(
        json!({"metadata": {"name": "big", "namespace": "demo"}, "spec": {"clusterIP": "None"}}),
    ));
    index.set_slice(&slice(json!({"metadata": {"name": "big-1", "namespace": "demo",
        "labels": {"kubernetes.io/service-name": "big"}}, "addressType": "IPv4", "endpoints": endpoints})));
    let big = query("big.demo.svc.cluster.local.", RecordType::A, None);
    let r = reply(handle(&big, Transport::Udp, &zone, &index));
    assert!(r.metadata.truncation && r.answers.is_empty());
    let r = reply(handle(&big, Transport::Tcp, &zone, &index));
    assert!(!r.metadata.truncation);
    assert_eq!(r.answers.len(), 60);
    let big_edns = query("big.demo.svc.cluster.local.", RecordType::A, Some(4096));
    let r = reply(handle(&big_edns, Transport::Udp, &zone, &index));
    assert!(!r.metadata.truncation && r.answers.len() == 60 && r.edns.is_some());
    // Every TTL is short.
    assert!(r.answers.iter().all(|a| a.ttl <= 30));
    let ips: Vec<IpAddr> = r
        .answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::A(x) => Some(IpAddr::V4(x.0)),
            _ => None,
        })
        .collect();
    assert_eq!(ips.len(), 60);
}

#[test]
fn cached_answers_are_the_full_path_s_with_the_query_s_id_and_case() {
    let (zone, index) = fixture();
    let mut cache = crate::wire::AnswerCache::default();
    let g = index.generation();
    for (name, qtype, edns) in [
        ("web.demo.svc.cluster.local.", RecordType::A, None),
        (
            "_pg._tcp.db.demo.svc.cluster.local.",
            RecordType::SRV,
            Some(1232),
        ),
        ("nope.demo.svc.cluster.local.", RecordType::A, Some(4096)),
    ] {
        let first = query(name, qtype, edns);
        let Handled::Reply(r) = handle(&first, Transport::Udp, &zone, &index) else {
            panic!("a reply");
        };
        assert!(cache.get(&first, Transport::Udp, g).is_none());
        cache.put(&first, Transport::Udp, g, &r.bytes);
        // Another id, the name in other case.
        let mut again = query(&name.to_ascii_uppercase(), qtype, edns);
        again[..2].copy_from_slice(&[0x77, 0x01]);
        let hit = cache
            .get(&again, Transport::Udp, g)
            .expect("a cached answer");
        let Handled::Reply(full) = handle(&again, Transport::Udp, &zone, &index) else {
            panic!("a reply");
        };
        let (a, b) = (
            Message::from_vec(&hit.bytes).expect("parses"),
            Message::from_vec(&full.bytes).expect("parses"),
        );
        assert_eq!(a.metadata, b.metadata, "{name}");
        assert_eq!(a.queries, b.queries, "{name}");
        assert_eq!(a.queries[0].name().to_string(), name.to_ascii_uppercase());
        assert_eq!(a.answers.len(), b.answers.len(), "{name}");
        assert_eq!((hit.qtype, hit.rcode), (Some(qtype), full.rcode));
        // A changed index, another transport or another EDNS size: not this answer.
        assert!(cache.get(&again, Transport::Udp, g + 1).is_none());
        assert!(cache.get(&again, Transport::Tcp, g).is_none());
        let other = query(name, qtype, if edns.is_some() { None } else { Some(1232) });
        assert!(cache.get(&other, Transport::Udp, g).is_none());
    }
    // Not simple: two questions, a response, garbage.
    let mut two = query("web.demo.svc.cluster.local.", RecordType::A, None);
    two[5] = 2;
    assert!(cache.get(&two, Transport::Udp, g).is_none());
    assert!(
        cache
            .get(b"\x00\x01garbage garbage garbage", Transport::Udp, g)
            .is_none()
    );
}

/// `clusterset.local` beside `cluster.local`: two imports (a ClusterSetIP one with TCP and
/// UDP on one port, a headless one) and their slices from two clusters.
fn clusterset_fixture() -> (Zone, Index) {
    let (zone, mut index) = fixture();
    let zone = zone
        .with_clusterset("clusterset.local")
        .expect("a clusterset zone");
    let import = |v: serde_json::Value| -> kube::api::DynamicObject {
        serde_json::from_value(v).expect("a ServiceImport")
    };
    index.set_import(&import(json!({
        "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceImport",
        "metadata": {"name": "hello", "namespace": "demo"},
        "spec": {"type": "ClusterSetIP", "ips": ["127.0.64.1"],
                 "ports": [{"name": "tcp", "port": 42, "protocol": "TCP"}, {"name": "udp", "port": 42, "protocol": "UDP"}]}})));
    index.set_import(&import(json!({
        "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceImport",
        "metadata": {"name": "db", "namespace": "demo"},
        "spec": {"type": "Headless", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}})));
    index.set_import(&import(json!({
        "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceImport",
        "metadata": {"name": "gone", "namespace": "demo"},
        "spec": {"type": "Headless", "ports": [{"port": 1}]}})));
    let mcs = |name: &str, service: &str, cluster: &str, endpoints: serde_json::Value| {
        slice(
            json!({"metadata": {"name": name, "namespace": "demo", "labels": {
                "multicluster.kubernetes.io/service-name": service,
                "multicluster.kubernetes.io/source-cluster": cluster,
                "endpointslice.kubernetes.io/managed-by": "mcs-controller.atoll.io"}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}]}),
        )
    };
    index.set_slice(&mcs(
        "db-c1-0",
        "db",
        "c1",
        json!([{"addresses": ["127.16.1.5"], "hostname": "db-0", "conditions": {"ready": true}},
               {"addresses": ["127.16.1.6"], "hostname": "db-1", "conditions": {"ready": false}}]),
    ));
    index.set_slice(&mcs(
        "db-c2-0",
        "db",
        "c2",
        json!([{"addresses": ["127.16.2.5"], "hostname": "db-0", "conditions": {"ready": true}}]),
    ));
    // Not an imported slice: a slice someone labelled by hand is not served.
    index.set_slice(&slice(
        json!({"metadata": {"name": "fake", "namespace": "demo", "labels": {
            "multicluster.kubernetes.io/service-name": "db",
            "multicluster.kubernetes.io/source-cluster": "c9"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["127.9.9.9"]}]}),
    ));
    (zone, index)
}

#[test]
fn the_mcs_specification_s_records() {
    let (zone, index) = clusterset_fixture();
    use RecordType::*;
    let cases: &[(&str, RecordType, &str)] = &[
        ("dns-version.clusterset.local.", TXT, "No Error [1.0.0]"),
        // 2.3.1 the ClusterSetIP; 2.3.2 one SRV per named port, the bare name collapsed.
        (
            "hello.demo.svc.clusterset.local.",
            A,
            "No Error [127.0.64.1]",
        ),
        (
            "HELLO.demo.svc.ClusterSet.local.",
            A,
            "No Error [127.0.64.1]",
        ),
        (
            "hello.demo.svc.clusterset.local.",
            SRV,
            "No Error [42 hello.demo.svc.clusterset.local.]",
        ),
        (
            "_udp._udp.hello.demo.svc.clusterset.local.",
            SRV,
            "No Error [42 hello.demo.svc.clusterset.local.]",
        ),
        // 2.3.4 no per-cluster names for a ClusterSetIP service.
        (
            "c1.hello.demo.svc.clusterset.local.",
            A,
            "Non-Existent Domain +soa []",
        ),
        // 2.4.1 headless: every ready endpoint of every cluster, by hostname and cluster.
        (
            "db.demo.svc.clusterset.local.",
            A,
            "No Error [127.16.1.5, 127.16.2.5]",
        ),
        (
            "db-0.c1.db.demo.svc.clusterset.local.",
            A,
            "No Error [127.16.1.5]",
        ),
        (
            "db-0.c2.db.demo.svc.clusterset.local.",
            A,
            "No Error [127.16.2.5]",
        ),
        (
            "db-1.c1.db.demo.svc.clusterset.local.",
            A,
            "Non-Existent Domain +soa []",
        ),
        (
            "db-0.db.demo.svc.clusterset.local.",
            A,
            "Non-Existent Domain +soa []",
        ),
        // 2.4.2 SRV to each endpoint's own name.
        (
            "_pg._tcp.db.demo.svc.clusterset.local.",
            SRV,
            "No Error [5432 db-0.c1.db.demo.svc.clusterset.local., 5432 db-0.c2.db.demo.svc.clusterset.local.]",
        ),
        // No ready endpoint: NXDOMAIN.
        (
            "gone.demo.svc.clusterset.local.",
            A,
            "Non-Existent Domain +soa []",
        ),
        (
            "nope.demo.svc.clusterset.local.",
            A,
            "Non-Existent Domain +soa []",
        ),
        ("demo.svc.clusterset.local.", A, "No Error +soa []"),
        (
            "other.svc.clusterset.local.",
            A,
            "Non-Existent Domain +soa []",
        ),
        // No pod names there; cluster.local is as it was.
        (
            "127-16-0-9.demo.pod.clusterset.local.",
            A,
            "Non-Existent Domain +soa []",
        ),
        ("web.demo.svc.cluster.local.", A, "No Error [127.1.0.20]"),
        (
            "hello.demo.svc.cluster.local.",
            A,
            "Non-Existent Domain +soa []",
        ),
        (
            "clusterset.local.",
            SOA,
            "No Error [soa ns.dns.clusterset.local.]",
        ),
    ];
    for (name, qtype, want) in cases {
        assert_eq!(ask(&zone, &index, name, *qtype), *want, "{name} {qtype}");
    }
}

#[test]
fn imports_and_their_slices_come_and_go() {
    let (zone, mut index) = clusterset_fixture();
    index.remove_slice("demo", "db-c2-0");
    assert_eq!(
        ask(
            &zone,
            &index,
            "db.demo.svc.clusterset.local.",
            RecordType::A
        ),
        "No Error [127.16.1.5]"
    );
    index.remove_import("demo", "hello");
    assert_eq!(
        ask(
            &zone,
            &index,
            "hello.demo.svc.clusterset.local.",
            RecordType::A
        ),
        "Non-Existent Domain +soa []"
    );
    // Without a clusterset zone, its names are someone else's.
    let (plain, index) = fixture();
    assert_eq!(
        ask(
            &plain,
            &index,
            "hello.demo.svc.clusterset.local.",
            RecordType::A
        ),
        "elsewhere"
    );
}
