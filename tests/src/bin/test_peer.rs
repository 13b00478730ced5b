//! `ktrail-test-peer`: the two ends of an HTTP/1.1 keep-alive conversation, std only.
//!
//! Tests copy this binary as `kube-apiserver` and `kubelet` and run the copies, so the
//! processes carry the names ktrail's agent traces (a process's comm is the basename of
//! the file it execs).
//!
//! ```text
//! ktrail-test-peer server --listen ADDR
//! ktrail-test-peer client --url http://HOST:PORT/PATH [--count N] [--interval-ms M]
//! ```

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage:
  ktrail-test-peer server --listen ADDR
      HTTP/1.1 keep-alive server, a thread per connection; answers every request with
      200 OK and a small JSON body. Prints \"listening on ADDR\" once bound (port 0 picks one).
  ktrail-test-peer client --url http://HOST:PORT/PATH [--count N] [--interval-ms M]
      One keep-alive TCP connection, N GET requests (default 1; 0 = until killed), M ms
      apart (default 0). Reads each full response and prints one line per response with
      its latency. Exits 0 when all succeeded.";

type Error = Box<dyn std::error::Error>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let result = match args.first().map(String::as_str) {
        Some("server") => parse_server(&args[1..]).and_then(|listen| server(&listen)),
        Some("client") => parse_client(&args[1..]).and_then(|c| client(&c)),
        _ => Err(format!("expected `server` or `client`\n{USAGE}").into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ktrail-test-peer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `--name value` pairs after the subcommand.
fn options<'a>(args: &'a [String], known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, Error> {
    let mut pairs = Vec::new();
    let mut iter = args.iter();
    while let Some(name) = iter.next() {
        if !known.contains(&name.as_str()) {
            return Err(format!("unknown option {name:?}\n{USAGE}").into());
        }
        let value = iter.next().ok_or_else(|| format!("{name} needs a value"))?;
        pairs.push((name.as_str(), value.as_str()));
    }
    Ok(pairs)
}

fn parse_server(args: &[String]) -> Result<String, Error> {
    options(args, &["--listen"])?
        .last()
        .map(|(_, v)| v.to_string())
        .ok_or_else(|| format!("server needs --listen ADDR\n{USAGE}").into())
}

struct ClientArgs {
    host: String,
    port: u16,
    path: String,
    count: u64,
    interval: Duration,
}

fn parse_client(args: &[String]) -> Result<ClientArgs, Error> {
    let mut url = None;
    let mut count = 1;
    let mut interval = Duration::ZERO;
    for (name, value) in options(args, &["--url", "--count", "--interval-ms"])? {
        match name {
            "--url" => url = Some(value),
            "--count" => count = value.parse().map_err(|e| format!("--count {value}: {e}"))?,
            _ => {
                let ms = value
                    .parse()
                    .map_err(|e| format!("--interval-ms {value}: {e}"))?;
                interval = Duration::from_millis(ms);
            }
        }
    }
    let url = url.ok_or_else(|| format!("client needs --url\n{USAGE}"))?;
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url must start with http://, got {url:?}"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().map_err(|e| format!("port {port}: {e}"))?),
        None => (authority, 80),
    };
    Ok(ClientArgs {
        host: host.to_string(),
        port,
        path: path.to_string(),
        count,
        interval,
    })
}

fn server(listen: &str) -> Result<(), Error> {
    let listener = TcpListener::bind(listen).map_err(|e| format!("binding {listen}: {e}"))?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    for (n, stream) in listener.incoming().enumerate() {
        match stream {
            Ok(stream) => {
                std::thread::spawn(move || {
                    if let Err(e) = serve(stream, n + 1) {
                        eprintln!("connection {}: {e}", n + 1);
                    }
                });
            }
            Err(e) => eprintln!("accept: {e}"),
        }
    }
    Ok(())
}

/// Answers requests on one connection until the client closes it.
fn serve(stream: TcpStream, conn: usize) -> Result<(), Error> {
    let peer = stream.peer_addr()?;
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    let mut served = 0u64;
    while let Some(head) = read_head(&mut reader)? {
        let request_line = head.first().cloned().unwrap_or_default();
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        // Discard a request body, if any.
        let body_len = content_length(&head)?.unwrap_or(0);
        std::io::copy(&mut (&mut reader).take(body_len), &mut std::io::sink())?;
        served += 1;
        let body = format!(
            "{{\"kind\":\"Status\",\"method\":{method:?},\"path\":{path:?},\"connection\":{conn},\"request\":{served}}}"
        );
        let close = header(&head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "Connection: close\r\n" } else { "" }
        );
        // One write per response: one syscall for the tracer to see.
        writer.write_all(response.as_bytes())?;
        println!("{peer} {method} {path} -> 200");
        if close {
            break;
        }
    }
    Ok(())
}

fn client(args: &ClientArgs) -> Result<(), Error> {
    let addr = format!("{}:{}", args.host, args.port);
    let stream = TcpStream::connect(&addr).map_err(|e| format!("connecting to {addr}: {e}"))?;
    stream.set_nodelay(true)?;
    let mut reader = BufReader::new(&stream);
    let mut writer = &stream;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: ktrail-test-peer\r\nAccept: application/json\r\n\r\n",
        args.path
    );
    let mut n = 0u64;
    while args.count == 0 || n < args.count {
        if n > 0 && !args.interval.is_zero() {
            std::thread::sleep(args.interval);
        }
        n += 1;
        let start = Instant::now();
        writer.write_all(request.as_bytes())?;
        let head = read_head(&mut reader)?
            .ok_or_else(|| format!("request {n}: connection closed before a response"))?;
        let len = content_length(&head)?
            .ok_or_else(|| format!("request {n}: response without Content-Length"))?;
        let mut body = vec![0; usize::try_from(len)?];
        reader.read_exact(&mut body)?;
        let latency = start.elapsed();
        let status = head.first().cloned().unwrap_or_default();
        if !status.starts_with("HTTP/1.1 200") {
            return Err(format!("request {n}: unexpected response {status:?}").into());
        }
        let of = if args.count == 0 {
            "∞".to_string()
        } else {
            args.count.to_string()
        };
        println!(
            "response {n}/{of}: {status} {len} bytes latency_us={}",
            latency.as_micros()
        );
        std::io::stdout().flush()?;
    }
    Ok(())
}

/// The request/status line and header lines up to the blank line; `None` on a clean EOF.
fn read_head(reader: &mut impl BufRead) -> Result<Option<Vec<String>>, Error> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return if lines.is_empty() {
                Ok(None)
            } else {
                Err("connection closed inside a message head".into())
            };
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            if lines.is_empty() {
                continue; // tolerate stray CRLF between messages
            }
            return Ok(Some(lines));
        }
        lines.push(line.to_string());
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

fn content_length(head: &[String]) -> Result<Option<u64>, Error> {
    header(head, "content-length")
        .map(|v| {
            v.parse()
                .map_err(|e| format!("Content-Length {v:?}: {e}").into())
        })
        .transpose()
}
