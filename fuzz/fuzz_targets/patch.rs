#![no_main]
//! Patch bodies are untrusted: applying any of the three document patch types to any document
//! must return a result or an error, never panic.

use atoll_apiserver::patch::{PatchKind, apply};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the patch type; the rest is "document\0patch".
    let Some((&kind, rest)) = data.split_first() else { return };
    let kind = match kind % 3 {
        0 => PatchKind::Merge,
        1 => PatchKind::Json,
        _ => PatchKind::Strategic,
    };
    let mut parts = rest.splitn(2, |b| *b == 0);
    let (Some(doc), Some(patch)) = (parts.next(), parts.next()) else { return };
    let (Ok(doc), Ok(patch)) = (serde_json::from_slice::<Value>(doc), serde_json::from_slice::<Value>(patch)) else {
        return;
    };
    let _ = apply(kind, &doc, &patch);
});
