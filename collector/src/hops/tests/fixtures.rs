//! A fake cluster for the assembler: processes with sockets that emit the
//! events an agent would, numbered per node, and a clock to tick.

use std::collections::HashMap;

use ktrail_proto::v1::{event::Body, Event, FdKind, Hop, Socket, SyscallEvent, TcpStateChange};

use crate::hops::{HopAssembler, HopConfig};

pub const MS: u64 = 1_000_000;
/// Event time of the scenarios' start.
pub const T0: u64 = 1_700_000_000_000_000_000;

pub struct Sim {
    pub asm: HopAssembler,
    /// Collector clock.
    pub now: u64,
    pub hops: Vec<Hop>,
    seqs: HashMap<String, u64>,
}

impl Sim {
    pub fn new() -> Self {
        Self::with(HopConfig::default())
    }

    pub fn with(cfg: HopConfig) -> Self {
        Self {
            asm: HopAssembler::new(cfg, 7),
            now: 1_000 * MS,
            hops: Vec::new(),
            seqs: HashMap::new(),
        }
    }

    /// Delivers an event as `node`'s agent would, numbering it.
    pub fn feed(&mut self, node: &str, mut ev: Event) {
        let seq = self.seqs.entry(node.to_owned()).or_insert(0);
        *seq += 1;
        ev.seq = *seq;
        let agent = agent_id(node);
        self.asm.ingest(node, &agent, &ev, self.now, &mut self.hops);
    }

    pub fn feed_all(&mut self, node: &str, events: Vec<Event>) {
        for ev in events {
            self.feed(node, ev);
        }
    }

    /// Lets `ms` of collector time pass, ticking every 50 ms like the task.
    pub fn run_for(&mut self, ms: u64) {
        let end = self.now + ms * MS;
        while self.now < end {
            self.now = (self.now + 50 * MS).min(end);
            self.asm.tick(self.now, &mut self.hops);
        }
    }

    pub fn take_hops(&mut self) -> Vec<Hop> {
        std::mem::take(&mut self.hops)
    }
}

pub fn agent_id(node: &str) -> String {
    format!("agent-{node}")
}

/// One process's end of a connection.
#[derive(Clone)]
pub struct End {
    pub pid: u32,
    pub comm: &'static str,
    pub fd: i32,
    pub socket: Socket,
}

impl End {
    pub fn tcp(pid: u32, comm: &'static str, local: (&str, u32), remote: (&str, u32)) -> Self {
        Self {
            pid,
            comm,
            fd: 3,
            socket: Socket::inet(local, remote),
        }
    }

    pub fn unix(pid: u32, comm: &'static str, path: &str, inode: u64, peer: u64) -> Self {
        Self {
            pid,
            comm,
            fd: 5,
            socket: Socket {
                kind: FdKind::Socket as i32,
                family: "unix".into(),
                local_addr: path.into(),
                inode,
                peer_inode: peer,
                ..Socket::default()
            },
        }
    }

    fn syscall(&self, ts: u64, name: &str, ret: i64, data: &[u8]) -> Event {
        Event {
            seq: 0,
            timestamp_unix_ns: ts,
            pid: self.pid,
            tid: self.pid,
            comm: self.comm.into(),
            cpu: 0,
            body: Some(Body::Syscall(SyscallEvent {
                name: name.into(),
                fd: self.fd,
                ret,
                errno: String::new(),
                duration_ns: 10_000,
                requested: data.len() as u64,
                socket: Some(self.socket.clone()),
                data: data.to_vec().into(),
                truncated: false,
            })),
        }
    }

    pub fn connect(&self, ts: u64) -> Event {
        self.syscall(ts, "connect", 0, b"")
    }

    pub fn accept(&self, ts: u64) -> Event {
        let mut ev = self.syscall(ts, "accept4", i64::from(self.fd), b"");
        if let Some(Body::Syscall(sc)) = &mut ev.body {
            sc.fd = 9;
        }
        ev
    }

    pub fn send(&self, ts: u64, data: &[u8]) -> Event {
        self.syscall(ts, "write", data.len() as i64, data)
    }

    pub fn recv(&self, ts: u64, data: &[u8]) -> Event {
        self.syscall(ts, "read", data.len() as i64, data)
    }

    /// A transfer of `total` bytes of which `data` was captured (the agent
    /// keeps the first 4096), by syscall `name` (`write`, `tls_read` …).
    pub fn transfer(&self, ts: u64, name: &str, data: &[u8], total: u64) -> Event {
        let mut ev = self.syscall(ts, name, i64::try_from(total).unwrap_or(i64::MAX), data);
        if let Some(Body::Syscall(sc)) = &mut ev.body {
            sc.truncated = (data.len() as u64) < total;
            sc.requested = total;
        }
        ev
    }

    pub fn close(&self, ts: u64) -> Event {
        self.syscall(ts, "close", 0, b"")
    }

    pub fn tcp_state(&self, ts: u64, old: &str, new: &str) -> Event {
        Event {
            timestamp_unix_ns: ts,
            body: Some(Body::TcpState(TcpStateChange {
                sock_id: 1,
                old_state: old.into(),
                new_state: new.into(),
                local_addr: self.socket.local_addr.clone(),
                local_port: self.socket.local_port,
                remote_addr: self.socket.remote_addr.clone(),
                remote_port: self.socket.remote_port,
            })),
            ..Event::default()
        }
    }
}

pub const CLIENT_NODE: &str = "k8s-worker";
pub const SERVER_NODE: &str = "k8s-cp";

/// curl on the worker talking to nginx on the control plane.
pub fn http_pair() -> (End, End) {
    (
        End::tcp(
            4242,
            "curl",
            ("192.168.56.20", 54321),
            ("192.168.56.10", 8080),
        ),
        End::tcp(
            777,
            "nginx",
            ("192.168.56.10", 8080),
            ("192.168.56.20", 54321),
        ),
    )
}

/// kube-scheduler's connection to kube-apiserver listening on `port`, both on
/// one node (port 45818 is the scheduler's).
pub fn scheduler_apiserver(port: u32) -> (End, End) {
    (
        End::tcp(
            4242,
            "kube-scheduler",
            ("192.168.56.10", 45818),
            ("192.168.56.10", port),
        ),
        End::tcp(
            777,
            "kube-apiserver",
            ("192.168.56.10", port),
            ("192.168.56.10", 45818),
        ),
    )
}

pub const REQ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: cp\r\n\r\n";
pub const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// The client's events of one complete request/response starting at `ts`.
pub fn client_exchange(c: &End, ts: u64, req: &[u8], resp: &[u8]) -> Vec<Event> {
    vec![c.send(ts, req), c.recv(ts + 2 * MS, resp)]
}

/// The server's events of the same exchange (its clock a little ahead).
pub fn server_exchange(s: &End, ts: u64, req: &[u8], resp: &[u8]) -> Vec<Event> {
    vec![s.recv(ts + MS, req), s.send(ts + MS + MS / 2, resp)]
}

pub fn end(hop: &Hop, client: bool) -> ktrail_proto::v1::HopEnd {
    let e = if client { &hop.client } else { &hop.server };
    e.clone().unwrap_or_default()
}
