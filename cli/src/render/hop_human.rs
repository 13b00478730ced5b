//! `ktrail watch`: one line per hop.

use ktrail_proto::v1::{Hop, HopEnd, ObjectRef};

use crate::escape::human_bytes;
use crate::style::{Color, Style};
use crate::time::local_time_ms;

fn end_text(e: Option<&HopEnd>, style: &Style, color: Color) -> String {
    let Some(e) = e else {
        return style.paint(Color::Dim, "?");
    };
    // From the collector's Kubernetes metadata: the pod (or at least the node)
    // behind this end's address.
    let k8s = if !e.pod.is_empty() {
        format!("{}/{}", e.namespace, e.pod)
    } else {
        e.k8s_node.clone()
    };
    if e.observed {
        let text = style.paint(color, &format!("{}/{}[{}]", e.node, e.comm, e.pid));
        if e.pod.is_empty() {
            text
        } else {
            format!("{text} {}", style.paint(Color::Dim, &format!("({k8s})")))
        }
    } else {
        let addr = if e.port == 0 {
            e.addr.clone()
        } else if e.addr.contains(':') {
            format!("[{}]:{}", e.addr, e.port)
        } else {
            format!("{}:{}", e.addr, e.port)
        };
        if k8s.is_empty() {
            style.paint(Color::Dim, &format!("{addr} (untraced)"))
        } else {
            style.paint(Color::Dim, &format!("{addr} ({k8s}, untraced)"))
        }
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

/// google.rpc.Code names.
fn grpc_code_name(code: u32) -> String {
    const NAMES: [&str; 17] = [
        "OK",
        "Canceled",
        "Unknown",
        "InvalidArgument",
        "DeadlineExceeded",
        "NotFound",
        "AlreadyExists",
        "PermissionDenied",
        "ResourceExhausted",
        "FailedPrecondition",
        "Aborted",
        "OutOfRange",
        "Unimplemented",
        "Internal",
        "Unavailable",
        "DataLoss",
        "Unauthenticated",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("code {code}"), |n| (*n).to_owned())
}

/// `Pod default/x node=w Running`, `ADDED Pod default/x`, `pods default/x (status)`.
fn object_label(o: &ObjectRef) -> String {
    let what = if o.kind.is_empty() {
        &o.resource
    } else {
        &o.kind
    };
    let mut s = String::new();
    if !o.watch_event_type.is_empty() {
        s.push_str(&o.watch_event_type);
        s.push(' ');
    }
    s.push_str(if what.is_empty() { "object" } else { what });
    match (o.namespace.is_empty(), o.name.is_empty()) {
        (false, false) => s.push_str(&format!(" {}/{}", o.namespace, o.name)),
        (true, false) => s.push_str(&format!(" {}", o.name)),
        (false, true) => s.push_str(&format!(" in {}", o.namespace)),
        (true, true) => {}
    }
    if !o.subresource.is_empty() {
        s.push_str(&format!(" ({})", o.subresource));
    }
    if !o.node_name.is_empty() {
        s.push_str(&format!(" node={}", o.node_name));
    }
    if !o.phase.is_empty() {
        s.push_str(&format!(" {}", o.phase));
    }
    s
}

/// ` → 201`, ` → NotFound: pod "x" not found`, or "" when no outcome is known.
fn outcome(hop: &Hop) -> String {
    let mut s = String::new();
    if hop.has_grpc_status {
        s.push_str(&format!(" → {}", grpc_code_name(hop.grpc_status)));
    } else if hop.status_code != 0 && hop.app_protocol != "grpc" {
        s.push_str(&format!(" → {}", hop.status_code));
    }
    let failed = (hop.has_grpc_status && hop.grpc_status != 0) || hop.status_code >= 400;
    if !hop.status_message.is_empty() && (failed || s.is_empty()) {
        s.push_str(if s.is_empty() { " → " } else { ": " });
        s.push_str(&hop.status_message);
    }
    s
}

/// What the decoders saw, in one phrase; `None` when nothing was decoded.
pub fn decoded_text(hop: &Hop) -> Option<String> {
    let watch_event = hop.kind == "watch-event";
    if let Some(e) = &hop.etcd {
        let mut s = format!("etcd {}", e.op);
        if watch_event && !e.events.is_empty() {
            s = format!("etcd watch {}", e.events.join(", "));
        } else if !e.op.contains(' ') {
            for k in e.keys.iter().take(2) {
                s.push_str(&format!(" {k}"));
            }
            if e.keys.len() > 2 {
                s.push_str(&format!(" (+{})", e.keys.len() - 2));
            }
        }
        if hop.has_grpc_status && hop.grpc_status != 0 {
            s.push_str(&outcome(hop));
        } else if !e.txn_result.is_empty() {
            s.push_str(&format!(" → {}", e.txn_result));
        }
        if e.revision > 0 {
            s.push_str(&format!(" rev {}", e.revision));
        }
        return Some(s);
    }
    if let Some(c) = &hop.cri {
        let mut s = format!("CRI {}", c.method);
        match (c.pod_namespace.is_empty(), c.pod_name.is_empty()) {
            (false, false) => s.push_str(&format!(" {}/{}", c.pod_namespace, c.pod_name)),
            (true, false) => s.push_str(&format!(" {}", c.pod_name)),
            _ => {}
        }
        if !c.container_name.is_empty() {
            s.push_str(&format!(" container {}", c.container_name));
        }
        if !c.image.is_empty() {
            s.push_str(&format!(" image {}", c.image));
        }
        let id = if c.container_id.is_empty() {
            &c.pod_sandbox_id
        } else {
            &c.container_id
        };
        if !id.is_empty() {
            s.push_str(&format!(" id {}", id.get(..13).unwrap_or(id)));
        }
        s.push_str(&outcome(hop));
        return Some(s);
    }
    let mut s = if watch_event {
        "watch".to_owned()
    } else if !hop.grpc_method.is_empty() && hop.app_protocol == "ttrpc" {
        format!("ttrpc {}/{}", hop.grpc_service, hop.grpc_method)
    } else if !hop.grpc_method.is_empty() {
        format!("gRPC {}/{}", hop.grpc_service, hop.grpc_method)
    } else if !hop.method.is_empty() || !hop.path.is_empty() {
        format!("{} {}", hop.method, hop.path)
    } else {
        return None;
    };
    if !watch_event {
        s.push_str(&outcome(hop));
    }
    // The request path's own resource is in the path already.
    let objects: Vec<String> = hop
        .objects
        .iter()
        .filter(|o| !o.kind.is_empty())
        .take(3)
        .map(object_label)
        .collect();
    if !objects.is_empty() {
        s.push_str(if watch_event { " " } else { " [" });
        s.push_str(&objects.join(", "));
        if !watch_event {
            s.push(']');
        }
    }
    Some(s)
}

/// `20:53:01.123 k8s-worker/kubelet[4242] → k8s-cp/kube-apiserver[77] tcp GET /x HTTP/1.1 1.234 ms`,
/// or with what the decoders saw:
/// `… → k8s-cp/kube-apiserver[77] tcp/http2 POST /api/v1/namespaces/default/pods → 201 3.100 ms`.
pub fn hop_line(hop: &Hop, style: &Style) -> String {
    let decoded = decoded_text(hop);
    let what = if hop.kind == "connection" {
        "connection (no data)".to_owned()
    } else if let Some(d) = decoded {
        let mut d = d;
        if hop.redacted {
            d.push_str(" (redacted)");
        }
        d
    } else if hop.summary.is_empty() {
        format!(
            "{} → {}",
            human_bytes(hop.request_bytes),
            human_bytes(hop.response_bytes)
        )
    } else {
        hop.summary.clone()
    };
    let proto = match hop.app_protocol.as_str() {
        "" | "unknown" => hop.protocol.clone(),
        app => format!("{}/{app}", hop.protocol),
    };
    format!(
        "{} {} → {} {} {} {}",
        style.paint(Color::Dim, &local_time_ms(hop.start_unix_ns)),
        end_text(hop.client.as_ref(), style, Color::Cyan),
        end_text(hop.server.as_ref(), style, Color::Magenta),
        style.paint(Color::Blue, &proto),
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
        let mut labelled = hop.clone();
        if let (Some(c), Some(s)) = (labelled.client.as_mut(), labelled.server.as_mut()) {
            c.k8s_node = "k8s-worker".into();
            s.pod = "redis-0".into();
            s.namespace = "db".into();
        }
        assert!(
            hop_line(&labelled, &Style::plain())
                .contains("10.0.0.9:40000 (k8s-worker, untraced) → n/redis-server[5] (db/redis-0)"),
            "{}",
            hop_line(&labelled, &Style::plain())
        );
        assert!(
            line.contains("10.0.0.9:40000 (untraced) → n/redis-server[5]"),
            "{line}"
        );
        assert!(line.contains("20 B → 4.0 KiB"), "{line}");
    }

    fn decoded(kind: &str) -> Hop {
        Hop {
            client: end("k8s-cp", "kubectl", 10),
            server: end("k8s-cp", "kube-apiserver", 77),
            protocol: "tcp".into(),
            app_protocol: "http2".into(),
            kind: kind.into(),
            duration_ns: 3_100_000,
            ..Hop::default()
        }
    }

    fn what(hop: &Hop) -> String {
        let line = hop_line(hop, &Style::plain());
        line.split_once("] ")
            .and_then(|(_, r)| r.split_once("] "))
            .map(|(_, r)| r.to_owned())
            .unwrap_or(line)
    }

    #[test]
    fn decoded_http_etcd_cri_and_watch_lines() {
        let mut hop = decoded("request/response");
        hop.method = "POST".into();
        hop.path = "/api/v1/namespaces/default/pods".into();
        hop.status_code = 201;
        hop.redacted = true;
        assert_eq!(
            what(&hop),
            "tcp/http2 POST /api/v1/namespaces/default/pods → 201 (redacted) 3.100 ms"
        );

        let mut hop = decoded("request/response");
        hop.app_protocol = "grpc".into();
        hop.grpc_method = "Txn".into();
        hop.has_grpc_status = true;
        hop.etcd = Some(ktrail_proto::v1::EtcdInfo {
            op: "Txn put /registry/pods/default/x".into(),
            txn_result: "succeeded".into(),
            revision: 7,
            ..Default::default()
        });
        assert_eq!(
            what(&hop),
            "tcp/grpc etcd Txn put /registry/pods/default/x → succeeded rev 7 3.100 ms"
        );

        let mut hop = decoded("request/response");
        hop.app_protocol = "grpc".into();
        hop.has_grpc_status = true;
        hop.grpc_status = 5;
        hop.status_message = "not found".into();
        hop.cri = Some(ktrail_proto::v1::CriInfo {
            method: "StartContainer".into(),
            container_id: "0123456789abcdef".into(),
            ..Default::default()
        });
        assert_eq!(
            what(&hop),
            "tcp/grpc CRI StartContainer id 0123456789abc → NotFound: not found 3.100 ms"
        );

        let mut hop = decoded("watch-event");
        hop.objects = vec![ObjectRef {
            kind: "Pod".into(),
            namespace: "default".into(),
            name: "x".into(),
            watch_event_type: "ADDED".into(),
            phase: "Pending".into(),
            ..ObjectRef::default()
        }];
        assert_eq!(
            what(&hop),
            "tcp/http2 watch ADDED Pod default/x Pending 3.100 ms"
        );
    }
}
