//! Helpers shared by the probes: headers, loss counters, config, tracking checks.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    cty::c_void,
    helpers::{
        bpf_get_current_comm, bpf_get_current_pid_tgid, bpf_get_smp_processor_id, bpf_ktime_get_ns,
        gen,
    },
};
use ktrail_agent_common::{
    maps::{DROP_READ_FAILED, DROP_RINGBUF_FULL, WAKEUP_BYTES},
    AgentConfig, EventHeader, EventKind, SocketInfo, SyscallEvent, TrackedProcess,
    FLAG_PAYLOAD_READ_FAILED, FLAG_PAYLOAD_TRUNCATED, MAX_PAYLOAD,
};

use crate::maps::{SyscallScratch, CONFIG, DROPS, EVENTS, TRACKED};

/// A mask the verifier understands; the real bound is MAX_PAYLOAD (see SyscallScratch).
const LEN_MASK: u64 = (2 * MAX_PAYLOAD - 1) as u64;

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

/// Starts a data event in the scratch map: header, syscall tag, fd, return value and
/// duration since `enter_ns`; payload, socket, flags and `requested` start empty.
#[inline(always)]
pub fn start_syscall_event(ev: &mut SyscallEvent, nr: u32, fd: i32, ret: i64, enter_ns: u64) {
    fill_header(&mut ev.header, EventKind::Syscall as u32, enter_ns);
    ev.nr = nr;
    ev.fd = fd;
    ev.ret = ret;
    ev.duration_ns = unsafe { bpf_ktime_get_ns() } - enter_ns;
    ev.requested = 0;
    ev.flags = 0;
    ev.payload_len = 0;
    ev.socket = SocketInfo::default();
}

/// Copies the first bytes of a user buffer holding `avail` bytes into the payload.
#[inline(always)]
pub fn capture_payload(ev: &mut SyscallEvent, cfg: &AgentConfig, buf: u64, avail: u64) {
    let cap = if cfg.payload_bytes as u64 > MAX_PAYLOAD as u64 {
        MAX_PAYLOAD as u64
    } else {
        cfg.payload_bytes as u64
    };
    let mut n = if avail < cap { avail } else { cap };
    n &= LEN_MASK;
    let rc = unsafe {
        gen::bpf_probe_read_user(
            ev.payload.as_mut_ptr() as *mut c_void,
            n as u32,
            buf as *const c_void,
        )
    };
    if rc < 0 {
        ev.flags |= FLAG_PAYLOAD_READ_FAILED;
        count_drop(DROP_READ_FAILED);
    } else {
        ev.payload_len = n as u32;
        if avail > n {
            ev.flags |= FLAG_PAYLOAD_TRUNCATED;
        }
    }
}

/// Sends the header and only the captured part of the payload.
#[inline(always)]
pub fn send_syscall_event(scratch: &SyscallScratch) {
    let len =
        (SyscallEvent::HEADER_LEN as u64 + (scratch.event.payload_len as u64 & LEN_MASK)) as usize;
    let bytes = unsafe { core::slice::from_raw_parts(scratch as *const _ as *const u8, len) };
    output(bytes);
}

/// Writes a record into `EVENTS` (counting a full ring as a drop) without waking the
/// reader, unless this record takes the unread data past `WAKEUP_BYTES`. The default
/// (flags 0) wakes a caught-up reader at every record: an irq_work self-interrupt and a
/// context switch per event. The agent drains on a short timer as well, so a record
/// that wakes no one waits at most that long. Two CPUs racing past the mark may both
/// wake it or neither; the timer covers the second case.
#[inline(always)]
pub fn output<T: ?Sized>(data: &T) {
    let len = core::mem::size_of_val(data) as u64;
    let avail = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let flags = if avail < WAKEUP_BYTES && avail + len >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    if EVENTS.output(data, flags as u64).is_err() {
        count_drop(DROP_RINGBUF_FULL);
    }
}
