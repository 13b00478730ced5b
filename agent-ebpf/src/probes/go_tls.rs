//! Uprobes on Go's `crypto/tls.(*Conn).Write` and `(*Conn).Read`: the plaintext of TLS
//! connections, read from Go's register ABI (amd64, Go ≥ 1.17).
//!
//! The agent places the entry probes just after Go's stack-growth check, so they fire
//! once per call, with RAX = *Conn, RBX = buffer, RCX = length, R14 = the goroutine.
//! Write's plaintext is complete there and is sent at once. Read's buffer is filled
//! later: its arguments are kept per goroutine until one of the function's RET
//! instructions (found by decoding the function), where RAX = bytes read. Go moves
//! goroutine stacks, so uretprobes (which patch the return address) are not an option.

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::uprobe,
    programs::ProbeContext,
};
use ktrail_agent_common::{FdKind, GoCall, GoCallKey, GoConnTypeKey, SocketInfo, Syscall};

use crate::{
    emit::{
        capture_payload, config, current_tgid, fill_comm, is_tracked, send_syscall_event,
        start_syscall_event,
    },
    kernel::socket_of_fd,
    maps::{GO_CONN_TYPES, GO_TLS_CALLS, SCRATCH},
};

/// `tls.Conn.conn` (a net.Conn interface) is the first field: itab at +0, data at +8.
/// For a plain connection the data points to a `*net.TCPConn`, whose first field
/// `fd *netFD` leads to `poll.FD`, where `Sysfd` follows the 16-byte `fdMutex` (stable
/// since Go 1.12). Clients often hand `tls.Client` a wrapper instead — client-go's
/// cert-rotating dialer (kubectl with certificate files, kubelet) wraps each connection
/// in `closableConn{onClose func(); net.Conn}` — so when the direct path does not end
/// in a socket, the pointer-sized fields at the start of the wrapper are tried as the
/// `*net.TCPConn` (an embedded interface's data word, or an embedded pointer). The path
/// that ends in a socket of the calling process is remembered per itab: one search per
/// concrete type and process, not per call.
const CONN_ITAB: u64 = 0;
const CONN_IFACE_DATA: u64 = 8;
const POLL_FD_SYSFD: u64 = 16;
/// Path 0 is direct; path k ≥ 1 reads the `*net.TCPConn` at wrapper offset 8·(k−1).
const CONN_PATHS: u32 = 6;
/// Go's `Sysfd` of a live socket; anything else (a code pointer read as a number) is not.
const MAX_SANE_FD: i64 = 1 << 20;

#[uprobe]
pub fn go_tls_write(ctx: ProbeContext) -> u32 {
    let _ = try_write(&ctx);
    0
}

#[uprobe]
pub fn go_tls_read_entry(ctx: ProbeContext) -> u32 {
    let _ = try_read_entry(&ctx);
    0
}

#[uprobe]
pub fn go_tls_read_return(ctx: ProbeContext) -> u32 {
    let _ = try_read_return(&ctx);
    0
}

/// The fd under a `*tls.Conn`, or −1 when no path leads to a socket.
fn conn_fd(conn: u64) -> i32 {
    try_conn_fd(conn).unwrap_or(-1)
}

fn try_conn_fd(conn: u64) -> Result<i32, i64> {
    let (itab, data): (u64, u64) = unsafe {
        (
            bpf_probe_read_user((conn + CONN_ITAB) as *const u64)?,
            bpf_probe_read_user((conn + CONN_IFACE_DATA) as *const u64)?,
        )
    };
    let key = GoConnTypeKey {
        tgid: current_tgid(),
        _pad: 0,
        itab,
    };
    if let Some(path) = unsafe { GO_CONN_TYPES.get(&key) } {
        return sysfd_via(data, *path);
    }
    // Only the search, once per type, checks candidates against the fd table.
    let cfg = config().ok_or(-1i64)?;
    let mut socket = SocketInfo::default();
    for path in 0..CONN_PATHS {
        let Ok(fd) = sysfd_via(data, path) else {
            continue;
        };
        if !(0..MAX_SANE_FD).contains(&(fd as i64)) {
            continue;
        }
        if socket_of_fd(&cfg.offsets, key.tgid, fd as i64, &mut socket).is_ok()
            && socket.fd_kind == FdKind::Socket as u16
        {
            let _ = GO_CONN_TYPES.insert(&key, &path, 0);
            return Ok(fd);
        }
    }
    Err(-1)
}

