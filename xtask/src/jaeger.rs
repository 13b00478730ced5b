//! Jaeger for the OTLP export test (collector/tests/otlp_jaeger.rs): built
//! once from its Go module (cluster/jaeger-build pins the version and every
//! dependency's checksum) and cached in /var/cache/ktrail/jaeger-<version>/,
//! like the cluster's binaries. Idempotent: a cached build is reused at once.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::util::elapsed;

/// The github.com/jaegertracing/jaeger module version (Jaeger v2's
/// `cmd/jaeger`); keep in step with cluster/jaeger-build/go.mod and the test.
pub const VERSION: &str = "v1.76.0";
const PACKAGE: &str = "github.com/jaegertracing/jaeger/cmd/jaeger";

fn cache_dir() -> PathBuf {
    let base = std::env::var_os("KTRAIL_CACHE").unwrap_or_else(|| "/var/cache/ktrail".into());
    PathBuf::from(base).join(format!("jaeger-{VERSION}"))
}

fn go() -> PathBuf {
    let local = Path::new("/usr/local/go/bin/go");
    if local.is_file() {
        local.to_path_buf()
    } else {
        PathBuf::from("go")
    }
}

/// The Jaeger binary, built first if it is not cached.
pub fn ensure() -> Result<PathBuf> {
    let dir = cache_dir();
    let bin = dir.join("jaeger");
    if dir.join(".complete").is_file() && bin.is_file() {
        println!("jaeger {VERSION}: cached in {}", dir.display());
        return Ok(bin);
    }
    let module = ktrail_tests::workspace_root().join("cluster/jaeger-build");
    let tmp = dir.with_extension("tmp");
    let log = std::env::temp_dir().join(format!("ktrail-jaeger-{VERSION}-build.log"));
    println!(
        "jaeger {VERSION}: building {PACKAGE} from {} (first time only: about 10 minutes \
         on 2 cores; log: {})",
        module.display(),
        log.display()
    );
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let start = Instant::now();
    build(&module, &tmp, &log, start)?;
    if !tmp.join("jaeger").is_file() {
        bail!("go build wrote no {}", tmp.join("jaeger").display());
    }
    std::fs::write(
        tmp.join(".complete"),
        format!("{}\n", start.elapsed().as_secs()),
    )?;
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&tmp, &dir)
        .with_context(|| format!("moving {} to {}", tmp.display(), dir.display()))?;
    println!(
        "jaeger {VERSION}: built in {} → {}",
        elapsed(start),
        bin.display()
    );
    Ok(bin)
}

/// `go build -v`, niced (the machine is shared), with a progress line every
/// 30 s: modules downloaded and packages compiled so far.
fn build(module: &Path, out: &Path, log: &Path, start: Instant) -> Result<()> {
    let mut cmd = Command::new("nice");
    cmd.args(["-n", "19"])
        .arg(go())
        .args(["build", "-v", "-trimpath", "-ldflags", "-s -w", "-o"])
        .arg(format!("{}/", out.display()))
        .arg(PACKAGE)
        .current_dir(module)
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "-p=2")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("starting go build (is Go installed in /usr/local/go?)")?;
    let stderr = child.stderr.take().context("go build's stderr")?;
    let mut file =
        std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let (downloads, packages) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (d, p) = (downloads.clone(), packages.clone());
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("go: downloading") {
                d.fetch_add(1, Ordering::Relaxed);
            } else if !line.starts_with('#') && !line.contains(' ') {
                p.fetch_add(1, Ordering::Relaxed);
            }
            let _ = writeln!(file, "{line}");
        }
    });
    let mut last = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if last.elapsed() >= Duration::from_secs(30) {
            last = Instant::now();
            println!(
                "jaeger {VERSION}: {} modules downloaded, {} packages compiled ({})",
                downloads.load(Ordering::Relaxed),
                packages.load(Ordering::Relaxed),
                elapsed(start)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = reader.join();
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        for line in tail.iter().rev() {
            eprintln!("{line}");
        }
        bail!("building jaeger failed ({status}); log: {}", log.display());
    }
    Ok(())
}
