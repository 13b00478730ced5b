//! CRI messages: the first byte picks the method and direction.
#![no_main]
use ktrail_protocols::cri;
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 8] = [
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PullImage",
    "ImageStatus",
    "Version",
];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else { return };
    let method = METHODS[(sel as usize >> 1) % METHODS.len()];
    let _ = cri::decode("runtime.v1.RuntimeService", method, msg, sel & 1 == 0, false);
});
