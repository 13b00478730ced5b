//! Issue 8, load: a flow too big for gRPC's default 4 MiB message (700
//! requests of one kubectl, each with 4 KiB captured each way: about 5.6 MiB
//! of hops) is still shown by the real `ktrail show`, as tree and as JSON
//! lines, instead of failing on the reply's size.

mod fake;

use fake::*;
use ktrail_proto::Socket;

const REQUESTS: u64 = 700;

/// A GET of 4 KiB (a padding header), and a 4 KiB answer.
fn exchange(i: u64) -> (Vec<u8>, Vec<u8>) {
    let mut req =
        format!("GET /api/v1/namespaces/default/pods?i={i} HTTP/1.1\r\nHost: cp\r\nX-Pad: ")
            .into_bytes();
    req.resize(4092, b'p');
    req.extend_from_slice(b"\r\n\r\n");
    let head = "HTTP/1.1 200 OK\r\nContent-Length: 4058\r\n\r\n";
    let mut resp = head.as_bytes().to_vec();
    resp.resize(head.len() + 4058, b'r');
    (req, resp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_over_4_mib_is_shown_whole() {
    let f = start().await;
    let cp = Agent::connect(&f.url, "k8s-cp").await;
    let c = Socket::inet(("192.168.56.10", 41000), ("192.168.56.10", 6443));
    let s = Socket::inet(("192.168.56.10", 6443), ("192.168.56.10", 41000));
    let mut seq = 0;
    let mut next = || {
        seq += 1;
        seq
    };
    let mut events = vec![
        syscall(next(), 50, "kubectl", "connect", b"", &c),
        syscall(next(), 7, "kube-apiserver", "accept4", b"", &s),
    ];
    for i in 0..REQUESTS {
        let (req, resp) = exchange(i);
        events.push(syscall(next(), 50, "kubectl", "write", &req, &c));
        events.push(syscall(next(), 7, "kube-apiserver", "read", &req, &s));
        events.push(syscall(next(), 7, "kube-apiserver", "write", &resp, &s));
        events.push(syscall(next(), 50, "kubectl", "read", &resp, &c));
        if events.len() >= 400 {
            cp.send(std::mem::take(&mut events)).await;
        }
    }
    events.push(syscall(next(), 50, "kubectl", "close", b"", &c));
    events.push(syscall(next(), 7, "kube-apiserver", "close", b"", &s));
    cp.send(events).await;

    let flow = wait_flow(&f.url, WAIT * 4, |f| u64::from(f.hop_count) >= REQUESTS).await;

    let tree = show(&f.url, &flow.id, "tree").await;
    let hop_lines = tree
        .lines()
        .filter(|l| l.contains("kube-apiserver[7]"))
        .count();
    assert_eq!(
        hop_lines as u64,
        REQUESTS,
        "{}",
        &tree[..tree.len().min(2000)]
    );
    let jsonl = show(&f.url, &flow.id, "jsonl").await;
    assert!(
        jsonl.len() > 4 << 20,
        "the hops carry their 8 KiB: {} bytes",
        jsonl.len()
    );
    f.collector.shutdown().await.expect("shutdown");
}
