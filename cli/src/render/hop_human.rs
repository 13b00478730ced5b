//! `ktrail watch`: one line per hop.

use ktrail_proto::v1::{Hop, HopEnd};

use crate::escape::human_bytes;
use crate::style::{Color, Style};
use crate::time::local_time_ms;

fn end_text(e: Option<&HopEnd>, style: &Style, color: Color) -> String {
    let Some(e) = e else {
        return style.paint(Color::Dim, "?");
    };
    if e.observed {
        style.paint(color, &format!("{}/{}[{}]", e.node, e.comm, e.pid))
    } else {
        let addr = if e.port == 0 {
            e.addr.clone()
        } else if e.addr.contains(':') {
            format!("[{}]:{}", e.addr, e.port)
        } else {
            format!("{}:{}", e.addr, e.port)
        };
        style.paint(Color::Dim, &format!("{addr} (untraced)"))
    }
}

/// `12.345 ms`, coloured by how slow.
fn duration_text(ns: u64, style: &Style) -> String {
    let ms = ns as f64 / 1e6;
    let color = if ms < 100.0 {
        Color::Green
    } else if ms < 1000.0 {
        Color::Yellow
    } else {
        Color::Red
    };
    style.paint(color, &format!("{ms:.3} ms"))
}

/// `20:53:01.123 k8s-worker/kubelet[4242] → k8s-cp/kube-apiserver[77] tcp GET /x HTTP/1.1 1.234 ms`
pub fn hop_line(hop: &Hop, style: &Style) -> String {
    let what = if hop.kind == "connection" {
        "connection (no data)".to_owned()
    } else if hop.summary.is_empty() {
        format!(
            "{} → {}",
            human_bytes(hop.request_bytes),
            human_bytes(hop.response_bytes)
        )
    } else {
        hop.summary.clone()
    };
    format!(
        "{} {} → {} {} {} {}",
        style.paint(Color::Dim, &local_time_ms(hop.start_unix_ns)),
        end_text(hop.client.as_ref(), style, Color::Cyan),
        end_text(hop.server.as_ref(), style, Color::Magenta),
        style.paint(Color::Blue, &hop.protocol),
        style.paint(Color::Bold, &what),
        duration_text(hop.duration_ns, style),
    )
}

/// A human line saying hops were skipped.
pub fn lagged_line(skipped: u64, style: &Style) -> String {
    style.paint(
        Color::Yellow,
        &format!("… {skipped} hops skipped: this client fell behind the collector"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(node: &str, comm: &str, pid: u32) -> Option<HopEnd> {
        Some(HopEnd {
            node: node.into(),
            comm: comm.into(),
            pid,
            observed: true,
            ..HopEnd::default()
        })
    }

    #[test]
    fn a_paired_hop_line() {
        let hop = Hop {
            client: end("k8s-worker", "kubelet", 4242),
            server: end("k8s-cp", "kube-apiserver", 77),
            protocol: "tcp".into(),
            summary: "GET /healthz HTTP/1.1".into(),
            duration_ns: 1_234_567,
            start_unix_ns: 1_700_000_000_123_000_000,
            ..Hop::default()
        };
        let line = hop_line(&hop, &Style::plain());
        let rest = line.split_once(' ').map(|(_, r)| r).unwrap_or_default();
        assert_eq!(
            rest,
            "k8s-worker/kubelet[4242] → k8s-cp/kube-apiserver[77] tcp GET /healthz HTTP/1.1 1.235 ms"
        );
        assert!(line.starts_with(&local_time_ms(hop.start_unix_ns)));
        assert!(!line.contains('\x1b'));
        assert!(hop_line(&hop, &Style::colored()).contains("\x1b[36m"));
    }

    #[test]
    fn untraced_ends_and_binary_payloads() {
        let hop = Hop {
            client: Some(HopEnd {
                addr: "10.0.0.9".into(),
                port: 40000,
                ..HopEnd::default()
            }),
            server: end("n", "redis-server", 5),
            protocol: "tcp".into(),
            request_bytes: 20,
            response_bytes: 4096,
            ..Hop::default()
        };
        let line = hop_line(&hop, &Style::plain());
        assert!(
            line.contains("10.0.0.9:40000 (untraced) → n/redis-server[5]"),
            "{line}"
        );
        assert!(line.contains("20 B → 4.0 KiB"), "{line}");
    }
}
