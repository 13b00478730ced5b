//! State stays bounded: caps, idle eviction, shutdown flush.

use crate::hops::HopConfig;

use super::fixtures::*;

fn client(i: u32) -> End {
    End::tcp(1000 + i, "load", ("10.0.0.1", 20000 + i), ("10.0.0.2", 80))
}

#[test]
fn the_connection_cap_evicts_the_oldest_and_counts_them() {
    let cfg = HopConfig {
        max_connections: 100,
        ..HopConfig::default()
    };
    let mut sim = Sim::with(cfg);
    for i in 0..1_000 {
        // Requests never answered: nothing completes on its own.
        sim.feed("n", client(i).send(T0 + u64::from(i), b"x"));
        assert!(sim.asm.stats().connections <= 100);
    }
    let stats = sim.asm.stats();
    assert_eq!(stats.evicted_cap, 900);
    // Evicted connections still report what they saw.
    assert_eq!(sim.hops.len(), 900);
    assert!(sim
        .hops
        .iter()
        .all(|h| h.request == b"x" && !end(h, false).observed));
}

#[test]
fn idle_connections_are_evicted() {
    let mut sim = Sim::new();
    for i in 0..10 {
        // Connected, never used, never closed.
        sim.feed("n", client(i).connect(T0));
    }
    assert_eq!(sim.asm.stats().connections, 10);
    sim.run_for(299_000);
    assert_eq!(sim.asm.stats().connections, 10);
    sim.run_for(2_000);
    let stats = sim.asm.stats();
    assert_eq!(stats.connections, 0);
    assert_eq!(stats.evicted_idle, 10);
    assert!(
        sim.hops.is_empty(),
        "no data and no close: nothing to report"
    );
}

#[test]
fn flush_emits_what_is_pending_and_forgets_everything() {
    let mut sim = Sim::new();
    let (c, s) = http_pair();
    sim.feed_all(CLIENT_NODE, client_exchange(&c, T0, REQ, RESP));
    sim.feed_all(SERVER_NODE, server_exchange(&s, T0, REQ, RESP));
    let mut out = Vec::new();
    sim.asm.flush(sim.now, &mut out);
    assert_eq!(out.len(), 1);
    assert!(end(&out[0], true).observed && end(&out[0], false).observed);
    assert_eq!(sim.asm.stats().connections, 0);
}
