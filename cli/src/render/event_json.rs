//! `ktrail trace --output json`: one object per event (see docs/json.md).

use ktrail_proto::v1::event::Body;
use ktrail_proto::v1::{FdKind, ProcessInfo, Socket, SyscallEvent, TracedEvent};
use serde::Serialize;

use crate::time::rfc3339_utc;

#[derive(Serialize)]
struct SocketJson<'a> {
    kind: &'static str,
    family: &'a str,
    local_addr: &'a str,
    local_port: u32,
    remote_addr: &'a str,
    remote_port: u32,
    inode: u64,
    peer_inode: u64,
}

#[derive(Serialize)]
struct SyscallJson<'a> {
    name: &'a str,
    fd: i32,
    ret: i64,
    errno: &'a str,
    duration_ns: u64,
    requested: u64,
    socket: Option<SocketJson<'a>>,
    data: String,
    data_len: usize,
    truncated: bool,
}

#[derive(Serialize)]
struct ProcessJson<'a> {
    pid: u32,
    ppid: u32,
    comm: &'a str,
    exe: &'a str,
    cmdline: &'a str,
    container_id: &'a str,
    netns: u32,
}

#[derive(Serialize)]
struct ExecJson<'a> {
    filename: &'a str,
    old_pid: u32,
    process: Option<ProcessJson<'a>>,
}

#[derive(Serialize)]
struct ForkJson {
    child_pid: u32,
}

#[derive(Serialize)]
struct ExitJson {
    group_dead: bool,
}

#[derive(Serialize)]
struct EventJson<'a> {
    r#type: &'static str,
    node: &'a str,
    seq: u64,
    timestamp_unix_ns: u64,
    time: String,
    pid: u32,
    tid: u32,
    comm: &'a str,
    cpu: u32,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    syscall: Option<SyscallJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exec: Option<ExecJson<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fork: Option<ForkJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<ExitJson>,
}

fn socket(s: &Socket) -> SocketJson<'_> {
    let kind = match FdKind::try_from(s.kind) {
        Ok(FdKind::Socket) => "socket",
        Ok(FdKind::File) => "file",
        _ => "none",
    };
    SocketJson {
        kind,
        family: &s.family,
        local_addr: &s.local_addr,
        local_port: s.local_port,
        remote_addr: &s.remote_addr,
        remote_port: s.remote_port,
        inode: s.inode,
        peer_inode: s.peer_inode,
    }
}

fn syscall(sc: &SyscallEvent) -> SyscallJson<'_> {
    SyscallJson {
        name: &sc.name,
        fd: sc.fd,
        ret: sc.ret,
        errno: &sc.errno,
        duration_ns: sc.duration_ns,
        requested: sc.requested,
        socket: sc.socket.as_ref().map(socket),
        data: String::from_utf8_lossy(&sc.data).into_owned(),
        data_len: sc.data.len(),
        truncated: sc.truncated,
    }
}

fn process(p: &ProcessInfo) -> ProcessJson<'_> {
    ProcessJson {
        pid: p.pid,
        ppid: p.ppid,
        comm: &p.comm,
        exe: &p.exe,
        cmdline: &p.cmdline,
        container_id: &p.container_id,
        netns: p.netns,
    }
}

/// The event as one line of JSON; `None` for events trace does not show.
pub fn event_json(traced: &TracedEvent) -> Option<Result<String, serde_json::Error>> {
    let e = traced.event.as_ref()?;
    let mut out = EventJson {
        r#type: "event",
        node: &traced.node,
        seq: e.seq,
        timestamp_unix_ns: e.timestamp_unix_ns,
        time: rfc3339_utc(e.timestamp_unix_ns),
        pid: e.pid,
        tid: e.tid,
        comm: &e.comm,
        cpu: e.cpu,
        kind: "",
        syscall: None,
        exec: None,
        fork: None,
        exit: None,
    };
    match e.body.as_ref()? {
        Body::Syscall(sc) => {
            out.kind = "syscall";
            out.syscall = Some(syscall(sc));
        }
        Body::Exec(x) => {
            out.kind = "exec";
            out.exec = Some(ExecJson {
                filename: &x.filename,
                old_pid: x.old_pid,
                process: x.process.as_ref().map(process),
            });
        }
        Body::Fork(f) => {
            out.kind = "fork";
            out.fork = Some(ForkJson {
                child_pid: f.child_pid,
            });
        }
        Body::Exit(x) => {
            out.kind = "exit";
            out.exit = Some(ExitJson {
                group_dead: x.group_dead,
            });
        }
        Body::TcpState(_) => return None,
    }
    Some(serde_json::to_string(&out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ktrail_proto::v1::{Event, ProcessFork};
    use serde_json::Value;

    #[test]
    fn a_syscall_event() {
        let traced = TracedEvent {
            node: "k8s-worker".into(),
            event: Some(Event {
                seq: 3,
                timestamp_unix_ns: 1_700_000_000_000_000_000,
                pid: 4242,
                tid: 4242,
                comm: "kubelet".into(),
                cpu: 1,
                body: Some(Body::Syscall(SyscallEvent {
                    name: "write".into(),
                    fd: 3,
                    ret: 5,
                    data: b"hello".to_vec().into(),
                    socket: Some(Socket {
                        kind: FdKind::Socket as i32,
                        family: "inet".into(),
                        ..Socket::default()
                    }),
                    ..SyscallEvent::default()
                })),
            }),
        };
        let line = event_json(&traced).expect("shown").expect("json");
        let v: Value = serde_json::from_str(&line).expect("parses");
        assert_eq!(v["type"], "event");
        assert_eq!(v["kind"], "syscall");
        assert_eq!(v["comm"], "kubelet");
        assert_eq!(v["time"], "2023-11-14T22:13:20.000000000Z");
        assert_eq!(v["syscall"]["data"], "hello");
        assert_eq!(v["syscall"]["socket"]["kind"], "socket");
        assert!(v.get("exec").is_none());
    }

    #[test]
    fn a_fork_event() {
        let traced = TracedEvent {
            node: "n".into(),
            event: Some(Event {
                body: Some(Body::Fork(ProcessFork { child_pid: 9 })),
                ..Event::default()
            }),
        };
        let v: Value = serde_json::from_str(&event_json(&traced).expect("shown").expect("json"))
            .expect("parses");
        assert_eq!(v["kind"], "fork");
        assert_eq!(v["fork"]["child_pid"], 9);
    }
}
