//! Every map the programs share with the agent. Names match `ktrail_agent_common::maps`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use ktrail_agent_common::{
    maps::{
        DROP_SLOTS, MAX_GO_TLS_CALLS, MAX_INFLIGHT, MAX_SOCK_OWNERS, MAX_TARGETS, MAX_TRACKED,
        RING_BYTES,
    },
    AgentConfig, GoCall, GoCallKey, ProcessEvent, SocketInfo, SyscallEvent, TargetPattern,
    TrackedProcess, MAX_PAYLOAD,
};

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// tgid → why it is traced. Written at exec (name match), fork (inheritance) and by
/// the agent's /proc scan at start.
#[map]
pub static TRACKED: HashMap<u32, TrackedProcess> = HashMap::with_max_entries(MAX_TRACKED, 0);

#[map]
pub static TARGETS: Array<TargetPattern> = Array::with_max_entries(MAX_TARGETS, 0);

#[map]
pub static CONFIG: Array<AgentConfig> = Array::with_max_entries(1, 0);

/// Per-CPU loss counters, indexed by `DROP_*`.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_SLOTS, 0);

/// A syscall between its entry and exit, per thread (pid_tgid).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Inflight {
    pub nr: u32,
    pub _pad: u32,
    pub enter_ns: u64,
    pub args: [u64; 3],
    /// For close: the socket looked up at entry, as the fd is gone at exit.
    pub socket: SocketInfo,
}

#[map]
pub static INFLIGHT: HashMap<u64, Inflight> = HashMap::with_max_entries(MAX_INFLIGHT, 0);

/// `struct sock *` → owning tgid, so TCP state changes that the kernel makes in softirq
/// context (current = whatever ran) are still attributed to the right process.
#[map]
pub static SOCK_OWNERS: LruHashMap<u64, u32> = LruHashMap::with_max_entries(MAX_SOCK_OWNERS, 0);

/// A syscall event with room behind it: the verifier sees the masked payload length
/// (≤ 2 × MAX_PAYLOAD - 1) and needs the map value to cover it.
#[repr(C)]
pub struct SyscallScratch {
    pub event: SyscallEvent,
    pub _slack: [u8; MAX_PAYLOAD],
}

#[map]
pub static SCRATCH: PerCpuArray<SyscallScratch> = PerCpuArray::with_max_entries(1, 0);

#[map]
pub static PROCESS_SCRATCH: PerCpuArray<ProcessEvent> = PerCpuArray::with_max_entries(1, 0);

/// Go TLS calls between their entry and a return, per goroutine.
#[map]
pub static GO_TLS_CALLS: LruHashMap<GoCallKey, GoCall> =
    LruHashMap::with_max_entries(MAX_GO_TLS_CALLS, 0);
