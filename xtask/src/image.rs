//! `cargo xtask image`: the agent's and the collector's OCI images, assembled without
//! a Docker engine and pushed to a registry (by default the local cluster's).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::util::{cargo, elapsed, run_cmd};

pub const LONG_ABOUT: &str = "\
Build ktrail's two images and push them, without a Docker engine:

  REGISTRY/ktrail/ktrail-agent:TAG      /usr/local/bin/ktrail-agent (entrypoint)
  REGISTRY/ktrail/ktrail-collector:TAG  /usr/local/bin/ktrail-collector (entrypoint) and the
                                        CLI, /usr/local/bin/ktrail (kubectl exec … ktrail watch)

Steps: `cargo build --release` of the three binaries; a base layer of Debian's libc6 and
libgcc-s1 (the only libraries they link; `apt-get download`, extracted, cached in
/var/cache/ktrail/images); a layer with the stripped binaries; `crane append` of both
layers and `crane mutate` for the entrypoint, platform and labels. crane is the one
`cargo xtask cluster up` builds (/var/cache/ktrail/crane-*/bin/crane).

The default registry is the local cluster's (192.168.56.10:5000, plain HTTP), which
deploy/kustomization.yaml points the manifests at; the cluster must be up. With Docker,
the Dockerfile at the top of the repository builds the same images.";

const CRANE: &str = "/var/cache/ktrail/crane-v0.22.1/bin/crane";
const IMAGES_DIR: &str = "/var/cache/ktrail/images";
const BASE_DEBS: [&str; 2] = ["libc6", "libgcc-s1"];

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// Registry to push to (plain HTTP).
    #[arg(long, value_name = "HOST:PORT", default_value = "192.168.56.10:5000")]
    pub registry: String,
    /// Image tag.
    #[arg(long, default_value = "dev")]
    pub tag: String,
    /// Use the binaries already built (target/release, or target/debug with --debug).
    #[arg(long)]
    pub no_build: bool,
    /// Debug binaries (what `cargo xtask test` has built already) instead of release:
    /// quicker to make, slower to run. tests/tests/deploy.rs uses them.
    #[arg(long)]
    pub debug: bool,
}

struct Image {
    name: &'static str,
    entrypoint: &'static str,
    bins: &'static [&'static str],
}

const IMAGES: [Image; 2] = [
    Image {
        name: "ktrail-agent",
        entrypoint: "/usr/local/bin/ktrail-agent",
        bins: &["ktrail-agent"],
    },
    Image {
        name: "ktrail-collector",
        entrypoint: "/usr/local/bin/ktrail-collector",
        bins: &["ktrail-collector", "ktrail"],
    },
];

