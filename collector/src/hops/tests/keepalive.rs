//! Several requests on one connection, and flows.

use super::fixtures::*;

#[test]
fn keep_alive_requests_pair_in_order() {
    let mut sim = Sim::new();
    let (c, s) = http_pair();
    let paths = ["/a", "/b", "/c"];
    for (i, p) in paths.iter().enumerate() {
        let ts = T0 + i as u64 * 10 * MS;
        let req = format!("GET {p} HTTP/1.1\r\n\r\n");
        let resp = format!("HTTP/1.1 200 OK\r\n\r\n{p}");
        sim.feed_all(
            CLIENT_NODE,
            client_exchange(&c, ts, req.as_bytes(), resp.as_bytes()),
        );
        sim.feed_all(
            SERVER_NODE,
            server_exchange(&s, ts, req.as_bytes(), resp.as_bytes()),
        );
    }
    // The next request completes the previous exchange on both sides.
    assert_eq!(
        sim.hops.len(),
        2,
        "exchanges 0 and 1 are over, 2 waits for quiet"
    );
    sim.run_for(150);
    let hops = sim.take_hops();
    let summaries: Vec<&str> = hops.iter().map(|h| h.summary.as_str()).collect();
    // The responses have no length (their bodies end at the close), so the
    // decoder cannot tell their end: the request line is what is known.
    assert_eq!(summaries, ["GET /a", "GET /b", "GET /c"]);
    assert!(hops.iter().all(|h| h.app_protocol == "http1"));
    for (i, hop) in hops.iter().enumerate() {
        assert_eq!(hop.start_unix_ns, T0 + i as u64 * 10 * MS);
        assert!(hop.response.ends_with(paths[i].as_bytes()));
        assert_eq!(hop.events.len(), 4, "two events per side");
    }
    assert!(
        hops.iter().all(|h| h.flow_id == hops[0].flow_id),
        "one client, no pause: one flow"
    );
    assert_ne!(hops[0].id, hops[1].id);
}

#[test]
fn a_request_split_over_several_sends_is_one_request() {
    let mut sim = Sim::new();
    let (c, s) = http_pair();
    sim.feed(CLIENT_NODE, c.send(T0, b"POST /x HTTP/1.1\r\n"));
    sim.feed(CLIENT_NODE, c.send(T0 + 1, b"\r\nbody"));
    sim.feed(CLIENT_NODE, c.recv(T0 + MS, b"HTTP/1.1 201 "));
    sim.feed(CLIENT_NODE, c.recv(T0 + MS + 1, b"Created\r\n\r\n"));
    sim.feed(SERVER_NODE, s.recv(T0, b"POST /x HTTP/1.1\r\n\r\nbody"));
    sim.feed(
        SERVER_NODE,
        s.send(T0 + MS, b"HTTP/1.1 201 Created\r\n\r\n"),
    );
    sim.run_for(150);
    let hops = sim.take_hops();
    assert_eq!(hops.len(), 1);
    assert_eq!(hops[0].request, b"POST /x HTTP/1.1\r\n\r\nbody");
    assert_eq!(hops[0].request_bytes, 24);
    assert_eq!(hops[0].response, b"HTTP/1.1 201 Created\r\n\r\n");
}

#[test]
fn a_slow_server_does_not_split_the_exchange() {
    let mut sim = Sim::new();
    let (c, s) = http_pair();
    sim.feed(CLIENT_NODE, c.send(T0, REQ));
    sim.feed(SERVER_NODE, s.recv(T0, REQ));
    sim.run_for(800);
    assert!(sim.hops.is_empty(), "a request waits for its response");
    sim.feed(SERVER_NODE, s.send(T0 + 800 * MS, RESP));
    sim.feed(CLIENT_NODE, c.recv(T0 + 801 * MS, RESP));
    sim.run_for(150);
    let hops = sim.take_hops();
    assert_eq!(hops.len(), 1);
    assert_eq!(hops[0].response, RESP);
    assert_eq!(hops[0].duration_ns, 801 * MS + 10_000);
}

#[test]
fn tls_plaintext_replaces_the_encrypted_bytes() {
    let mut sim = Sim::new();
    let (c, s) = http_pair();
    let tls = |ev: ktrail_proto::v1::Event, name: &str| {
        let mut ev = ev;
        if let Some(ktrail_proto::v1::event::Body::Syscall(sc)) = &mut ev.body {
            sc.name = name.into();
        }
        ev
    };
    // Go's crypto/tls: plaintext through the uprobe, then the record via write().
    sim.feed(CLIENT_NODE, tls(c.send(T0, REQ), "tls_write"));
    sim.feed(CLIENT_NODE, c.send(T0 + 1, b"\x17\x03\x03encrypted"));
    sim.feed(CLIENT_NODE, c.recv(T0 + MS, b"\x17\x03\x03encrypted-reply"));
    sim.feed(CLIENT_NODE, tls(c.recv(T0 + MS + 1, RESP), "tls_read"));
    sim.feed_all(
        SERVER_NODE,
        server_exchange(
            &s,
            T0,
            b"\x17\x03\x03encrypted",
            b"\x17\x03\x03encrypted-reply",
        ),
    );
    sim.run_for(150);
    let hops = sim.take_hops();
    assert_eq!(hops.len(), 1);
    assert_eq!(hops[0].request, REQ);
    assert_eq!(hops[0].summary, "GET /healthz → 200");
    assert_eq!(hops[0].request_bytes, REQ.len() as u64);
    assert_eq!(hops[0].response, RESP, "the plaintext end is preferred");
}
