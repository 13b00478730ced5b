//! `ktrail-bench-load`: the load generators of `cargo xtask bench`.
//!
//! The harness copies this binary under the names it needs (`kube-apiserver`, `kubelet`,
//! `bench-server` …): the kernel's comm is the executable's basename, so the copy's name
//! decides whether the agent traces it. Every mode prints one JSON line on stdout with
//! what it measured; times are its own monotonic clock around the measured loop only.
//!
//! - `rpc-server`: accepts TCP connections; on each, reads a message of `--size` bytes
//!   and writes one back, until the peer closes.
//! - `rpc-client`: `--rounds` request/response round trips of `--size` bytes over one
//!   connection (or one connection per round with `--per-connection`, paced by
//!   `--interval-us`).
//! - `writes`: `--count` writes of `--size` bytes to a file (/dev/null), or to a TCP
//!   connection with `--connect`, as fast as it can (like `dd bs=1`) or paced at
//!   `--rate` writes per second.
//! - `sink`: accepts TCP connections and reads each until the peer closes, discarding
//!   the bytes (the other end of `writes --connect`).

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ktrail-bench-load", about = "ktrail benchmark load generators")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Echo server: read `--size` bytes, write `--size` bytes back, per connection.
    RpcServer {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// Client: round trips of `--size` bytes.
    RpcClient {
        #[arg(long)]
        connect: String,
        #[arg(long, default_value_t = 1024)]
        size: usize,
        #[arg(long)]
        rounds: u64,
        /// Untimed round trips first (connection set-up, page faults).
        #[arg(long, default_value_t = 100)]
        warmup: u64,
        /// A new connection per round trip (closed after the response).
        #[arg(long)]
        per_connection: bool,
        /// Pause between round trips, microseconds.
        #[arg(long, default_value_t = 0)]
        interval_us: u64,
    },
    /// `--count` writes of `--size` bytes to `--path`, or to a TCP connection.
    Writes {
        #[arg(long, default_value = "/dev/null")]
        path: String,
        /// Write to a TCP connection to this address (a `sink`) instead of `--path`:
        /// the agent captures the bytes of socket writes only.
        #[arg(long)]
        connect: Option<String>,
        #[arg(long, default_value_t = 1)]
        size: usize,
        #[arg(long)]
        count: u64,
        /// Writes per second (0 = as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u64,
    },
    /// Reads and discards whatever each connection sends, until it closes.
    Sink {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: String,
    },
}

fn main() -> Result<()> {
    match Cli::parse().mode {
        Mode::RpcServer { listen, size } => rpc_server(&listen, size),
        Mode::RpcClient {
            connect,
            size,
            rounds,
            warmup,
            per_connection,
            interval_us,
        } => rpc_client(&connect, size, rounds, warmup, per_connection, interval_us),
        Mode::Writes {
            path,
            connect,
            size,
            count,
            rate,
        } => {
            let out: Box<dyn Write> = match connect {
                // Nagle left on: small writes coalesce as an application's would.
                Some(addr) => Box::new(
                    TcpStream::connect(&addr).with_context(|| format!("connecting to {addr}"))?,
                ),
                None => Box::new(
                    OpenOptions::new()
                        .write(true)
                        .open(&path)
                        .with_context(|| format!("opening {path}"))?,
                ),
            };
            writes(out, size, count, rate)
        }
        Mode::Sink { listen } => sink(&listen),
    }
}

fn rpc_server(listen: &str, size: usize) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    // The harness waits for this line.
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        std::thread::spawn(move || {
            let _ = serve(conn, size);
        });
    }
    Ok(())
}

fn serve(mut conn: TcpStream, size: usize) -> Result<()> {
    conn.set_nodelay(true)?;
    let mut buf = vec![0u8; size];
    let reply = vec![b'r'; size];
    let cpu = cpu_ns(libc::RUSAGE_THREAD);
    let mut rounds = 0u64;
    loop {
        if !read_message(&mut conn, &mut buf)? {
            break;
        }
        conn.write_all(&reply)?;
        rounds += 1;
    }
    // The CPU this connection's thread used, for the harness's CPU-time ratios.
    let line = serde_json::json!({"type": "served", "rounds": rounds,
                                  "cpu_ns": cpu_ns(libc::RUSAGE_THREAD) - cpu});
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    Ok(())
}

