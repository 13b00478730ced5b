//! Empty programs on `raw_syscalls:sys_enter/sys_exit`, attached instead of the real
//! ones by the agent's hidden `--empty-syscall-programs` (benchmarks only): what every
//! syscall of every process pays for syscall tracing on this kernel before any of
//! ktrail's own work, the floor of the overhead figures in BENCHMARKS.md.

use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_empty(_ctx: RawTracePointContext) -> i32 {
    0
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit_empty(_ctx: RawTracePointContext) -> i32 {
    0
}
