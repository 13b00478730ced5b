//! Map names, so the agent looks maps up by the same names the kernel side declares.

pub const EVENTS: &str = "EVENTS";
pub const TRACKED: &str = "TRACKED";
/// Per-process array (index = tgid) mirroring `TRACKED` for the syscall programs, which
/// must reject an untraced process with one inlined array read instead of a hash lookup.
pub const PROCS: &str = "PROCS";
/// (tgid, fd) → what the fd → socket walk found, so a traced syscall on a known fd reads
/// less kernel memory (see agent-ebpf/src/fd_cache.rs).
pub const FD_CACHE: &str = "FD_CACHE";
pub const MAX_FD_CACHE: u32 = 65_536;
pub const TARGETS: &str = "TARGETS";
/// ktrail's own process names: a tracked process that execs one of them is dropped.
pub const OWN_COMMS: &str = "OWN_COMMS";
pub const MAX_OWN_COMMS: u32 = 4;
pub const CONFIG: &str = "CONFIG";
pub const DROPS: &str = "DROPS";
/// Per-thread array (index = tid): the traced syscall in flight and its entry time.
pub const ENTERED: &str = "ENTERED";
/// pid_tgid → the socket a tracked thread's `close` was called on, looked up at entry.
pub const CLOSING: &str = "CLOSING";
pub const SCRATCH: &str = "SCRATCH";
pub const SOCK_OWNERS: &str = "SOCK_OWNERS";
pub const GO_TLS_CALLS: &str = "GO_TLS_CALLS";
pub const MAX_GO_TLS_CALLS: u32 = 16_384;
pub const GO_CONN_TYPES: &str = "GO_CONN_TYPES";
/// Concrete `net.Conn` types under Go TLS, over all traced processes: a handful each.
pub const MAX_GO_CONN_TYPES: u32 = 4_096;

/// Capacity of the ring buffer shared by all CPUs (bytes, a power of two). The kernel
/// maps a ring's data pages twice (so a reader can read across the wrap) and the
/// agent's RSS counts them twice: 8 MiB shows as 16 MiB. At 200,000 events/s of 256
/// bytes (~90 MB/s) it holds ~90 ms, nine drain ticks.
pub const RING_BYTES: u32 = 8 * 1024 * 1024;
/// How often the agent drains the ring buffer. The kernel programs never wake it
/// (`BPF_RB_NO_WAKEUP`): a wakeup is an irq_work self-interrupt raised on the traced
/// task's CPU, charged to that task (on a VM an APIC write that exits to the
/// hypervisor); one per event was most of the cost of a traced syscall, and even one
/// per 256 KiB was ~10 % of a traced RPC's added CPU. Polling costs the traced tasks
/// nothing.
pub const DRAIN_EVERY_MS: u64 = 10;
/// While the ring is busy, i.e. a drain found at least `BUSY_DRAIN_BYTES` waiting, the
/// next drain comes this soon, so a burst does not wait a full tick in a filling ring.
pub const BUSY_DRAIN_EVERY_MS: u64 = 1;
/// A quarter of the ring: 10 ms at 200 MB/s.
pub const BUSY_DRAIN_BYTES: u64 = RING_BYTES as u64 / 4;
/// Default size of `ENTERED`; the agent sets it to the kernel's pid_max at load.
pub const DEFAULT_MAX_TIDS: u32 = 32_768;
pub const MAX_TRACKED: u32 = 65_536;
/// Close calls in flight at once (entries of `CLOSING`).
pub const MAX_CLOSING: u32 = 16_384;
pub const MAX_SOCK_OWNERS: u32 = 65_536;
/// Slots of the `TARGETS` array: process name patterns matched at exec.
pub const MAX_TARGETS: u32 = 32;

/// Indexes of the per-CPU `DROPS` counters.
pub const DROP_RINGBUF_FULL: u32 = 0;
pub const DROP_INFLIGHT_FULL: u32 = 1;
pub const DROP_TRACKED_FULL: u32 = 2;
pub const DROP_READ_FAILED: u32 = 3;
pub const DROP_SLOTS: u32 = 4;
