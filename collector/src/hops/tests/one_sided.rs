//! Only one end traced: the other end is reported unobserved.

use super::fixtures::*;

#[test]
fn server_only_exchange_waits_then_reports_an_unobserved_client() {
    let mut sim = Sim::new();
    let (_, s) = http_pair();
    sim.feed(SERVER_NODE, s.accept(T0));
    sim.feed_all(SERVER_NODE, server_exchange(&s, T0, REQ, RESP));
    sim.run_for(500);
    assert!(
        sim.hops.is_empty(),
        "quiet (100 ms) + waiting for the client (500 ms)"
    );
    sim.run_for(150);
    let hops = sim.take_hops();
    assert_eq!(hops.len(), 1);
    let hop = &hops[0];
    let (client, server) = (end(hop, true), end(hop, false));
    assert!(!client.observed);
    assert_eq!(
        (client.addr.as_str(), client.port),
        ("192.168.56.20", 54321)
    );
    assert_eq!((client.node.as_str(), client.pid), ("", 0));
    assert!(server.observed);
    assert_eq!(server.pid, 777);
    // Without the client, the server's receive starts the hop: when it
    // returned with the request, not when it started waiting.
    assert_eq!(hop.start_unix_ns, T0 + MS + 10_000);
    assert_eq!(hop.duration_ns, MS / 2);
    assert_eq!(hop.summary, "GET /healthz → 200");
    assert_eq!(hop.request, REQ, "the request as the server received it");
    assert!(hop.events.iter().all(|r| r.node == SERVER_NODE));
}

#[test]
fn once_the_peer_is_known_absent_later_exchanges_do_not_wait_again() {
    let mut sim = Sim::new();
    let (_, s) = http_pair();
    sim.feed_all(SERVER_NODE, server_exchange(&s, T0, REQ, RESP));
    sim.run_for(700);
    assert_eq!(sim.take_hops().len(), 1);
    sim.feed_all(SERVER_NODE, server_exchange(&s, T0 + 700 * MS, REQ, RESP));
    sim.run_for(150);
    assert_eq!(sim.take_hops().len(), 1, "only the quiet period");
}

#[test]
fn client_only_exchange_reports_an_unobserved_server() {
    let mut sim = Sim::new();
    let (c, _) = http_pair();
    sim.feed(CLIENT_NODE, c.connect(T0));
    sim.feed_all(CLIENT_NODE, client_exchange(&c, T0 + MS, REQ, RESP));
    sim.feed(CLIENT_NODE, c.close(T0 + 4 * MS));
    sim.run_for(450);
    assert!(sim.hops.is_empty());
    sim.run_for(100);
    let hops = sim.take_hops();
    assert_eq!(hops.len(), 1);
    let server = end(&hops[0], false);
    assert!(!server.observed);
    assert_eq!((server.addr.as_str(), server.port), ("192.168.56.10", 8080));
    assert_eq!(hops[0].events.len(), 4, "connect, send, recv, close");
}

#[test]
fn a_side_later_than_the_wait_does_not_make_a_second_hop() {
    let mut sim = Sim::new();
    let (c, s) = http_pair();
    sim.feed_all(CLIENT_NODE, client_exchange(&c, T0, REQ, RESP));
    sim.run_for(700);
    let first = sim.take_hops();
    assert_eq!(first.len(), 1);
    assert!(!end(&first[0], false).observed);
    // The server's agent was a second late.
    sim.feed_all(SERVER_NODE, server_exchange(&s, T0, REQ, RESP));
    sim.run_for(1_000);
    assert!(sim.hops.is_empty(), "{:#?}", sim.hops);
}
