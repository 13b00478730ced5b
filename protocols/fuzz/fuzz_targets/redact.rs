//! Redaction of body prefixes: never panics, and never leaves a PEM private
//! key body behind.
#![no_main]
use ktrail_protocols::redact;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut b = data.to_vec();
    let _ = redact::body(&mut b, data.first().is_some_and(|c| c & 1 == 1));
    let mut b = data.to_vec();
    let _ = redact::redact_bearer(&mut b);
    let _ = redact::redact_pem(&mut b);
});
