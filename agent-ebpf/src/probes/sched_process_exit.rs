//! `sched:sched_process_exit`: stop tracking a process when its last thread exits,
//! and forget a syscall a dying thread left in flight.

use aya_ebpf::{
    helpers::bpf_get_current_pid_tgid, macros::tracepoint, programs::TracePointContext,
};
use ktrail_agent_common::EventKind;

use crate::{
    emit::{fill_header, is_tracked, output, tracked, untrack},
    maps::{CLOSING, ENTERED, PROCESS_SCRATCH},
};

use ktrail_agent_common::tracepoints::exit::GROUP_DEAD;

#[tracepoint]
pub fn sched_process_exit(ctx: TracePointContext) -> u32 {
    let _ = try_sched_process_exit(&ctx);
    0
}

fn try_sched_process_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let tgid = (pid_tgid >> 32) as u32;
    // Every thread exit of every process passes here: the array first.
    if !is_tracked(tgid) {
        return Ok(());
    }
    let Some(entry) = tracked(tgid) else {
        return Ok(());
    };
    // A thread killed inside a traced syscall never reaches its exit.
    if let Some(slot) = ENTERED.get_ptr_mut(pid_tgid as u32) {
        unsafe { *slot = 0 };
    }
    let _ = CLOSING.remove(&pid_tgid);
    let group_dead: u8 = unsafe { ctx.read_at(GROUP_DEAD)? };
    if group_dead == 0 {
        return Ok(());
    }
    untrack(tgid);
    let ev = unsafe { &mut *PROCESS_SCRATCH.get_ptr_mut(0).ok_or(-1i64)? };
    fill_header(&mut ev.header, EventKind::ProcessExit as u32, 0, pid_tgid);
    ev.other_pid = 0;
    ev.netns = entry.node_netns;
    ev.group_dead = 1;
    ev.filename_len = 0;
    output(ev);
    Ok(())
}
