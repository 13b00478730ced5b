//! The capabilities this process holds, so that a failure to load or attach
//! names the ones missing instead of only "operation not permitted".

/// What the agent uses, by capability number (linux/capability.h).
const USED: [(u32, &str, &str); 4] = [
    (39, "CAP_BPF", "load eBPF programs and maps"),
    (
        38,
        "CAP_PERFMON",
        "attach tracepoints and read kernel memory",
    ),
    (
        21,
        "CAP_SYS_ADMIN",
        "attach uprobes (Go TLS): perf_event_open answers EACCES without it",
    ),
    (19, "CAP_SYS_PTRACE", "read other users' /proc/PID/exe"),
];

/// The effective set from /proc/self/status (`CapEff:` in hex).
fn effective(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// Capabilities the agent uses that `status` (of /proc/PID/status) lacks,
/// with what each is for; `None` when the set cannot be read.
fn missing_in(status: &str) -> Option<Vec<(&'static str, &'static str)>> {
    let eff = effective(status)?;
    Some(
        USED.iter()
            .filter(|(bit, _, _)| eff & (1 << bit) == 0)
            .map(|(_, name, why)| (*name, *why))
            .collect(),
    )
}

/// This process's missing capabilities, as a clause for an error message:
/// "; this process lacks CAP_BPF (load eBPF programs and maps), …", or "".
pub fn missing_clause() -> String {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    match missing_in(&status) {
        Some(missing) if !missing.is_empty() => {
            let list: Vec<String> = missing
                .iter()
                .map(|(name, why)| format!("{name} ({why})"))
                .collect();
            format!("; this process lacks {}", list.join(", "))
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_capabilities_are_named() {
        // Root with BPF, PERFMON and SYS_ADMIN dropped (setpriv --bounding-set).
        let status = "Name:\tktrail-agent\nCapEff:\t0000013fffdfffff\n";
        let names: Vec<&str> = missing_in(status)
            .expect("parsed")
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(names, ["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"]);
        let full = "CapEff:\t000001ffffffffff\n";
        assert_eq!(missing_in(full), Some(Vec::new()));
        assert_eq!(missing_in("no caps line"), None);
    }
}
