//! The two agents' events arrive in any order relative to each other.

use ktrail_proto::v1::Event;

use super::fixtures::*;

fn both_sides() -> (Vec<Event>, Vec<Event>) {
    let (c, s) = http_pair();
    let mut client = vec![c.connect(T0)];
    client.extend(client_exchange(&c, T0 + MS, REQ, RESP));
    let mut server = vec![s.accept(T0)];
    server.extend(server_exchange(&s, T0 + MS, REQ, RESP));
    (client, server)
}

fn check(hops: &[ktrail_proto::v1::Hop]) {
    assert_eq!(hops.len(), 1, "{hops:#?}");
    let hop = &hops[0];
    assert_eq!(end(hop, true).pid, 4242);
    assert_eq!(end(hop, false).pid, 777);
    assert!(end(hop, true).observed && end(hop, false).observed);
    assert_eq!(hop.start_unix_ns, T0 + MS);
    assert_eq!(hop.events.len(), 6);
}

#[test]
fn server_events_first() {
    let (client, server) = both_sides();
    let mut sim = Sim::new();
    sim.feed_all(SERVER_NODE, server);
    sim.feed_all(CLIENT_NODE, client);
    sim.run_for(200);
    check(&sim.take_hops());
}

#[test]
fn events_interleaved_one_by_one_server_leading() {
    let (client, server) = both_sides();
    let mut sim = Sim::new();
    for (c, s) in client.into_iter().zip(server) {
        sim.feed(SERVER_NODE, s);
        sim.feed(CLIENT_NODE, c);
    }
    sim.run_for(200);
    check(&sim.take_hops());
}

#[test]
fn server_a_batch_later_but_within_the_wait() {
    let (client, server) = both_sides();
    let mut sim = Sim::new();
    sim.feed_all(CLIENT_NODE, client);
    sim.run_for(400);
    assert!(sim.hops.is_empty());
    sim.feed_all(SERVER_NODE, server);
    sim.run_for(200);
    check(&sim.take_hops());
}

#[test]
fn without_connect_or_accept_the_first_sender_is_the_client() {
    let (c, s) = http_pair();
    for server_first in [false, true] {
        let mut sim = Sim::new();
        let client = client_exchange(&c, T0, REQ, RESP);
        let server = server_exchange(&s, T0, REQ, RESP);
        if server_first {
            sim.feed_all(SERVER_NODE, server);
            sim.feed_all(CLIENT_NODE, client);
        } else {
            sim.feed_all(CLIENT_NODE, client);
            sim.feed_all(SERVER_NODE, server);
        }
        sim.run_for(200);
        let hops = sim.take_hops();
        assert_eq!(hops.len(), 1);
        assert_eq!(end(&hops[0], true).pid, 4242, "server_first={server_first}");
    }
}
