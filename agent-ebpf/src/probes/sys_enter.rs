//! `syscalls:sys_enter_*` (one program attached to each traced syscall): remember the
//! arguments and entry time of a tracked thread's syscall until its exit.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};
use ktrail_agent_common::{maps::DROP_INFLIGHT_FULL, SocketInfo, Syscall};

use crate::{
    emit::{config, count_drop, tracked},
    kernel::socket_of_fd,
    maps::{Inflight, INFLIGHT},
};

use ktrail_agent_common::tracepoints::sys::{ARG0, SYSCALL_NR};

#[tracepoint]
pub fn sys_enter(ctx: TracePointContext) -> u32 {
    let _ = try_sys_enter(&ctx);
    0
}

fn try_sys_enter(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    // The fast path for every untracked process: one hash lookup.
    if tracked((pid_tgid >> 32) as u32).is_none() {
        return Ok(());
    }
    let nr: i32 = unsafe { ctx.read_at(SYSCALL_NR)? };
    let mut entry = Inflight {
        nr: nr as u32,
        _pad: 0,
        enter_ns: unsafe { bpf_ktime_get_ns() },
        args: unsafe {
            [
                ctx.read_at::<u64>(ARG0)?,
                ctx.read_at::<u64>(ARG0 + 8)?,
                ctx.read_at::<u64>(ARG0 + 16)?,
            ]
        },
        socket: SocketInfo::default(),
    };
    if nr as u32 == Syscall::Close as u32 {
        // After close the fd no longer leads to the socket.
        if let Some(cfg) = config() {
            let _ = socket_of_fd(&cfg.offsets, entry.args[0] as i32 as i64, &mut entry.socket);
        }
    }
    if INFLIGHT.insert(&pid_tgid, &entry, 0).is_err() {
        count_drop(DROP_INFLIGHT_FULL);
    }
    Ok(())
}
