#![no_main]
//! Field selectors come from query strings: parsing and matching must never panic.

use atoll_apiserver::selector::FieldSelector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(sel) = FieldSelector::parse(s)
    {
        let _ = sel.matches(|f| (f == "metadata.name").then(|| "x".to_string()));
    }
});
