//! Opens a Go ELF binary and resolves the TLS functions to file offsets for uprobes.

use std::path::Path;

use object::{Object, ObjectSection, ObjectSegment};

use super::{
    buildinfo,
    pclntab::Pclntab,
    returns::{after_stack_check, ret_offsets},
};

pub const TLS_WRITE: &str = "crypto/tls.(*Conn).Write";
pub const TLS_READ: &str = "crypto/tls.(*Conn).Read";

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0} is not an ELF file this agent can read: {1}")]
    NotElf(String, object::Error),
    #[error("{0} is not a Go binary (no Go function table): {1}")]
    NotGo(String, super::pclntab::PclntabError),
    #[error("{0} is not an x86-64 binary; Go TLS tracing supports x86-64 only")]
    Arch(String),
    #[error("{path} ({go_version}) does not contain {function} (no TLS in this program)")]
    NoFunction {
        path: String,
        go_version: String,
        function: &'static str,
    },
    #[error("{path}: {function} at {vaddr:#x} is not inside a loadable segment")]
    NotMapped {
        path: String,
        function: &'static str,
        vaddr: u64,
    },
    #[error(
        "{path} was built with {go_version}; Go TLS tracing needs the register ABI (go1.17 or newer)"
    )]
    OldGo { path: String, go_version: String },
}

/// Where to put the uprobes: file offsets as the kernel wants them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoTlsFunctions {
    pub go_version: String,
    /// Just after the stack-growth check of `(*Conn).Write`: reached once per call.
    pub write_offset: u64,
    /// Just after the stack-growth check of `(*Conn).Read`.
    pub read_offset: u64,
    /// File offsets of each RET in `(*Conn).Read`, where RAX holds the bytes read.
    pub read_returns: Vec<u64>,
}

pub struct GoBinary {
    path: String,
    data: Vec<u8>,
}

