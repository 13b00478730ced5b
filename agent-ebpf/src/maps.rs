//! Every map the programs share with the agent. Names match `ktrail_agent_common::maps`.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use ktrail_agent_common::{
    maps::{
        DEFAULT_MAX_TIDS, DROP_SLOTS, MAX_CLOSING, MAX_FD_CACHE, MAX_GO_CONN_TYPES, MAX_GO_TLS_CALLS, MAX_OWN_COMMS, MAX_SOCK_OWNERS, MAX_TARGETS,
        MAX_TRACKED, RING_BYTES,
    },
    AgentConfig, FdCacheEntry, FdKey, GoCall, GoCallKey, GoConnTypeKey, ProcSlot, ProcessEvent, SocketInfo, SyscallEvent, TargetPattern,
    TrackedProcess, MAX_PAYLOAD,
};

#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// tgid → why it is traced. Written at exec (name match), fork (inheritance) and by
/// the agent's /proc scan at start.
#[map]
pub static TRACKED: HashMap<u32, TrackedProcess> = HashMap::with_max_entries(MAX_TRACKED, 0);

/// Per process (index = tgid): whether it is traced (mirrors `TRACKED`; see
/// emit.rs `track`/`untrack`) and its fd cache generation. An array, not a hash, because
/// the entry program runs at every traced syscall number of every process and must
/// reject an untraced one with one inlined array read. Each slot is 8 bytes; the agent
/// sizes the array to the kernel's pid_max at load, like `ENTERED`.
#[map]
pub static PROCS: Array<ProcSlot> = Array::with_max_entries(DEFAULT_MAX_TIDS, 0);

/// (tgid, fd) → what the fd → socket walk found behind it (fd_cache.rs).
#[map]
pub static FD_CACHE: LruHashMap<FdKey, FdCacheEntry> =
    LruHashMap::with_max_entries(MAX_FD_CACHE, 0);

#[map]
pub static TARGETS: Array<TargetPattern> = Array::with_max_entries(MAX_TARGETS, 0);

/// ktrail's own binaries (see agent/src/exclude.rs): never traced, even as a
/// descendant of a target (the collector's pod descends from a containerd shim).
#[map]
pub static OWN_COMMS: Array<TargetPattern> = Array::with_max_entries(MAX_OWN_COMMS, 0);

#[map]
pub static CONFIG: Array<AgentConfig> = Array::with_max_entries(1, 0);

/// Per-CPU loss counters, indexed by `DROP_*`.
#[map]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::with_max_entries(DROP_SLOTS, 0);

/// Per thread (index = tid): the traced syscall in flight, packed with its entry time
/// (`ENTERED_TAG_SHIFT`); 0 when none. An array, not a hash, because the exit program
/// runs at every syscall exit of every process and must reject untraced ones with one
/// inlined array read. Each slot is written only by its own thread. The agent sizes it
/// to the kernel's pid_max at load.
#[map]
pub static ENTERED: Array<u64> = Array::with_max_entries(DEFAULT_MAX_TIDS, 0);

/// pid_tgid → the socket a tracked thread is closing, looked up at entry, since after
/// close the fd no longer leads to it.
#[map]
pub static CLOSING: HashMap<u64, SocketInfo> = HashMap::with_max_entries(MAX_CLOSING, 0);

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

/// Per process and concrete `net.Conn` type (its itab) under a `tls.Conn`: which
/// [`go_tls`](crate::probes::go_tls) conn path led to a real socket, so the search runs
/// once per type instead of once per call.
#[map]
pub static GO_CONN_TYPES: LruHashMap<GoConnTypeKey, u32> =
    LruHashMap::with_max_entries(MAX_GO_CONN_TYPES, 0);

/// Per-CPU buffer for reading several fields of a kernel struct at once (kernel.rs
/// `Span`): twice the span, so any masked offset plus the field fits.
#[map]
pub static SPAN_BUF: PerCpuArray<[u64; 32]> = PerCpuArray::with_max_entries(1, 0);
