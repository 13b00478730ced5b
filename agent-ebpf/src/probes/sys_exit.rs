//! `syscalls:sys_exit_*`: pair the exit with its entry and send one event with the
//! duration, return value, the socket behind the fd and the first bytes of the data.

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user, gen},
    macros::tracepoint,
    programs::TracePointContext,
};
use ktrail_agent_common::{
    tracepoints::sys::RET, Syscall, SyscallEvent, AF_UNIX, FLAG_PAYLOAD_READ_FAILED,
    FLAG_SOCKET_AT_ENTRY,
};

use crate::{
    emit::{capture_payload, config, send_syscall_event, start_syscall_event},
    kernel::socket_of_fd,
    maps::{INFLIGHT, SCRATCH, SOCK_OWNERS},
};

const MAX_PATH: u32 = 256;

#[repr(C)]
struct IoVec {
    base: u64,
    len: u64,
}

// struct user_msghdr: msg_iov sits after msg_name (8) and msg_namelen (4 + 4 padding).
const MSGHDR_IOV: u64 = 16;

#[tracepoint]
pub fn sys_exit(ctx: TracePointContext) -> u32 {
    let _ = try_sys_exit(&ctx);
    0
}

/// The user buffer and the number of bytes it holds, for data-carrying syscalls.
fn data_buffer(syscall: Syscall, args: &[u64; 3], ret: i64) -> Option<(u64, u64)> {
    if ret <= 0 {
        return None;
    }
    let first_iov = |iov_ptr: u64| -> Option<(u64, u64)> {
        let iov: IoVec = unsafe { bpf_probe_read_user(iov_ptr as *const IoVec).ok()? };
        Some((
            iov.base,
            if (ret as u64) < iov.len {
                ret as u64
            } else {
                iov.len
            },
        ))
    };
    match syscall {
        Syscall::Read | Syscall::Write | Syscall::Recvfrom | Syscall::Sendto => {
            Some((args[1], ret as u64))
        }
        Syscall::Readv | Syscall::Writev => first_iov(args[1]),
        Syscall::Sendmsg | Syscall::Recvmsg => {
            let iov_ptr: u64 =
                unsafe { bpf_probe_read_user((args[1] + MSGHDR_IOV) as *const u64).ok()? };
            first_iov(iov_ptr)
        }
        _ => None,
    }
}

fn try_sys_exit(ctx: &TracePointContext) -> Result<(), i64> {
    let pid_tgid = bpf_get_current_pid_tgid();
    let entry = match unsafe { INFLIGHT.get(&pid_tgid) } {
        Some(e) => *e,
        None => return Ok(()),
    };
    let _ = INFLIGHT.remove(&pid_tgid);
    let Ok(syscall) = Syscall::try_from(entry.nr) else {
        return Ok(());
    };
    let cfg = config().ok_or(-1i64)?;
    let ret: i64 = unsafe { ctx.read_at(RET)? };

    let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0).ok_or(-1i64)? };
    let ev = &mut scratch.event;
    start_syscall_event(ev, entry.nr, entry.args[0] as i32, ret, entry.enter_ns);

    match syscall {
        Syscall::Close => {
            ev.socket = entry.socket;
            ev.flags |= FLAG_SOCKET_AT_ENTRY;
        }
        // The new connection's fd is the return value.
        Syscall::Accept | Syscall::Accept4 | Syscall::Connect => {
            let fd = if syscall == Syscall::Connect {
                entry.args[0] as i32 as i64
            } else {
                ret
            };
            if let Ok(sk) = socket_of_fd(&cfg.offsets, fd, &mut ev.socket) {
                if sk != 0 && ev.socket.family != AF_UNIX {
                    // Later TCP state changes on this socket may run in softirq.
                    let _ = SOCK_OWNERS.insert(&sk, &ev.header.tgid, 0);
                }
            }
        }
        Syscall::Openat => {
            let _ = socket_of_fd(&cfg.offsets, ret, &mut ev.socket);
            read_path(ev, entry.args[1]);
        }
        Syscall::Execve => {
            // After a successful exec the old image (and the path) is gone; the
            // sched_process_exec event carries the filename instead.
            if ret < 0 {
                read_path(ev, entry.args[0]);
            }
        }
        _ => {
            let _ = socket_of_fd(&cfg.offsets, entry.args[0] as i32 as i64, &mut ev.socket);
        }
    }

    if syscall.is_send() || syscall.is_receive() {
        ev.requested = match syscall {
            Syscall::Read | Syscall::Write | Syscall::Recvfrom | Syscall::Sendto => entry.args[2],
            _ => 0,
        };
        if let Some((buf, avail)) = data_buffer(syscall, &entry.args, ret) {
            capture_payload(ev, cfg, buf, avail);
        }
    }
    send_syscall_event(scratch);
    Ok(())
}

fn read_path(ev: &mut SyscallEvent, ptr: u64) {
    let n = unsafe {
        gen::bpf_probe_read_user_str(
            ev.payload.as_mut_ptr() as *mut c_void,
            MAX_PATH,
            ptr as *const c_void,
        )
    };
    if n > 1 {
        // Without the trailing NUL.
        ev.payload_len = ((n - 1) as u32) & (MAX_PATH - 1);
    } else if n < 0 {
        ev.flags |= FLAG_PAYLOAD_READ_FAILED;
    }
}
