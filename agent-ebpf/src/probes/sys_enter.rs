//! `raw_syscalls:sys_enter`, as a raw tracepoint: runs at every syscall of every
//! process. An untraced syscall costs a compare on its number; a traced syscall of an
//! untracked process one inlined array read more (`PROCS`). For a tracked thread the
//! syscall's tag and entry time go into its `ENTERED` slot.
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
    maps::DROP_INFLIGHT_FULL, FdChange, SocketInfo, Syscall, ENTERED_TAG_SHIFT,
    ENTERED_TIME_MASK, PROC_NO_FD_CACHE,
};

use crate::{
    emit::{config, count_drop, forget_fds, is_tracked},
    fd_cache,
    kernel::{socket_of_fd, syscall_args},
    maps::{CLOSING, ENTERED, PROCS},
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
        if let Some(change) = FdChange::from_nr(id) {
            fds_change(change);
        }
        return Ok(());
    };
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_tracked(tgid) {
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
        let fd = fd as i32 as i64;
        let mut socket = SocketInfo::default();
        if let Some(cfg) = config() {
            let _ = socket_of_fd(&cfg.offsets, tgid, fd, &mut socket);
        }
        // Whether or not the close succeeds, the fd's next file is another one.
        fd_cache::forget(tgid, fd);
        if CLOSING.insert(&pid_tgid, &socket, 0).is_err() {
            count_drop(DROP_INFLIGHT_FULL);
        }
    }
    Ok(())
}

/// A traced process is about to close or replace fds without `close`: its cached fds
/// are stale (before the syscall runs, so no thread caches the old file after it).
#[inline(always)]
fn fds_change(change: FdChange) {
    let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
    if !is_tracked(tgid) {
        return;
    }
    match change {
        FdChange::Replaces => forget_fds(tgid),
        FdChange::IoUring => {
            if let Some(slot) = PROCS.get_ptr_mut(tgid) {
                // SAFETY: a valid map value; a racing thread sets the same bit.
                unsafe { (*slot).state |= PROC_NO_FD_CACHE };
            }
        }
    }
}
