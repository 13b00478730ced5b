//! Writes the hops of a collector's store as a flow-stitching fixture:
//! length-delimited `Hop` messages in completion order (end time), with the
//! captured request/response bytes cut to 256 (the stitcher reads the decoded
//! fields, not the bytes).
//!
//!     cargo run -p ktrail-collector --example dump_hops -- DATA_DIR OUT.pb PROCS.pb
//!
//! PROCS.pb gets the process events (exec, fork, exit) as length-delimited
//! `StoredEvent`s in time order: flows follow process lineage too.
//! The collector must be stopped (redb opens a store once).

use std::io::Write;

use anyhow::{Context, Result};
use ktrail_collector::store::StoredEvent;
use ktrail_collector::Store;
use ktrail_proto::v1::event::Body;
use prost::Message;

const KEEP_BYTES: usize = 256;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(out), Some(procs_out)) = (args.next(), args.next(), args.next()) else {
        anyhow::bail!("usage: dump_hops DATA_DIR OUT.pb PROCS.pb");
    };
    let store = Store::open(dir.as_ref()).with_context(|| format!("open the store in {dir}"))?;
    let mut hops = store.load(usize::MAX)?.recent_hops;
    hops.sort_by_key(|h| {
        (
            h.start_unix_ns.saturating_add(h.duration_ns),
            h.start_unix_ns,
        )
    });
    let mut buf = Vec::new();
    for mut hop in hops {
        hop.request.truncate(KEEP_BYTES);
        hop.response.truncate(KEEP_BYTES);
        hop.encode_length_delimited(&mut buf)?;
    }
    std::fs::File::create(&out)
        .and_then(|mut f| f.write_all(&buf))
        .with_context(|| format!("write {out}"))?;
    eprintln!("{} bytes to {out}", buf.len());
    drop(store);
    let db =
        redb::Database::open(std::path::Path::new(&dir).join(ktrail_collector::store::DB_FILE))?;
    let txn = db.begin_read()?;
    let events: redb::TableDefinition<(&str, u64), &[u8]> = redb::TableDefinition::new("events");
    let table = txn.open_table(events)?;
    let mut procs = Vec::new();
    for row in redb::ReadableTable::iter(&table)? {
        let (_, value) = row?;
        let stored = StoredEvent::decode(value.value())?;
        let is_process = stored
            .event
            .as_ref()
            .is_some_and(|e| matches!(e.body, Some(Body::Exec(_) | Body::Fork(_) | Body::Exit(_))));
        if is_process {
            procs.push(stored);
        }
    }
    procs.sort_by_key(|s| s.event.as_ref().map_or(0, |e| e.timestamp_unix_ns));
    let mut buf = Vec::new();
    for p in &procs {
        p.encode_length_delimited(&mut buf)?;
    }
    std::fs::write(&procs_out, &buf).with_context(|| format!("write {procs_out}"))?;
    eprintln!(
        "{} process events, {} bytes to {procs_out}",
        procs.len(),
        buf.len()
    );
    Ok(())
}
