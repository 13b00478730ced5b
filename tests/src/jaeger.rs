//! A real Jaeger (v2, in-memory storage) on 127.0.0.1 for tests that export flows over
//! OTLP/gRPC and read back what arrived through Jaeger's HTTP API. The binary is the one
//! `cargo xtask jaeger` builds (`cargo xtask test` does too); KTRAIL_JAEGER overrides it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::{wait_for, Check, ChildGuard};

/// The version xtask/src/jaeger.rs builds into /var/cache/ktrail.
const VERSION: &str = "v1.76.0";

pub struct Jaeger {
    child: ChildGuard,
    /// OTLP/gRPC receiver: give `http://{otlp}` to `ktrail-collector --otlp-endpoint`.
    pub otlp: String,
    query: String,
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KTRAIL_JAEGER") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("KTRAIL_CACHE").unwrap_or_else(|| "/var/cache/ktrail".into());
    PathBuf::from(cache).join(format!("jaeger-{VERSION}/jaeger"))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Jaeger {
    /// Starts Jaeger with its config and log in `dir`, once its query API and OTLP
    /// receiver answer.
    pub fn start(dir: &Path) -> Result<Self> {
        let bin = binary();
        if !bin.is_file() {
            bail!(
                "{} is missing: `cargo xtask jaeger` builds it (`cargo xtask test` does too), or set KTRAIL_JAEGER",
                bin.display()
            );
        }
        let otlp = format!("127.0.0.1:{}", free_port()?);
        let query = format!("127.0.0.1:{}", free_port()?);
        let query_grpc = free_port()?;
        let config = format!(
            "service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces: {{receivers: [otlp], processors: [batch], exporters: [jaeger_storage_exporter]}}
  telemetry: {{metrics: {{level: none}}, logs: {{level: info}}}}
extensions:
  jaeger_storage: {{backends: {{mem: {{memory: {{max_traces: 100000}}}}}}}}
  jaeger_query:
    storage: {{traces: mem}}
    http: {{endpoint: {query}}}
    grpc: {{endpoint: 127.0.0.1:{query_grpc}}}
receivers:
  otlp: {{protocols: {{grpc: {{endpoint: {otlp}}}}}}}
processors:
  batch: {{timeout: 100ms}}
exporters:
  jaeger_storage_exporter: {{trace_storage: mem}}
"
        );
        let config_path = dir.join("jaeger.yaml");
        std::fs::write(&config_path, config)?;
        let mut cmd = Command::new(&bin);
        cmd.arg("--config").arg(&config_path);
        let mut j = Jaeger {
            child: ChildGuard::spawn("jaeger", cmd, dir)?,
            otlp,
            query,
        };
        wait_for("jaeger to answer", Duration::from_secs(60), || {
            j.child.ensure_running()?;
            Ok(
                match (j.get("/api/services"), TcpStream::connect(&j.otlp)) {
                    (Ok(_), Ok(_)) => Check::Done(()),
                    (Err(e), _) => Check::NotYet(format!("query API: {e:#}")),
                    (_, Err(e)) => Check::NotYet(format!("OTLP receiver: {e}")),
                },
            )
        })?;
        Ok(j)
    }

    /// GET `path` on the query API: the body of a 200 answer.
    pub fn get(&self, path: &str) -> Result<String> {
        let mut s = TcpStream::connect(&self.query)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.query)?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        let text = String::from_utf8_lossy(&out).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
            bail!("GET {path}: {}", head.lines().next().unwrap_or(""));
        }
        Ok(body.to_string())
    }

    /// Every trace of every service, as Jaeger's API returns them: (service, JSON).
    pub fn all_traces(&self) -> Result<Vec<(String, String)>> {
        let services: serde_json::Value = serde_json::from_str(&self.get("/api/services")?)
            .context("jaeger's /api/services is not JSON")?;
        let mut out = Vec::new();
        for service in services["data"].as_array().into_iter().flatten() {
            let name = service.as_str().unwrap_or_default();
            let body = self.get(&format!(
                "/api/traces?service={name}&limit=100000&lookback=6h"
            ))?;
            out.push((name.to_string(), body));
        }
        Ok(out)
    }
}
