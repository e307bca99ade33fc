#![no_main]
//! Label selectors come from query strings: parsing must never panic, and what parses must
//! match any label set without panicking.

use atoll_apiserver::selector::LabelSelector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(sel) = LabelSelector::parse(s)
    {
        let labels = [("app".to_string(), "web".to_string()), ("n".to_string(), "5".to_string())].into();
        let _ = sel.matches(&labels);
    }
});
