//! `ktrail trace`: strace-like lines.

use ktrail_proto::v1::event::Body;
use ktrail_proto::v1::{Event, SyscallEvent, TracedEvent};

use super::socket::{fd_text, socket_label};
use crate::errno::errno_name;
use crate::escape::quoted;
use crate::style::{Color, Style};
use crate::time::local_time_us;

/// Captured bytes shown per syscall (strace's -s).
pub const STRING_LIMIT: usize = 64;

fn is_send(name: &str) -> bool {
    matches!(
        name,
        "write" | "writev" | "send" | "sendto" | "sendmsg" | "sendmmsg" | "pwrite64" | "tls_write"
    )
}

fn is_recv(name: &str) -> bool {
    matches!(
        name,
        "read" | "readv" | "recv" | "recvfrom" | "recvmsg" | "recvmmsg" | "pread64" | "tls_read"
    )
}

/// `= 78`, `= -1 ECONNREFUSED`.
fn return_text(sc: &SyscallEvent) -> String {
    if sc.ret >= 0 {
        return format!("= {}", sc.ret);
    }
    let name = if sc.errno.is_empty() {
        errno_name(-sc.ret).map(str::to_owned)
    } else {
        Some(sc.errno.clone())
    };
    match name {
        Some(name) => format!("= -1 {name}"),
        None => format!("= {}", sc.ret),
    }
}

/// The call with its arguments, e.g. `write(3<TCP:…>, "GET /"..., 78)`.
fn call_text(sc: &SyscallEvent) -> String {
    let fd = fd_text(sc.fd, sc.socket.as_ref());
    let name = sc.name.as_str();
    let count = if sc.requested > 0 {
        sc.requested
    } else {
        u64::try_from(sc.ret).unwrap_or(0)
    };
    if is_send(name) || is_recv(name) {
        let data = if is_recv(name) && sc.ret < 0 {
            "...".to_owned()
        } else {
            let moved = usize::try_from(sc.ret).unwrap_or(0);
            let more = sc.truncated || moved > sc.data.len();
            quoted(&sc.data, STRING_LIMIT, more)
        };
        return format!("{name}({fd}, {data}, {count})");
    }
    match name {
        "connect" => {
            let target = sc
                .socket
                .as_ref()
                .map(|s| match s.family.as_str() {
                    "unix" => format!("\"{}\"", s.remote_addr),
                    _ if s.remote_addr.contains(':') => {
                        format!("[{}]:{}", s.remote_addr, s.remote_port)
                    }
                    _ => format!("{}:{}", s.remote_addr, s.remote_port),
                })
                .unwrap_or_else(|| "...".to_owned());
            format!("connect({fd}, {target})")
        }
        // The socket is the accepted connection's, so it annotates the result.
        "accept" | "accept4" => format!("{name}({})", sc.fd),
        "openat" | "open" => format!("{name}(AT_FDCWD, {})", quoted(&sc.data, 256, sc.truncated)),
        "execve" => format!("execve({})", quoted(&sc.data, 256, sc.truncated)),
        _ => format!("{name}({fd})"),
    }
}

fn syscall_text(sc: &SyscallEvent) -> String {
    let ret = match (sc.name.as_str(), sc.socket.as_ref().and_then(socket_label)) {
        ("accept" | "accept4", Some(label)) if sc.ret >= 0 => format!("= {}<{label}>", sc.ret),
        _ => return_text(sc),
    };
    format!(
        "{} {ret} <{:.6}>",
        call_text(sc),
        sc.duration_ns as f64 / 1e9
    )
}

fn body_text(event: &Event) -> Option<String> {
    Some(match event.body.as_ref()? {
        Body::Syscall(sc) => syscall_text(sc),
        Body::Exec(exec) => {
            let cmdline = exec
                .process
                .as_ref()
                .map(|p| p.cmdline.as_str())
                .filter(|c| !c.is_empty());
            match cmdline {
                Some(c) => format!(
                    "execve(\"{}\", \"{}\") = 0",
                    exec.filename,
                    c.escape_debug()
                ),
                None => format!("execve(\"{}\") = 0", exec.filename),
            }
        }
        Body::Fork(fork) => format!("+++ forked {} +++", fork.child_pid),
        Body::Exit(exit) if exit.group_dead => "+++ exited +++".to_owned(),
        Body::Exit(_) => format!("+++ thread {} exited +++", event.tid),
        Body::TcpState(t) => format!("tcp {} -> {}", t.old_state, t.new_state),
    })
}

/// `k8s-worker kubelet[4242] 20:53:01.123456 write(3<TCP:…>, "GET / HTTP/1.1\r\n"..., 78) = 78 <0.000012>`
pub fn event_line(traced: &TracedEvent, style: &Style) -> Option<String> {
    let event = traced.event.as_ref()?;
    let body = body_text(event)?;
    let failed = matches!(&event.body, Some(Body::Syscall(sc)) if sc.ret < 0);
    Some(format!(
        "{} {} {} {}",
        style.paint(Color::Dim, &traced.node),
        style.paint(Color::Cyan, &format!("{}[{}]", event.comm, event.pid)),
        style.paint(Color::Dim, &local_time_us(event.timestamp_unix_ns)),
        if failed {
            style.paint(Color::Red, &body)
        } else {
            body
        },
    ))
}

/// A human line saying events were skipped.
pub fn lagged_line(skipped: u64, style: &Style) -> String {
    style.paint(
        Color::Yellow,
        &format!("… {skipped} events skipped: this client fell behind the collector"),
    )
}

#[cfg(test)]
mod tests;
