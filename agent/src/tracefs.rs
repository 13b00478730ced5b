//! Makes sure tracefs is there and that the tracepoint records have the layout the
//! programs were built for.

use std::path::{Path, PathBuf};

use ktrail_agent_common::tracepoints::FIELDS;

const CANDIDATES: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at /sys/kernel/tracing failed ({0}); mount it \
         with `mount -t tracefs nodev /sys/kernel/tracing` (in a pod: mount the host's \
         /sys/kernel/tracing)"
    )]
    NotMounted(std::io::Error),
    #[error("cannot read tracepoint format {path}: {source}")]
    Format {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "tracepoint {group}:{event} field {field} is at offset {found:?} size {found_size:?} on \
         this kernel, the programs expect offset {offset} size {size}"
    )]
    Layout {
        group: String,
        event: String,
        field: String,
        offset: usize,
        size: usize,
        found: Option<usize>,
        found_size: Option<usize>,
    },
}

/// Returns the tracefs root, mounting it when missing.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    for root in CANDIDATES {
        if Path::new(root).join("events").is_dir() {
            return Ok(PathBuf::from(root));
        }
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: plain mount(2) with valid NUL-terminated strings.
    let rc = unsafe {
        libc::mount(
            c"nodev".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::NotMounted(std::io::Error::last_os_error()));
    }
    Ok(PathBuf::from(CANDIDATES[0]))
}

/// Finds `field:<type> <name>; offset:N; size:M;` (tab separated) in a format file.
pub fn field_layout(format: &str, field: &str) -> Option<(usize, usize)> {
    format.lines().find_map(|line| {
        let line = line.trim();
        let decl = line.strip_prefix("field:")?.split(';').next()?;
        let name = decl.rsplit([' ', '*']).next()?;
        let name = name.split('[').next()?;
        if name != field {
            return None;
        }
        let num = |key: &str| -> Option<usize> {
            line.split(';')
                .find_map(|p| p.trim().strip_prefix(key)?.parse().ok())
        };
        Some((num("offset:")?, num("size:")?))
    })
}

pub fn verify_layouts(root: &Path) -> Result<(), TracefsError> {
    for &(group, event, field, offset, size) in FIELDS {
        let path = root.join("events").join(group).join(event).join("format");
        let format = std::fs::read_to_string(&path).map_err(|source| TracefsError::Format {
            path: path.clone(),
            source,
        })?;
        let found = field_layout(&format, field);
        if found != Some((offset, size)) {
            return Err(TracefsError::Layout {
                group: group.into(),
                event: event.into(),
                field: field.into(),
                offset,
                size,
                found: found.map(|f| f.0),
                found_size: found.map(|f| f.1),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORK: &str = "name: task_newtask\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:pid_t pid;\toffset:8;\tsize:4;\tsigned:1;\n\tfield:char comm[16];\toffset:12;\tsize:16;\tsigned:0;\n\tfield:const void * skaddr;\toffset:40;\tsize:8;\tsigned:0;\n";

    #[test]
    fn parses_field_lines() {
        assert_eq!(field_layout(FORK, "pid"), Some((8, 4)));
        assert_eq!(field_layout(FORK, "comm"), Some((12, 16)));
        assert_eq!(field_layout(FORK, "skaddr"), Some((40, 8)));
        assert_eq!(field_layout(FORK, "nope"), None);
    }

    /// The layouts the programs were built for match this machine's kernel.
    #[test]
    fn running_kernel_matches() {
        let root = ensure_mounted().expect("tracefs");
        verify_layouts(&root).expect("tracepoint layouts");
    }
}