fn step(n: usize, what: &str) {
    println!("\n==> [{n}/4] {what}");
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {}", crate::util::show(cmd)))?;
    if !out.status.success() {
        bail!(
            "{} failed ({}): {}",
            crate::util::show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// libc6 and libgcc-s1 from their .debs, as a tar layer (cached).
fn base_layer() -> Result<PathBuf> {
    let out = Path::new(IMAGES_DIR).join("ktrail-base-layer.tar");
    if out.exists() {
        println!("    cached: {}", out.display());
        return Ok(out);
    }
    std::fs::create_dir_all(IMAGES_DIR).with_context(|| format!("creating {IMAGES_DIR}"))?;
    let work = tempfile_dir("ktrail-base")?;
    run_cmd(
        Command::new("apt-get")
            .arg("download")
            .args(BASE_DEBS)
            .current_dir(&work),
    )
    .context("downloading libc6 and libgcc-s1 (is `apt-get update` needed?)")?;
    let root = work.join("rootfs");
    std::fs::create_dir_all(&root)?;
    for entry in std::fs::read_dir(&work)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "deb") {
            run_cmd(Command::new("dpkg-deb").arg("-x").arg(&path).arg(&root))?;
        }
    }
    for dir in ["usr/share/doc", "usr/share/lintian", "usr/share/locale"] {
        let _ = std::fs::remove_dir_all(root.join(dir));
    }
    for dir in ["tmp", "proc", "sys", "dev", "etc", "var/lib/ktrail"] {
        std::fs::create_dir_all(root.join(dir))?;
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/sbin/nologin\n",
    )?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n")?;
    tar(&root, &out)?;
    let _ = std::fs::remove_dir_all(&work);
    println!("    {} ({} KiB)", out.display(), size_kib(&out));
    Ok(out)
}

fn tempfile_dir(prefix: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn tar(root: &Path, out: &Path) -> Result<()> {
    let tmp = out.with_extension("tar.tmp");
    run_cmd(
        Command::new("tar")
            .args(["--numeric-owner", "--owner=0", "--group=0", "--sort=name"])
            .args(["--mtime=@0", "-C"])
            .arg(root)
            .arg("-cf")
            .arg(&tmp)
            .arg("."),
    )?;
    std::fs::rename(&tmp, out).with_context(|| format!("moving {}", tmp.display()))
}

fn size_kib(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len() / 1024).unwrap_or(0)
}

/// The image's binaries, stripped, under /usr/local/bin, as a tar layer.
fn app_layer(image: &Image, release: &Path, work: &Path) -> Result<PathBuf> {
    let root = work.join(image.name);
    let bin = root.join("usr/local/bin");
    std::fs::create_dir_all(&bin)?;
    for name in image.bins {
        let src = release.join(name);
        if !src.exists() {
            bail!(
                "{} is missing: build it (drop --no-build) or run `cargo build --release`",
                src.display()
            );
        }
        run_cmd(
            Command::new("objcopy")
                .arg("--strip-debug")
                .arg(&src)
                .arg(bin.join(name)),
        )
        .context("stripping the debug info (objcopy, from binutils)")?;
    }
    let out = work.join(format!("{}-layer.tar", image.name));
    tar(&root, &out)?;
    Ok(out)
}

pub fn run(args: ImageArgs) -> Result<()> {
    let start = Instant::now();
    if !Path::new(CRANE).exists() {
        bail!("{CRANE} is missing: `cargo xtask cluster up` builds it (the registry comes with the cluster too)");
    }
    let crane = || {
        let mut cmd = Command::new(CRANE);
        cmd.arg("--insecure");
        cmd
    };
    // Fail before building when the registry is down.
    output(crane().args(["catalog", &args.registry])).with_context(|| {
        format!(
            "the registry {} does not answer: is the cluster up (`cargo xtask cluster up`)?",
            args.registry
        )
    })?;

    let root = workspace_root();
    let profile = if args.debug { "debug" } else { "release" };
    let release = root.join("target").join(profile);
    step(
        1,
        &format!("cargo build ({profile}: agent, collector, CLI)"),
    );
    if args.no_build {
        println!("    skipped (--no-build)");
    } else {
        let mut build = cargo();
        build.current_dir(&root).arg("build");
        if !args.debug {
            build.arg("--release");
        }
        run_cmd(
            build
                .args(["-p", "ktrail-agent", "-p", "ktrail-collector"])
                .args(["-p", "ktrail-cli"]),
        )?;
    }

    step(2, "base layer: Debian libc6, libgcc-s1");
    let base = base_layer()?;

    step(3, "binary layers");
    let work = tempfile_dir("ktrail-image")?;
    let mut layers = Vec::new();
    for image in &IMAGES {
        let layer = app_layer(image, &release, &work)?;
        println!("    {}: {} KiB", image.name, size_kib(&layer));
        layers.push(layer);
    }

    step(4, &format!("push to {}", args.registry));
    let revision =
        output(
            Command::new("git")
                .current_dir(&root)
                .args(["rev-parse", "--short", "HEAD"]),
        )
        .unwrap_or_else(|_| "unknown".into());
    for (image, layer) in IMAGES.iter().zip(&layers) {
        let reference = format!("{}/ktrail/{}:{}", args.registry, image.name, args.tag);
        output(
            crane()
                .args(["append", "--platform", "linux/amd64", "-f"])
                .arg(&base)
                .arg("-f")
                .arg(layer)
                .args(["-t", &reference]),
        )
        .with_context(|| format!("pushing the layers of {reference}"))?;
        output(crane().args([
            "mutate",
            &reference,
            "--entrypoint",
            image.entrypoint,
            "-e",
            "PATH=/usr/local/bin:/usr/bin:/bin",
            "-l",
            "org.opencontainers.image.source=ktrail",
            "-l",
            &format!("org.opencontainers.image.revision={revision}"),
            "-t",
            &reference,
        ]))
        .with_context(|| format!("setting the entrypoint of {reference}"))?;
        let digest = output(crane().args(["digest", &reference]))?;
        println!("    {reference} -> {digest}");
    }
    let _ = std::fs::remove_dir_all(&work);
    println!(
        "\nimages pushed ({}); deploy with `kubectl apply -k deploy/`",
        elapsed(start)
    );
    Ok(())
}
