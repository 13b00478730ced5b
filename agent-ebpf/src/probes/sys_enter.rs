//! `raw_syscalls:sys_enter`, as a raw tracepoint: runs at every syscall of every
//! process. An untraced syscall costs a compare on its number; a traced syscall of an
//! untracked process one hash lookup more. For a tracked thread the syscall's tag and
//! entry time go into its `ENTERED` slot.
//!
//! A raw tracepoint, not `syscalls:sys_enter_<name>`: those are perf events, and the
//! kernel builds a perf record (buffer, argument copy) for each one before the program
//! even runs, for every process. Here the program gets `(struct pt_regs *, long id)`.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns},
    macros::raw_tracepoint,
    programs::RawTracePointContext,
    EbpfContext,
};
use ktrail_agent_common::{
    maps::DROP_INFLIGHT_FULL, SocketInfo, Syscall, ENTERED_TAG_SHIFT, ENTERED_TIME_MASK,
};

use crate::{
    emit::{config, count_drop, tracked},
    kernel::{socket_of_fd, syscall_args},
    maps::{CLOSING, ENTERED},
};

#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter(ctx: RawTracePointContext) -> i32 {
    let _ = try_sys_enter(&ctx);
    0
}

fn try_sys_enter(ctx: &RawTracePointContext) -> Result<(), i64> {
    let args = ctx.as_ptr() as *const u64;
    // SAFETY: a raw tracepoint's context is its arguments, (regs, id) for sys_enter.
    let id = unsafe { *args.add(1) };
    let Some(syscall) = Syscall::from_nr(id) else {
        return Ok(());
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    if tracked((pid_tgid >> 32) as u32).is_none() {
        return Ok(());
    }
    let Some(slot) = ENTERED.get_ptr_mut(pid_tgid as u32) else {
        // A tid beyond the table (pid_max raised after the agent started).
        count_drop(DROP_INFLIGHT_FULL);
        return Ok(());
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: the slot belongs to this thread; only it writes the slot in between.
    unsafe { *slot = (syscall.tag() << ENTERED_TAG_SHIFT) | (now & ENTERED_TIME_MASK) };
    if syscall == Syscall::Close {
        // After close the fd no longer leads to the socket.
        let regs = unsafe { *args } as *const u8;
        let [fd, _, _] = syscall_args(regs)?;
        let mut socket = SocketInfo::default();
        if let Some(cfg) = config() {
            let _ = socket_of_fd(&cfg.offsets, fd as i32 as i64, &mut socket);
        }
        if CLOSING.insert(&pid_tgid, &socket, 0).is_err() {
            count_drop(DROP_INFLIGHT_FULL);
        }
    }
    Ok(())
}