/// `Sysfd` reached from the interface's data word along `path` (see [`CONN_PATHS`]).
#[inline(always)]
fn sysfd_via(data: u64, path: u32) -> Result<i32, i64> {
    unsafe {
        let tcp_conn: u64 = if path == 0 {
            data
        } else {
            bpf_probe_read_user((data + 8 * (path as u64 - 1)) as *const u64)?
        };
        let net_fd: u64 = bpf_probe_read_user(tcp_conn as *const u64)?;
        let sysfd: i64 = bpf_probe_read_user((net_fd + POLL_FD_SYSFD) as *const i64)?;
        Ok(sysfd as i32)
    }
}

fn try_write(ctx: &ProbeContext) -> Result<(), i64> {
    if !is_tracked(current_tgid()) {
        return Ok(());
    }
    let regs = unsafe { &*ctx.regs };
    let len = regs.rcx;
    if len == 0 {
        return Ok(());
    }
    let now = unsafe { bpf_ktime_get_ns() };
    emit(
        regs.rbx,
        len,
        len as i64,
        now,
        conn_fd(regs.rax),
        Syscall::GoTlsWrite,
    )
}

fn try_read_entry(ctx: &ProbeContext) -> Result<(), i64> {
    let tgid = current_tgid();
    if !is_tracked(tgid) {
        return Ok(());
    }
    let regs = unsafe { &*ctx.regs };
    let key = GoCallKey {
        tgid,
        _pad: 0,
        goroutine: regs.r14,
    };
    let call = GoCall {
        buf: regs.rbx,
        len: regs.rcx,
        enter_ns: unsafe { bpf_ktime_get_ns() },
        fd: conn_fd(regs.rax),
        _pad: 0,
    };
    // A stack-growth restart of the prologue re-enters with the same values.
    let _ = GO_TLS_CALLS.insert(&key, &call, 0);
    Ok(())
}

fn try_read_return(ctx: &ProbeContext) -> Result<(), i64> {
    let tgid = current_tgid();
    let regs = unsafe { &*ctx.regs };
    let key = GoCallKey {
        tgid,
        _pad: 0,
        goroutine: regs.r14,
    };
    let call = match unsafe { GO_TLS_CALLS.get(&key) } {
        Some(c) => *c,
        None => return Ok(()),
    };
    let _ = GO_TLS_CALLS.remove(&key);
    let n = regs.rax as i64;
    if n <= 0 {
        return Ok(());
    }
    emit(
        call.buf,
        call.len,
        n,
        call.enter_ns,
        call.fd,
        Syscall::GoTlsRead,
    )
}

/// Sends `n` bytes of plaintext at `buf` as a data event on the connection's socket.
/// Inlined: BPF calls take at most five arguments.
#[inline(always)]
fn emit(
    buf: u64,
    requested: u64,
    n: i64,
    enter_ns: u64,
    fd: i32,
    syscall: Syscall,
) -> Result<(), i64> {
    let cfg = config().ok_or(-1i64)?;
    let scratch = unsafe { &mut *SCRATCH.get_ptr_mut(0).ok_or(-1i64)? };
    let ev = &mut scratch.event;
    let pid_tgid = bpf_get_current_pid_tgid();
    start_syscall_event(ev, pid_tgid, syscall as u32, fd, n, enter_ns);
    fill_comm(&mut ev.header);
    ev.requested = requested;
    let tgid = (pid_tgid >> 32) as u32;
    let _ = socket_of_fd(&cfg.offsets, tgid, fd as i64, &mut ev.socket);
    capture_payload(ev, cfg, buf, n as u64);
    send_syscall_event(scratch);
    Ok(())
}
