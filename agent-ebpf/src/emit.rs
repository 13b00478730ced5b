//! Helpers shared by the probes: headers, loss counters, config, tracking checks.

use aya_ebpf::helpers::{
    bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
};
use ktrail_agent_common::{AgentConfig, EventHeader, TrackedProcess};

use crate::maps::{CONFIG, DROPS, TRACKED};

#[inline(always)]
pub fn count_drop(slot: u32) {
    if let Some(counter) = DROPS.get_ptr_mut(slot) {
        // Per-CPU slot: no other CPU writes it, so a plain add is race-free.
        unsafe { *counter += 1 };
    }
}

#[inline(always)]
pub fn config() -> Option<&'static AgentConfig> {
    CONFIG.get(0)
}

#[inline(always)]
pub fn current_tgid() -> u32 {
    (bpf_get_current_pid_tgid() >> 32) as u32
}

#[inline(always)]
pub fn tracked(tgid: u32) -> Option<TrackedProcess> {
    unsafe { TRACKED.get(&tgid).copied() }
}

#[inline(always)]
pub fn fill_header(header: &mut EventHeader, kind: u32, ktime_ns: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    header.kind = kind;
    header.cpu = unsafe { bpf_get_smp_processor_id() };
    header.ktime_ns = if ktime_ns == 0 {
        unsafe { bpf_ktime_get_ns() }
    } else {
        ktime_ns
    };
    header.tgid = (pid_tgid >> 32) as u32;
    header.tid = pid_tgid as u32;
    header.comm = bpf_get_current_comm().unwrap_or([0; 16]);
}
