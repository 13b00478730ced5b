//! What /proc says about a process: name, parent, exe, command line, network
//! namespace, container id. Used to seed tracking at start and to enrich events.

use std::{fs, path::Path};

use ktrail_proto::v1::ProcessInfo;

pub fn netns_of(pid: &str) -> Option<u32> {
    parse_ns_link(
        &fs::read_link(format!("/proc/{pid}/ns/net"))
            .ok()?
            .to_string_lossy(),
    )
}

/// `net:[4026531840]` → 4026531840
pub fn parse_ns_link(link: &str) -> Option<u32> {
    link.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

pub fn comm_of(pid: &str) -> Option<String> {
    Some(
        fs::read_to_string(format!("/proc/{pid}/comm"))
            .ok()?
            .trim_end()
            .to_string(),
    )
}

/// Parent pid from /proc/PID/stat (the field after the parenthesised comm).
pub fn ppid_of(pid: &str) -> Option<u32> {
    parse_stat_ppid(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

pub fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// The 64-hex container id in a cgroup path, as containerd and CRI-O name them
/// (`…/cri-containerd-<id>.scope`, `…/kubepods/…/<id>`, `…/docker-<id>.scope`).
pub fn container_id_from_cgroup(cgroup: &str) -> Option<String> {
    cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        path.split('/').rev().find_map(|seg| {
            let seg = seg.strip_suffix(".scope").unwrap_or(seg);
            let id = seg.rsplit(['-', ':']).next()?;
            (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
        })
    })
}

pub fn process_info(pid: u32) -> Option<ProcessInfo> {
    let p = pid.to_string();
    if !Path::new(&format!("/proc/{p}")).exists() {
        return None;
    }
    let cmdline = fs::read(format!("/proc/{p}/cmdline"))
        .map(|raw| {
            raw.split(|&b| b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        // `--from-literal=password=…` and the like stay on the node.
        .map(|line| ktrail_protocols::raw_redact::cmdline(&line).0)
        .unwrap_or_default();
    Some(ProcessInfo {
        pid,
        ppid: ppid_of(&p).unwrap_or(0),
        comm: comm_of(&p).unwrap_or_default(),
        exe: fs::read_link(format!("/proc/{p}/exe"))
            .map(|e| e.to_string_lossy().into_owned())
            .unwrap_or_default(),
        cmdline,
        container_id: fs::read_to_string(format!("/proc/{p}/cgroup"))
            .ok()
            .and_then(|c| container_id_from_cgroup(&c))
            .unwrap_or_default(),
        netns: netns_of(&p).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_formats() {
        assert_eq!(parse_ns_link("net:[4026531840]"), Some(4026531840));
        assert_eq!(parse_ns_link("mnt:[1]"), None);
        assert_eq!(
            parse_stat_ppid("123 (kube (api) server) S 77 123 123 0"),
            Some(77)
        );
        let id = "a".repeat(64);
        let cg = format!(
            "12:pids:/kubepods/besteffort/pod1234/{id}\n0::/system.slice/containerd.service"
        );
        assert_eq!(container_id_from_cgroup(&cg), Some(id.clone()));
        let systemd = format!("0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope");
        assert_eq!(container_id_from_cgroup(&systemd), Some(id));
        assert_eq!(container_id_from_cgroup("0::/user.slice"), None);
    }

    #[test]
    fn reads_own_process() {
        let me = process_info(std::process::id()).expect("own /proc entry");
        assert_eq!(me.pid, std::process::id());
        assert!(me.netns > 0 && !me.exe.is_empty() && !me.comm.is_empty());
    }
}
