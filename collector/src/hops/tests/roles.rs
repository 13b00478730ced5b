//! Roles from connect/accept and TCP states, over data direction.

use super::fixtures::*;

#[test]
fn a_server_speaking_first_is_still_the_server() {
    // MySQL-style: the server greets, then the client asks.
    let mut sim = Sim::new();
    let (c, s) = http_pair();
    sim.feed(CLIENT_NODE, c.connect(T0));
    sim.feed(SERVER_NODE, s.accept(T0));
    sim.feed(SERVER_NODE, s.send(T0 + MS, b"greeting"));
    sim.feed(CLIENT_NODE, c.recv(T0 + MS, b"greeting"));
    sim.feed(CLIENT_NODE, c.send(T0 + 2 * MS, b"QUERY 1"));
    sim.feed(SERVER_NODE, s.recv(T0 + 2 * MS, b"QUERY 1"));
    sim.feed(SERVER_NODE, s.send(T0 + 3 * MS, b"ROWS"));
    sim.feed(CLIENT_NODE, c.recv(T0 + 3 * MS, b"ROWS"));
    sim.run_for(200);
    let hops = sim.take_hops();
    assert_eq!(hops.len(), 2, "{hops:#?}");
    for hop in &hops {
        assert_eq!(end(hop, true).pid, 4242);
        assert_eq!(end(hop, false).pid, 777);
    }
    assert_eq!(hops[0].request_bytes, 0);
    assert_eq!(hops[0].response, b"greeting");
    assert_eq!(hops[1].summary, "QUERY 1");
    assert_eq!(hops[1].response, b"ROWS");
}

#[test]
fn tcp_state_changes_tell_roles_when_syscalls_do_not() {
    // Server greets first and no connect/accept was traced: only TCP states
    // (seen by the server's agent) tell who is who.
    let mut sim = Sim::new();
    let (c, s) = http_pair();
    sim.feed(
        SERVER_NODE,
        s.tcp_state(T0, "TCP_SYN_RECV", "TCP_ESTABLISHED"),
    );
    sim.feed(SERVER_NODE, s.send(T0 + MS, b"220 smtp ready\r\n"));
    sim.feed(CLIENT_NODE, c.recv(T0 + MS, b"220 smtp ready\r\n"));
    sim.run_for(200);
    let hops = sim.take_hops();
    assert_eq!(hops.len(), 1);
    assert_eq!(end(&hops[0], true).pid, 4242);
    assert_eq!(end(&hops[0], false).pid, 777);
    assert_eq!(
        hops[0].events.len(),
        3,
        "the TCP state change is behind the hop too"
    );
}

#[test]
fn tcp_close_closes_the_side() {
    let mut sim = Sim::new();
    let (c, s) = http_pair();
    sim.feed(CLIENT_NODE, c.connect(T0));
    sim.feed(SERVER_NODE, s.accept(T0));
    sim.feed(CLIENT_NODE, c.tcp_state(T0 + MS, "FIN_WAIT1", "CLOSE"));
    sim.feed(SERVER_NODE, s.tcp_state(T0 + MS, "LAST_ACK", "CLOSE"));
    let hops = sim.take_hops();
    assert_eq!(hops.len(), 1);
    assert_eq!(hops[0].kind, "connection");
}

#[test]
fn loopback_connections_on_different_nodes_do_not_pair() {
    let mut sim = Sim::new();
    let c = End::tcp(10, "cli", ("127.0.0.1", 40000), ("127.0.0.1", 5000));
    let s = End::tcp(20, "srv", ("127.0.0.1", 5000), ("127.0.0.1", 40000));
    sim.feed_all("n1", client_exchange(&c, T0, REQ, RESP));
    sim.feed_all("n2", server_exchange(&s, T0, REQ, RESP));
    sim.run_for(700);
    let hops = sim.take_hops();
    assert_eq!(hops.len(), 2);
    assert!(hops
        .iter()
        .all(|h| !end(h, true).observed || !end(h, false).observed));
}

#[test]
fn a_reused_four_tuple_is_a_new_connection() {
    let mut sim = Sim::new();
    let (c, s) = http_pair();
    for round in 0..2u64 {
        let ts = T0 + round * 100 * MS;
        sim.feed(CLIENT_NODE, c.connect(ts));
        sim.feed(SERVER_NODE, s.accept(ts));
        sim.feed_all(CLIENT_NODE, client_exchange(&c, ts + MS, REQ, RESP));
        sim.feed_all(SERVER_NODE, server_exchange(&s, ts + MS, REQ, RESP));
        sim.feed(CLIENT_NODE, c.close(ts + 5 * MS));
        sim.feed(SERVER_NODE, s.close(ts + 5 * MS));
    }
    let hops = sim.take_hops();
    assert_eq!(hops.len(), 2, "{hops:#?}");
    assert!(hops
        .iter()
        .all(|h| end(h, true).observed && end(h, false).observed));
    assert_eq!(hops[1].start_unix_ns, T0 + 101 * MS);
}

#[test]
fn a_listening_port_tells_the_server_when_its_bytes_come_first() {
    // Joined in its middle (no connect, accept or TCP state), TLS records that
    // tell nothing, the server's first: kube-apiserver's port 6443 against
    // the scheduler's ephemeral one says who is who.
    let mut sim = Sim::new();
    let (c, s) = scheduler_apiserver(6443);
    let record = [0x17, 0x03, 0x03, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef];
    for (i, (from, to)) in [(&s, &c), (&c, &s), (&s, &c)].into_iter().enumerate() {
        let ts = T0 + i as u64 * MS;
        sim.feed(SERVER_NODE, from.send(ts, &record));
        sim.feed(SERVER_NODE, to.recv(ts + MS / 10, &record));
    }
    sim.run_for(1_000);
    let hops = sim.take_hops();
    assert!(!hops.is_empty());
    for hop in &hops {
        assert_eq!(end(hop, true).comm, "kube-scheduler", "{hops:#?}");
        assert_eq!(end(hop, false).comm, "kube-apiserver", "{hops:#?}");
    }
}
