use ktrail_proto::v1::event::Body;
use ktrail_proto::v1::{
    Event, ProcessExec, ProcessExit, ProcessFork, ProcessInfo, Socket, SyscallEvent, TracedEvent,
};

use super::*;
use crate::time::local_time_us;

const TS: u64 = 1_700_000_000_123_456_000;

fn traced(body: Body) -> TracedEvent {
    TracedEvent {
        node: "k8s-worker".into(),
        event: Some(Event {
            timestamp_unix_ns: TS,
            pid: 4242,
            tid: 4243,
            comm: "kubelet".into(),
            body: Some(body),
            ..Event::default()
        }),
    }
}

fn tcp() -> Socket {
    Socket::inet(("192.168.56.20", 54321), ("192.168.56.10", 8080))
}

fn line(body: Body) -> String {
    let l = event_line(&traced(body), &Style::plain()).expect("a line");
    let prefix = format!("k8s-worker kubelet[4242] {} ", local_time_us(TS));
    l.strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("prefix of {l}"))
        .to_owned()
}

#[test]
fn write_like_strace() {
    let l = line(Body::Syscall(SyscallEvent {
        name: "write".into(),
        fd: 3,
        ret: 78,
        duration_ns: 12_000,
        requested: 78,
        socket: Some(tcp()),
        data: b"GET / HTTP/1.1\r\n".to_vec().into(),
        truncated: true,
        ..SyscallEvent::default()
    }));
    assert_eq!(
        l,
        r#"write(3<TCP:192.168.56.20:54321->192.168.56.10:8080>, "GET / HTTP/1.1\r\n"..., 78) = 78 <0.000012>"#
    );
}

#[test]
fn failures_show_errno_names() {
    let l = line(Body::Syscall(SyscallEvent {
        name: "connect".into(),
        fd: 5,
        ret: -111,
        socket: Some(tcp()),
        ..SyscallEvent::default()
    }));
    assert_eq!(
        l,
        "connect(5<TCP:192.168.56.20:54321->192.168.56.10:8080>, 192.168.56.10:8080) = -1 ECONNREFUSED <0.000000>"
    );
    let l = line(Body::Syscall(SyscallEvent {
        name: "read".into(),
        fd: 5,
        ret: -11,
        errno: "EAGAIN".into(),
        requested: 4096,
        ..SyscallEvent::default()
    }));
    assert_eq!(l, "read(5, ..., 4096) = -1 EAGAIN <0.000000>");
}

#[test]
fn accept_annotates_the_new_fd() {
    let l = line(Body::Syscall(SyscallEvent {
        name: "accept4".into(),
        fd: 3,
        ret: 7,
        socket: Some(tcp()),
        ..SyscallEvent::default()
    }));
    assert_eq!(
        l,
        "accept4(3) = 7<TCP:192.168.56.20:54321->192.168.56.10:8080> <0.000000>"
    );
}

#[test]
fn process_lifecycle_lines() {
    let exec = line(Body::Exec(ProcessExec {
        filename: "/usr/bin/curl".into(),
        old_pid: 4242,
        process: Some(ProcessInfo {
            cmdline: "curl -s http://x".into(),
            ..ProcessInfo::default()
        }),
    }));
    assert_eq!(exec, r#"execve("/usr/bin/curl", "curl -s http://x") = 0"#);
    assert_eq!(
        line(Body::Fork(ProcessFork { child_pid: 99 })),
        "+++ forked 99 +++"
    );
    assert_eq!(
        line(Body::Exit(ProcessExit { group_dead: true })),
        "+++ exited +++"
    );
    assert_eq!(
        line(Body::Exit(ProcessExit { group_dead: false })),
        "+++ thread 4243 exited +++"
    );
}

#[test]
fn openat_shows_the_path() {
    let l = line(Body::Syscall(SyscallEvent {
        name: "openat".into(),
        fd: -100,
        ret: 3,
        data: b"/etc/hosts".to_vec().into(),
        ..SyscallEvent::default()
    }));
    assert_eq!(l, r#"openat(AT_FDCWD, "/etc/hosts") = 3 <0.000000>"#);
}
