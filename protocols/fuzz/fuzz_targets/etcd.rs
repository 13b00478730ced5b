//! etcd v3 messages: the first byte picks the method and direction.
#![no_main]
use ktrail_protocols::etcd;
use libfuzzer_sys::fuzz_target;

const METHODS: [&str; 6] = ["Range", "Put", "DeleteRange", "Txn", "Watch", "Compact"];

fuzz_target!(|data: &[u8]| {
    let Some((&sel, msg)) = data.split_first() else { return };
    let method = METHODS[(sel as usize >> 1) % METHODS.len()];
    let mut objs = Vec::new();
    let op = etcd::decode(method, msg, sel & 1 == 0, false, &mut objs);
    assert!(op.keys.len() <= etcd::MAX_LIST && op.events.len() <= etcd::MAX_LIST);
});