impl GoBinary {
    pub fn open(path: &Path) -> Result<Self, ResolveError> {
        let data = std::fs::read(path).map_err(|source| ResolveError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Ok(Self {
            path: path.display().to_string(),
            data,
        })
    }

    pub fn resolve_tls(&self) -> Result<GoTlsFunctions, ResolveError> {
        let path = &self.path;
        let file =
            object::File::parse(&*self.data).map_err(|e| ResolveError::NotElf(path.clone(), e))?;
        if file.architecture() != object::Architecture::X86_64 {
            return Err(ResolveError::Arch(path.clone()));
        }
        let go_version = file
            .section_by_name(".go.buildinfo")
            .and_then(|s| s.data().ok())
            .and_then(buildinfo::go_version)
            .unwrap_or_else(|| "go (before 1.18)".into());
        if let Some((1, minor)) = buildinfo::major_minor(&go_version) {
            if minor < 17 {
                return Err(ResolveError::OldGo {
                    path: path.clone(),
                    go_version,
                });
            }
        }
        let text_addr = file
            .section_by_name(".text")
            .map(|s| s.address())
            .unwrap_or(0);
        let table = match file
            .section_by_name(".gopclntab")
            .and_then(|s| s.data().ok())
        {
            Some(d) => Pclntab::parse(d, text_addr),
            None => {
                let rodata = file
                    .section_by_name(".data.rel.ro")
                    .or_else(|| file.section_by_name(".rodata"))
                    .and_then(|s| s.data().ok())
                    .unwrap_or_default();
                Pclntab::find(rodata, text_addr)
            }
        }
        .map_err(|e| ResolveError::NotGo(path.clone(), e))?;

        let locate = |function: &'static str| -> Result<(u64, Vec<u64>), ResolveError> {
            let range = table
                .lookup(function)
                .ok_or_else(|| ResolveError::NoFunction {
                    path: path.clone(),
                    go_version: go_version.clone(),
                    function,
                })?;
            let not_mapped = || ResolveError::NotMapped {
                path: path.clone(),
                function,
                vaddr: range.entry,
            };
            let segment = file
                .segments()
                .find(|s| range.entry >= s.address() && range.end <= s.address() + s.size())
                .ok_or_else(not_mapped)?;
            let (seg_off, seg_size) = segment.file_range();
            let offset = range.entry - segment.address() + seg_off;
            let len = range.end - range.entry;
            if offset + len > seg_off + seg_size {
                return Err(not_mapped());
            }
            let code = self
                .data
                .get(offset as usize..(offset + len) as usize)
                .ok_or_else(not_mapped)?;
            let rets = ret_offsets(code, range.entry)
                .into_iter()
                .map(|r| offset + r)
                .collect();
            Ok((offset + after_stack_check(code, range.entry), rets))
        };
        let (write_offset, _) = locate(TLS_WRITE)?;
        let (read_offset, read_returns) = locate(TLS_READ)?;
        Ok(GoTlsFunctions {
            go_version,
            write_offset,
            read_offset,
            read_returns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stripped kubectl binaries preinstalled here, one per Kubernetes minor (Go
    /// 1.20 … 1.24): each must resolve, with RETs that really are RET (0xC3).
    #[test]
    fn resolves_preinstalled_stripped_kubectls() {
        let dir = Path::new("/usr/lib/google-cloud-sdk/bin");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).expect("kubectl directory") {
            let path = entry.expect("entry").path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if !name.starts_with("kubectl.1.") {
                continue;
            }
            let bin = GoBinary::open(&path).expect("readable");
            let f = bin.resolve_tls().unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(f.go_version.starts_with("go1."), "{name}: {}", f.go_version);
            assert!(!f.read_returns.is_empty(), "{name}");
            for r in &f.read_returns {
                assert_eq!(bin.data[*r as usize], 0xc3, "{name}: RET at {r:#x}");
            }
            // The probes sit right after `jbe morestack` (0f 86 rel32, or 76 rel8).
            for off in [f.write_offset as usize, f.read_offset as usize] {
                let d = &bin.data;
                let after_jbe = d[off - 6..off - 4] == [0x0f, 0x86] || d[off - 2] == 0x76;
                assert!(
                    after_jbe,
                    "{name}: probe at {off:#x} does not follow the stack check"
                );
            }
            assert_ne!(f.read_offset, f.write_offset);
            seen += 1;
        }
        assert!(
            seen >= 5,
            "expected the preinstalled kubectl.1.NN binaries, found {seen}"
        );
    }

    /// Go 1.26 stopped storing textStart in the table; entries are offsets from the
    /// `.text` address. The Go toolchain's own `go` command (1.26, with crypto/tls)
    /// must resolve to probes that follow the stack check.
    #[test]
    fn resolves_go_1_26_binaries() {
        let path = Path::new("/usr/local/go/bin/go");
        let bin = GoBinary::open(path).expect("the Go toolchain is installed on this machine kind");
        let f = bin.resolve_tls().unwrap_or_else(|e| panic!("{e}"));
        let (major, minor) = super::buildinfo::major_minor(&f.go_version).expect("version");
        assert!((major, minor) >= (1, 26), "{}", f.go_version);
        for off in [f.write_offset as usize, f.read_offset as usize] {
            let d = &bin.data;
            assert!(
                d[off - 6..off - 4] == [0x0f, 0x86] || d[off - 2] == 0x76,
                "{off:#x}"
            );
        }
        assert!(f.read_returns.iter().all(|r| bin.data[*r as usize] == 0xc3));
    }

    #[test]
    fn non_go_binaries_are_named_clearly() {
        let err = GoBinary::open(Path::new("/bin/sh"))
            .expect("sh")
            .resolve_tls()
            .expect_err("not Go");
        assert!(err.to_string().contains("not a Go binary"), "{err}");
        let err = GoBinary::open(Path::new("/nonexistent"))
            .err()
            .expect("missing");
        assert!(err.to_string().contains("/nonexistent"));
    }
}
