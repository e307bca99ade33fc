#![no_main]
//! Protobuf request bodies are untrusted bytes: decoding must never panic or recurse without
//! bound. Inputs are given the Kubernetes prefix so the fuzzer reaches the decoder at once.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut body = b"k8s\0".to_vec();
    body.extend_from_slice(data);
    let _ = atoll_apiserver::protobuf::decode(&body);
});
