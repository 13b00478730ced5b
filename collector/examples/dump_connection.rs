//! Writes what one process moved on one socket, from a collector's store, in
//! the protocols' capture text format (`ktrail_protocols::capture`: one read or
//! write per line, `>` client → server, `<` server → client): the real bytes
//! behind the decoders' test vectors. The socket is the one of event SEQ of
//! AGENT_ID (a hop's `events` name them), seen as the connection's `client`
//! or `server`. Where the agent captured TLS plaintext (`tls_write`/`tls_read`)
//! on the socket, only that is written.
//!
//!     cargo run -p ktrail-collector --example dump_connection -- DATA_DIR AGENT_ID SEQ client|server > conn.txt
//!
//! The collector must be stopped (redb opens a store once).

use std::fmt::Write as _;

use anyhow::{Context, Result};
use ktrail_collector::store::{batch, DB_FILE};
use ktrail_proto::v1::event::Body;
use ktrail_proto::v1::SyscallEvent;

const SENDS: &[&str] = &["write", "writev", "sendto", "sendmsg", "tls_write"];
const RECVS: &[&str] = &["read", "readv", "recvfrom", "recvmsg", "tls_read"];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, agent, seq, role] = args.as_slice() else {
        anyhow::bail!("usage: dump_connection DATA_DIR AGENT_ID SEQ client|server");
    };
    let seq: u64 = seq.parse().context("SEQ")?;
    let server = match role.as_str() {
        "client" => false,
        "server" => true,
        _ => anyhow::bail!("the role is client or server, not {role}"),
    };
    let db = redb::Database::open(std::path::Path::new(dir).join(DB_FILE))
        .with_context(|| format!("open the store in {dir} (is its collector stopped?)"))?;
    let txn = db.begin_read()?;
    let table: redb::TableDefinition<(&str, u64), &[u8]> =
        redb::TableDefinition::new("event_batches");
    let table = txn.open_table(table)?;
    let mut all = Vec::new();
    for row in table.range((agent.as_str(), 0)..=(agent.as_str(), u64::MAX))? {
        let (_, value) = row?;
        all.extend(batch::decode(value.value())?.events);
    }
    let (pid, fd) = all
        .iter()
        .find(|e| e.seq == seq)
        .and_then(|e| match &e.body {
            Some(Body::Syscall(s)) => Some((e.pid, s.fd)),
            _ => None,
        })
        .with_context(|| format!("no syscall event {seq} of {agent} in the store"))?;
    let mut moved: Vec<(u64, SyscallEvent)> = Vec::new();
    for e in all {
        if let (true, Some(Body::Syscall(s))) = (e.pid == pid, e.body) {
            let io = SENDS.contains(&s.name.as_str()) || RECVS.contains(&s.name.as_str());
            if s.fd == fd && io && s.ret > 0 {
                moved.push((e.seq, s));
            }
        }
    }
    moved.sort_by_key(|(seq, _)| *seq);
    let plaintext = moved.iter().any(|(_, s)| s.name.starts_with("tls_"));
    let mut out = String::new();
    writeln!(out, "# {agent} pid {pid} fd {fd}, the {role}")?;
    for (seq, s) in moved {
        if plaintext != s.name.starts_with("tls_") {
            continue;
        }
        let dir = if SENDS.contains(&s.name.as_str()) != server {
            ">"
        } else {
            "<"
        };
        let hex: String = s.data.iter().fold(String::new(), |mut h, b| {
            let _ = write!(h, "{b:02x}");
            h
        });
        writeln!(out, "# seq {seq} {}", s.name)?;
        writeln!(out, "{dir} {} {hex}", s.ret)?;
    }
    print!("{out}");
    Ok(())
}
