//! `task:task_newtask`: a child of a tracked process is tracked too (containerd →
//! shim → runc → nginx; kubelet → CNI plugin), on the same node.
//!
//! This hook rather than `sched_process_fork` because it carries `clone_flags`, which
//! tells a new thread (ignored) from a new process.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use ktrail_agent_common::{
    maps::DROP_TRACKED_FULL, EventKind, TrackedProcess, PROC_NO_FD_CACHE, TRACKED_BY_PARENT,
};

use crate::{
    emit::{count_drop, fill_header, is_tracked, output, track, tracked},
    maps::{ENTERED, PROCESS_SCRATCH, PROCS},
};

use ktrail_agent_common::tracepoints::newtask::{CLONE_FLAGS, PID as CHILD_PID};

const CLONE_THREAD: u64 = 0x0001_0000;
const CLONE_FILES: u64 = 0x0000_0400;

#[tracepoint]
pub fn task_newtask(ctx: TracePointContext) -> u32 {
    let _ = try_task_newtask(&ctx);
    0
}

fn try_task_newtask(ctx: &TracePointContext) -> Result<(), i64> {
    let child = unsafe { ctx.read_at::<i32>(CHILD_PID)? } as u32;
    // A new thread's first exit (the return from clone) must not pair with a slot its
    // tid's previous owner left set (a thread that exec'd gave its tid up mid-syscall).
    if let Some(slot) = ENTERED.get_ptr_mut(child) {
        unsafe { *slot = 0 };
    }
    let flags: u64 = unsafe { ctx.read_at(CLONE_FLAGS)? };
    if flags & CLONE_THREAD != 0 {
        return Ok(());
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    if !is_tracked(tgid) {
        return Ok(());
    }
    let Some(parent) = tracked(tgid) else {
        return Ok(());
    };
    let entry = TrackedProcess {
        node_netns: parent.node_netns,
        flags: TRACKED_BY_PARENT,
    };
    if track(child, &entry).is_err() {
        count_drop(DROP_TRACKED_FULL);
        return Ok(());
    }
    if flags & CLONE_FILES != 0 {
        // Two processes, one fd table: either may close the other's fds, which the fd
        // cache would not see (fd_cache.rs).
        for pid in [tgid, child] {
            if let Some(slot) = PROCS.get_ptr_mut(pid) {
                // SAFETY: a valid map value.
                unsafe { (*slot).state |= PROC_NO_FD_CACHE };
            }
        }
    }
    let ev = unsafe { &mut *PROCESS_SCRATCH.get_ptr_mut(0).ok_or(-1i64)? };
    fill_header(&mut ev.header, EventKind::ProcessFork as u32, 0, pid_tgid);
    ev.other_pid = child;
    ev.netns = parent.node_netns;
    ev.group_dead = 0;
    ev.filename_len = 0;
    output(ev);
    Ok(())
}
