//! Both ends seen: TCP across nodes, unix on one node, connections without data.

use super::fixtures::*;

#[test]
fn two_sided_tcp_exchange_across_nodes_is_one_hop() {
    let mut sim = Sim::new();
    let (c, s) = http_pair();
    sim.feed(CLIENT_NODE, c.connect(T0));
    sim.feed(SERVER_NODE, s.accept(T0 + MS / 2));
    sim.feed_all(CLIENT_NODE, client_exchange(&c, T0 + MS, REQ, RESP));
    sim.feed_all(SERVER_NODE, server_exchange(&s, T0 + MS, REQ, RESP));
    assert!(sim.hops.is_empty(), "nothing is over before close or quiet");
    sim.feed(CLIENT_NODE, c.close(T0 + 5 * MS));
    sim.feed(SERVER_NODE, s.close(T0 + 6 * MS));

    let hops = sim.take_hops();
    assert_eq!(hops.len(), 1, "{hops:#?}");
    let hop = &hops[0];
    assert_eq!(hop.protocol, "tcp");
    assert_eq!(hop.kind, "request/response");
    let (client, server) = (end(hop, true), end(hop, false));
    assert_eq!(
        (client.node.as_str(), client.pid, client.comm.as_str()),
        (CLIENT_NODE, 4242, "curl")
    );
    assert_eq!(
        (client.addr.as_str(), client.port),
        ("192.168.56.20", 54321)
    );
    assert!(client.observed && server.observed);
    assert_eq!(
        (server.node.as_str(), server.pid, server.comm.as_str()),
        (SERVER_NODE, 777, "nginx")
    );
    assert_eq!((server.addr.as_str(), server.port), ("192.168.56.10", 8080));
    assert_eq!(hop.summary, "GET /healthz → 200");
    assert_eq!(hop.request, REQ);
    assert_eq!(hop.response, RESP);
    assert_eq!(hop.request_bytes, REQ.len() as u64);
    assert_eq!(hop.response_bytes, RESP.len() as u64);
    // The client's send starts it; its receive (+ duration) ends it.
    assert_eq!(hop.start_unix_ns, T0 + MS);
    assert_eq!(hop.duration_ns, 2 * MS + 10_000);
    assert!(hop.id.starts_with("h-") && hop.id.len() == 18);
    // Flows are the stitcher's (crate::flows), after assembly.
    assert!(hop.flow_id.is_empty());
    // Timed by the client's events: the client node's clock.
    assert_eq!(hop.clock_node, CLIENT_NODE);
    // connect, send, recv, close on the client; accept, recv, send, close on the server.
    let on = |node: &str| hop.events.iter().filter(|r| r.node == node).count();
    assert_eq!(on(CLIENT_NODE), 4, "{:?}", hop.events);
    assert_eq!(on(SERVER_NODE), 4, "{:?}", hop.events);
    assert!(hop.events.iter().all(|r| r.agent_id == agent_id(&r.node)));

    sim.run_for(3_000);
    assert!(sim.hops.is_empty());
    let stats = sim.asm.stats();
    assert_eq!(
        stats.connections, 0,
        "closed connections are evicted after the linger"
    );
    assert_eq!(stats.connections_closed, 1);
}

#[test]
fn quiet_completes_an_exchange_without_close() {
    let mut sim = Sim::new();
    let (c, s) = http_pair();
    sim.feed_all(CLIENT_NODE, client_exchange(&c, T0, REQ, RESP));
    sim.feed_all(SERVER_NODE, server_exchange(&s, T0, REQ, RESP));
    sim.run_for(50);
    assert!(sim.hops.is_empty(), "still within the quiet period");
    sim.run_for(100);
    let hops = sim.take_hops();
    assert_eq!(hops.len(), 1);
    assert!(end(&hops[0], true).observed && end(&hops[0], false).observed);
}

#[test]
fn unix_sockets_pair_on_inodes() {
    let mut sim = Sim::new();
    let c = End::unix(100, "kubelet", "", 9001, 9002);
    let s = End::unix(
        200,
        "containerd",
        "/run/containerd/containerd.sock",
        9002,
        9001,
    );
    sim.feed("n1", c.connect(T0));
    sim.feed("n1", s.accept(T0 + 1));
    sim.feed("n1", c.send(T0 + MS, b"\x00\x00\x10binary-grpc"));
    sim.feed("n1", s.recv(T0 + MS + 5, b"\x00\x00\x10binary-grpc"));
    sim.feed("n1", s.send(T0 + 2 * MS, b"reply"));
    sim.feed("n1", c.recv(T0 + 2 * MS + 5, b"reply"));
    sim.run_for(200);
    let hops = sim.take_hops();
    assert_eq!(hops.len(), 1, "{hops:#?}");
    let hop = &hops[0];
    assert_eq!(hop.protocol, "unix");
    assert_eq!(end(hop, true).pid, 100);
    assert_eq!(end(hop, false).pid, 200);
    assert_eq!(end(hop, false).addr, "/run/containerd/containerd.sock");
    assert_eq!(hop.summary, "", "binary requests have no summary");
    assert_eq!(hop.response, b"reply");
}

#[test]
fn a_connection_closed_without_data_is_one_connection_hop() {
    let mut sim = Sim::new();
    let (c, s) = http_pair();
    sim.feed(CLIENT_NODE, c.connect(T0));
    sim.feed(SERVER_NODE, s.accept(T0 + MS));
    sim.feed(CLIENT_NODE, c.close(T0 + 2 * MS));
    assert!(sim.hops.is_empty(), "waits for the other side's close");
    sim.feed(SERVER_NODE, s.close(T0 + 3 * MS));
    let hops = sim.take_hops();
    assert_eq!(hops.len(), 1);
    let hop = &hops[0];
    assert_eq!(hop.kind, "connection");
    assert_eq!(end(hop, true).pid, 4242);
    assert_eq!(end(hop, false).pid, 777);
    assert_eq!(hop.request_bytes + hop.response_bytes, 0);
    assert_eq!(hop.start_unix_ns, T0);
    assert_eq!(hop.events.len(), 4);
    sim.run_for(3_000);
    assert!(sim.hops.is_empty());
    assert_eq!(sim.asm.stats().connections, 0);
}

#[test]
fn a_half_seen_connection_hop_waits_for_the_other_close() {
    let mut sim = Sim::new();
    let (c, _) = http_pair();
    sim.feed(CLIENT_NODE, c.connect(T0));
    sim.feed(CLIENT_NODE, c.close(T0 + MS));
    sim.run_for(400);
    assert!(sim.hops.is_empty());
    sim.run_for(200);
    let hops = sim.take_hops();
    assert_eq!(hops.len(), 1);
    assert_eq!(hops[0].kind, "connection");
    let server = end(&hops[0], false);
    assert!(!server.observed);
    assert_eq!((server.addr.as_str(), server.port), ("192.168.56.10", 8080));
}

#[test]
fn a_lone_close_makes_no_hop() {
    let mut sim = Sim::new();
    let (c, _) = http_pair();
    sim.feed(CLIENT_NODE, c.close(T0));
    sim.run_for(1_000);
    assert!(sim.hops.is_empty());
    assert_eq!(sim.asm.stats().connections, 0);
}
