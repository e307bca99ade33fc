#![no_main]
//! Request paths and query strings are untrusted: parsing must never panic.

use atoll_apiserver::request::{Query, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let (path, query) = s.split_once('?').unwrap_or((s, ""));
    let q = Query::parse(Some(query));
    for m in [http::Method::GET, http::Method::POST, http::Method::DELETE, http::Method::PATCH] {
        let _ = parse(&m, path, &q);
    }
    let _ = q.int("limit");
    let _ = q.dry_run();
});