/// User + system CPU time of this thread (`RUSAGE_THREAD`) or process (`RUSAGE_SELF`).
fn cpu_ns(who: libc::c_int) -> u64 {
    // SAFETY: getrusage writes into the zeroed struct we pass; no other preconditions.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(who, &mut usage) } != 0 {
        return 0;
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1_000;
    ns(usage.ru_utime) + ns(usage.ru_stime)
}

/// Reads exactly `buf.len()` bytes; false on a clean end of stream before the first byte.
fn read_message(conn: &mut TcpStream, buf: &mut [u8]) -> Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        let n = conn.read(&mut buf[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            bail!("connection closed mid-message");
        }
        got += n;
    }
    Ok(true)
}

fn round_trip(conn: &mut TcpStream, request: &[u8], buf: &mut [u8]) -> Result<()> {
    conn.write_all(request)?;
    if !read_message(conn, buf)? {
        bail!("the server closed the connection");
    }
    Ok(())
}

fn connect(addr: &str) -> Result<TcpStream> {
    let conn = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    conn.set_nodelay(true)?;
    Ok(conn)
}

fn rpc_client(
    addr: &str,
    size: usize,
    rounds: u64,
    warmup: u64,
    per_connection: bool,
    interval_us: u64,
) -> Result<()> {
    let request = vec![b'q'; size];
    let mut buf = vec![0u8; size];
    let pause = Duration::from_micros(interval_us);
    if per_connection {
        let (start, cpu) = (Instant::now(), cpu_ns(libc::RUSAGE_SELF));
        for _ in 0..rounds {
            let mut conn = connect(addr)?;
            round_trip(&mut conn, &request, &mut buf)?;
            drop(conn);
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
        return report(start.elapsed(), cpu, rounds);
    }
    let mut conn = connect(addr)?;
    for _ in 0..warmup {
        round_trip(&mut conn, &request, &mut buf)?;
    }
    let (start, cpu) = (Instant::now(), cpu_ns(libc::RUSAGE_SELF));
    for _ in 0..rounds {
        round_trip(&mut conn, &request, &mut buf)?;
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
    }
    report(start.elapsed(), cpu, rounds)
}

fn sink(listen: &str) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    // The harness waits for this line.
    println!("listening on {addr}");
    std::io::stdout().flush()?;
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
        });
    }
    Ok(())
}

fn writes(mut file: Box<dyn Write>, size: usize, count: u64, rate: u64) -> Result<()> {
    let buf = vec![b'w'; size];
    let (start, cpu) = (Instant::now(), cpu_ns(libc::RUSAGE_SELF));
    let mut written = 0u64;
    while written < count {
        // Pace in slices of 64 writes: sleep when ahead of the schedule.
        let slice = (count - written).min(64);
        for _ in 0..slice {
            // `write`, not `write_all`: exactly one syscall per write.
            let n = file.write(&buf)?;
            if n != size {
                bail!("short write: {n} of {size} bytes");
            }
        }
        written += slice;
        if let Some(due_ns) = written.saturating_mul(1_000_000_000).checked_div(rate) {
            let due = Duration::from_nanos(due_ns);
            let now = start.elapsed();
            if due > now + Duration::from_micros(200) {
                std::thread::sleep(due - now);
            }
        }
    }
    report(start.elapsed(), cpu, count)
}

/// The result line: wall time and this process's CPU time over the measured loop.
fn report(elapsed: Duration, cpu_at_start: u64, ops: u64) -> Result<()> {
    let ns = elapsed.as_nanos() as u64;
    let cpu = cpu_ns(libc::RUSAGE_SELF).saturating_sub(cpu_at_start);
    let line = serde_json::json!({ "ns": ns, "cpu_ns": cpu, "ops": ops,
                                   "ns_per_op": ns as f64 / ops.max(1) as f64,
                                   "cpu_ns_per_op": cpu as f64 / ops.max(1) as f64 });
    println!("{line}");
    std::io::stdout().flush()?;
    Ok(())
}
